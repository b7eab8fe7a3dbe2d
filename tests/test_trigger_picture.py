"""The trigger confusion strip: an overview square per answer, the misses up close."""

from __future__ import annotations

import numpy as np
from matplotlib import image as mpimg

from ticketmark.ownership.trigger.picture import (
    _DOT,
    MATCH,
    MISS,
    _mosaic,
    _overview,
    _rgb,
    confusion_strip,
)


def _pixels_of(img: np.ndarray, color: str) -> int:
    return int((np.abs(img[..., :3] - _rgb(color)).max(axis=-1) < 0.02).sum())


def test_frames_count_matches_and_misses(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 1, 8, 8)).astype(np.float32)
    labels = np.array([1, 2, 3, 4, 5, 6, 7])
    predicted = np.array([1, 2, 0, 4, 0, 6, 0])  # three misses
    ok = labels == predicted
    path = confusion_strip(x, labels, predicted, tmp_path / "strip.png", "4/7 match")
    img = mpimg.imread(path)
    assert img.shape[1] > img.shape[0]  # one overview row and one row of misses
    # The overview holds one square per answer, 4 green and 3 red, exactly.
    top = _overview(ok, 400)
    assert _pixels_of(top, MATCH) == 4 * _DOT**2 and _pixels_of(top, MISS) == 3 * _DOT**2
    # Up close, only the misses: three red frames and no green one.
    canvas, *_ = _mosaic(x[~ok], ok[~ok], per_row=3, rows=1)
    assert _pixels_of(canvas, MATCH) == 0 and _pixels_of(canvas, MISS) > 0
    green, red = _pixels_of(img, MATCH), _pixels_of(img, MISS)
    assert green > 0 and red > green  # three framed misses outweigh four small squares


def test_many_misses_show_only_the_first_few_up_close(tmp_path):
    x = np.random.default_rng(2).random((100, 1, 8, 8))
    labels = np.zeros(100, dtype=int)
    few = confusion_strip(x, labels, np.where(np.arange(100) < 10, 1, 0),
                          tmp_path / "few.png", "90/100")
    many = confusion_strip(x, labels, np.where(np.arange(100) < 60, 1, 0),
                           tmp_path / "many.png", "40/100", max_shown=20)
    h_few, h_many = mpimg.imread(few).shape[0], mpimg.imread(many).shape[0]
    assert h_many > h_few  # two rows of misses against one...
    capped = confusion_strip(x, labels, np.ones(100, dtype=int), tmp_path / "all.png",
                             "0/100", max_shown=20)
    assert mpimg.imread(capped).shape[0] == h_many  # ...and never more than max_shown


def test_empty_and_colour_sets(tmp_path):
    assert confusion_strip(np.zeros((0, 1, 8, 8)), np.array([], dtype=int),
                           np.array([], dtype=int), tmp_path / "e.png", "none").exists()
    x = np.random.default_rng(1).random((45, 3, 32, 32))
    y = np.arange(45) % 10
    path = confusion_strip(x, y, y, tmp_path / "c.png", "45/45", per_row=20)
    img = mpimg.imread(path)
    # no red frame: the only red is the legend's small 'miss' patch
    assert 0 < _pixels_of(img, MISS) < 0.05 * _pixels_of(img, MATCH)
