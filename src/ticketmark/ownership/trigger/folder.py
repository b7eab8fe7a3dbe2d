"""The classic trigger set: a folder of abstract images plus ``labels.txt``.

Images are taken in file-name order, ``labels.txt`` holds one integer label per line in
the same order. Each image is resized to the model's input (bilinear), converted to its
channel count and mapped onto the model's input range like derived sets.

Its "secret" is the folder itself: the commitment hashes every file's bytes and the
labels, so a revealed folder must be byte-identical to the committed one. Unlike derived
sets, a person chose these labels, so nothing makes the null exactly ``1/classes``; use
null calibration on reference models when in doubt.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ticketmark.errors import TicketmarkError
from ticketmark.io.atomic import atomic_write_bytes, atomic_write_text
from ticketmark.ownership.trigger.generate import TriggerParams, TriggerSet

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".webp"}
LABELS_FILE = "labels.txt"


MAX_FILE_BYTES = 32 << 20  # one trigger image (or the labels file); a hostile one is larger
MAX_FILES = 100_000


def _own(folder: Path, path: Path) -> Path:
    """``path`` if it resolves (links followed) to a file inside ``folder``: a claimant's
    folder holding a link to the verifier's own files (or a huge file elsewhere) is refused."""
    try:
        target = path.resolve()
        inside = target.is_relative_to(folder.resolve()) and target.is_file()
    except (OSError, RuntimeError, ValueError):  # a link loop
        inside = False
    if not inside:
        raise TicketmarkError(f"trigger folder {folder}: {path.name} is a link to a file "
                              "outside the folder")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise TicketmarkError(f"{path} is {size} bytes, larger than any trigger image "
                              f"({MAX_FILE_BYTES} at most)")
    return path


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise TicketmarkError(f"trigger folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink()))
    if not files:
        raise TicketmarkError(f"trigger folder {folder} holds no images")
    if len(files) > MAX_FILES:
        raise TicketmarkError(f"trigger folder {folder} holds {len(files)} images")
    return [_own(folder, p) for p in files]


def read_labels(folder: Path, count: int) -> list[int]:
    path = folder / LABELS_FILE
    if not path.is_file():
        raise TicketmarkError(f"trigger folder {folder} has no {LABELS_FILE}")
    _own(folder, path)
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) != count:
        raise TicketmarkError(f"{path} has {len(lines)} labels for {count} images")
    try:
        return [int(ln) for ln in lines]
    except ValueError:
        raise TicketmarkError(f"{path}: every line must be one integer label") from None


def folder_hash(folder: str | Path) -> str:
    """SHA-256 over each image's name and bytes, in order, then the labels file."""
    folder = Path(folder)
    h = hashlib.sha256(b"ticketmark-trigger-folder/1\0")
    for path in _files(folder):
        h.update(path.name.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    labels = folder / LABELS_FILE
    if not labels.is_file():
        raise TicketmarkError(f"trigger folder {folder} has no {LABELS_FILE}")
    h.update(hashlib.sha256(_own(folder, labels).read_bytes()).digest())
    return h.hexdigest()


def load_folder(folder: str | Path, channels: int, height: int, width: int, classes: int,
                lo: float, hi: float) -> tuple[TriggerSet, TriggerParams]:
    """The folder's set, resized to the model's input; its params for the claim."""
    folder = Path(folder)
    files = _files(folder)
    labels = read_labels(folder, len(files))
    bad = [v for v in labels if not 0 <= v < classes]
    if bad:
        raise TicketmarkError(f"{folder / LABELS_FILE}: label {bad[0]} is not in 0..{classes - 1}")
    mode = "L" if channels == 1 else "RGB"
    if channels not in (1, 3):
        raise TicketmarkError(f"folder trigger sets need 1 or 3 input channels, not {channels}")
    arrays = []
    for path in files:  # one decode per file; the set is small (100 images classically)
        try:
            with warnings.catch_warnings():  # a decompression bomb is an error, not a warning
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    im = im.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
                    arrays.append(np.asarray(im, dtype=np.float32).reshape(height, width, -1))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombWarning,
                Image.DecompressionBombError) as exc:
            raise TicketmarkError(f"{path} is not a readable image "
                                  f"({' '.join(str(exc).split())[:160]})") from None
    pixels = np.stack(arrays).transpose(0, 3, 1, 2) / 255.0
    x = (lo + pixels * (hi - lo)).astype(np.float32)
    params = TriggerParams(len(files), channels, height, width, classes, lo, hi).validate()
    trig = TriggerSet(torch.from_numpy(np.ascontiguousarray(x)),
                      torch.tensor(labels, dtype=torch.long),
                      torch.ones(len(files), dtype=torch.bool))
    return trig, params


def write_folder(trig: TriggerSet, folder: str | Path, lo: float, hi: float) -> Path:
    """Export a set as PNGs + labels.txt (8-bit, so a round trip is close, not exact)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = ((trig.x.numpy() - lo) / (hi - lo)).clip(0, 1)
    data = np.round(pixels * 255).astype(np.uint8)
    digits = len(str(len(trig)))
    for i, img in enumerate(data):
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        atomic_write_bytes(folder / f"trigger_{i:0{digits}d}.png", buf.getvalue())
    atomic_write_text(folder / LABELS_FILE, "".join(f"{int(v)}\n" for v in trig.y))
    return folder
