"""Datasets read from a local folder in their standard on-disk formats (never downloaded)."""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from ticketmark.data.registry import register
from ticketmark.errors import TicketmarkError

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".webp"}


def _need_dir(path: Path | None, name: str, expected: str) -> Path:
    if path is None:
        raise TicketmarkError(f"dataset {name!r} needs --data-dir: a folder with {expected}")
    if not path.is_dir():
        raise TicketmarkError(f"data dir {path} does not exist (expected {expected})")
    return path


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles; allow only the numpy classes they need, nothing callable."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = _ArrayOnlyUnpickler(fh, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as exc:
        raise TicketmarkError(f"{path} is not a CIFAR python batch: {exc}") from None
    return data, labels


def _cifar(path: Path | None, name: str, train_files: list[str], test_file: str,
           label_key: bytes, classes: int):
    expected = f"the python-pickle batches ({', '.join(train_files)}, {test_file})"
    root = _need_dir(path, name, expected)
    for sub in ("cifar-10-batches-py", "cifar-100-python"):
        if (root / sub).is_dir():
            root = root / sub
    missing = [f for f in [*train_files, test_file] if not (root / f).is_file()]
    if missing:
        raise TicketmarkError(f"{root} lacks {', '.join(missing)} (expected {expected})")
    parts = [_read_cifar_batch(root / f, label_key) for f in train_files]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts])).float() / 255.0
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    xt, yt = _read_cifar_batch(root / test_file, label_key)
    return x, y, torch.from_numpy(xt).float() / 255.0, torch.from_numpy(yt), classes, True


@register("cifar10")
def load_cifar10(path: Path | None):
    files = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar(path, "cifar10", files, "test_batch", b"labels", 10)


@register("cifar100")
def load_cifar100(path: Path | None):
    return _cifar(path, "cifar100", ["train"], "test", b"fine_labels", 100)


def _read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise TicketmarkError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise TicketmarkError(f"{path} is truncated: header says {tuple(dims)}")
    return body.reshape(tuple(dims))


def _find_idx(root: Path, stem: str) -> Path:
    dotted = stem.replace("-idx", ".idx")
    for cand in (stem, dotted, stem + ".gz", dotted + ".gz"):
        if (root / cand).is_file():
            return root / cand
    raise TicketmarkError(f"{root} lacks {stem}[.gz] (expected the four MNIST IDX files)")


def _idx_dataset(path: Path | None, name: str):
    root = _need_dir(path, name, "train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                 "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz)")
    x = _read_idx(_find_idx(root, "train-images-idx3-ubyte"))
    y = _read_idx(_find_idx(root, "train-labels-idx1-ubyte"))
    xt = _read_idx(_find_idx(root, "t10k-images-idx3-ubyte"))
    yt = _read_idx(_find_idx(root, "t10k-labels-idx1-ubyte"))
    if x.shape[0] != y.shape[0] or xt.shape[0] != yt.shape[0]:
        raise TicketmarkError(f"{root}: image and label counts differ")

    def as_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    return (as_tensor(x), torch.from_numpy(y.astype(np.int64)), as_tensor(xt),
            torch.from_numpy(yt.astype(np.int64)), 10, False)


@register("mnist")
def load_mnist(path: Path | None):
    return _idx_dataset(path, "mnist")


@register("fashion-mnist")
def load_fashion_mnist(path: Path | None):
    return _idx_dataset(path, "fashion-mnist")


def _read_class_tree(root: Path, classes: list[str] | None = None):
    from PIL import Image, UnidentifiedImageError

    classes = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise TicketmarkError(f"{root} has no class folders (expected ROOT/<class>/<image>)")
    images, labels, size = [], [], None
    for label, cls in enumerate(classes):
        files = sorted(f for f in (root / cls).glob("*") if f.suffix.lower() in _IMAGE_SUFFIXES)
        for f in files:
            try:
                img = Image.open(io.BytesIO(f.read_bytes())).convert("RGB")
            except (UnidentifiedImageError, OSError):
                raise TicketmarkError(f"{f} is not a readable image") from None
            size = size or img.size
            if img.size != size:
                img = img.resize(size, Image.BILINEAR)
            images.append(np.asarray(img, dtype=np.uint8))
            labels.append(label)
    if not images:
        raise TicketmarkError(f"{root} has class folders but no images")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.tensor(labels, dtype=torch.long), classes


@register("imagefolder")
def load_imagefolder(path: Path | None):
    """ROOT/<class>/*.png, or ROOT/train/<class>/... with ROOT/test/<class>/..."""
    root = _need_dir(path, "imagefolder", "one sub-folder of images per class")
    if (root / "train").is_dir() and (root / "test").is_dir():
        x, y, classes = _read_class_tree(root / "train")
        xt, yt, _ = _read_class_tree(root / "test", classes)
        if xt.shape[1:] != x.shape[1:]:
            xt = torch.nn.functional.interpolate(xt, size=x.shape[2:], mode="bilinear")
        return x, y, xt, yt, len(classes), False
    x, y, classes = _read_class_tree(root)
    return x, y, None, None, len(classes), False
