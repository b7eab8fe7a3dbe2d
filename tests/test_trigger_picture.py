"""The trigger confusion strip: one image, frames coloured by match or miss."""

from __future__ import annotations

import numpy as np
from matplotlib import image as mpimg

from ticketmark.ownership.trigger.picture import MATCH, MISS, _mosaic, _rgb, confusion_strip


def _pixels_of(img: np.ndarray, color: str) -> int:
    return int((np.abs(img[..., :3] - _rgb(color)).max(axis=-1) < 0.02).sum())


def test_frames_count_matches_and_misses(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 1, 8, 8)).astype(np.float32)
    labels = np.array([1, 2, 3, 4, 5, 6, 7])
    predicted = np.array([1, 2, 0, 4, 0, 6, 0])  # three misses
    path = confusion_strip(x, labels, predicted, tmp_path / "strip.png", "4/7 match")
    img = mpimg.imread(path)
    assert img.shape[1] > img.shape[0]  # one row of seven tiles, wider than tall
    # In the mosaic itself, frame pixels split exactly 4 : 3 (legend patches come on top
    # in the saved picture, so there the split is only approximate).
    canvas, *_ = _mosaic(x, labels == predicted, per_row=7, rows=1)
    assert _pixels_of(canvas, MATCH) * 3 == _pixels_of(canvas, MISS) * 4
    green, red = _pixels_of(img, MATCH), _pixels_of(img, MISS)
    assert red > 0 and 1.0 < green / red < 1.8


def test_empty_and_colour_sets(tmp_path):
    assert confusion_strip(np.zeros((0, 1, 8, 8)), np.array([], dtype=int),
                           np.array([], dtype=int), tmp_path / "e.png", "none").exists()
    x = np.random.default_rng(1).random((45, 3, 32, 32))
    y = np.arange(45) % 10
    path = confusion_strip(x, y, y, tmp_path / "c.png", "45/45", per_row=20)
    img = mpimg.imread(path)
    # no red frame: the only red is the legend's small 'miss' patch
    assert 0 < _pixels_of(img, MISS) < 0.05 * _pixels_of(img, MATCH)
