"""The report and the demo's table, as a reader meets them (fast: no training).

The rendered page itself is checked in headless Chromium by the slow
``tests/test_demo.py::test_report_renders_in_headless_chromium``.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
from PIL import Image
from rich.console import Console

from ticketmark.ownership.trigger.picture import confusion_strip
from ticketmark.report.page import render_report


def test_figures_are_not_capped_and_open_at_full_size(tmp_path):
    Image.new("RGB", (1300, 400), "white").save(tmp_path / "wide.png")
    (tmp_path / "report.json").write_text(json.dumps({
        "title": "t", "sections": [{
            "title": "s", "table": [{"a": 1.0}], "notes": ["how to read the table"],
            "images": [{"path": "wide.png", "caption": "Copy 'x': a wide figure"}]}]}))
    html_path, md_path = render_report(tmp_path)
    page = html_path.read_text()
    assert "520px" not in page
    assert re.search(r"figure img\{[^}]*max-width:100%", page)  # fits the page width...
    assert "classList.toggle('zoom')" in page and "img.zoom{max-width:none" in page  # ...or not
    assert "<p class='note'>how to read the table</p>" in page
    assert '<td class="num">1.00</td>' in page and "td.num{white-space:nowrap}" in page
    assert "how to read the table" in md_path.read_text()


def test_trigger_strip_is_legible_at_natural_size_and_short(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 100)
    answers = np.where(rng.random(100) < 0.5, labels, (labels + 1) % 10)
    path = confusion_strip(rng.random((100, 1, 8, 8)), labels, answers, tmp_path / "s.png",
                           "50/100 triggers match")
    width, height = Image.open(path).size
    # misses up close 10 a row at >= 90 px each (their 10 pt a→b labels ~15 px tall), but
    # only the first 20 of them: the 100-cell grid (over 1,200 px tall) is gone
    assert width >= 900 and height < 700, (width, height)
    from ticketmark.ownership.trigger.picture import LEGEND

    assert "a→b" in LEGEND and "suspect's answer" in LEGEND


def test_demo_table_keeps_p_values_whole_when_redirected(monkeypatch):
    from ticketmark.demo import story

    buf = io.StringIO()
    monkeypatch.setattr(story, "console", Console(file=buf, width=80, force_terminal=False))
    row = {"attack": "fine-tune (thief data)", "strength": "3 ep", "accuracy": 96.3,
           "signature": "NOT OWNED", "signature p": 3.2e-106, "trigger": "OWNED",
           "trigger p": 1.0e-70, "lock": "locked (0% of key present)"}
    story._print_table([row] * 3, [{"forgery": "f", "outcome": "rejected / owner wins",
                                    "why": "w"}])
    lines = buf.getvalue().splitlines()
    rows = [ln for ln in lines if "3.2e-106" in ln]
    assert len(rows) == 3 and all("1.0e-70" in ln for ln in rows), buf.getvalue()
    assert all("fine-tune (thief data)" in ln for ln in rows)  # nothing folded either


def test_demo_table_in_a_narrow_terminal_still_keeps_p_values_whole(monkeypatch):
    from ticketmark.demo import story

    buf = io.StringIO()
    monkeypatch.setattr(story, "console", Console(file=buf, width=70, force_terminal=True,
                                                  color_system=None))
    row = {"attack": "prune", "strength": "70%", "accuracy": 58.2, "signature": "NOT OWNED",
           "signature p": 1.5e-7, "trigger": "OWNED", "trigger p": 2.2e-119,
           "lock": "locked (0% of key present)"}
    story._print_table([row], [])
    text = buf.getvalue()
    assert "1.5e-07" in text and "2.2e-119" in text, text


def _finished_demo(out):
    """A finished demo's files as ``write_report_json`` reads them (no training)."""
    from dataclasses import asdict

    from ticketmark.demo.story import DemoSettings, attack_plan, stolen_name

    s = DemoSettings.for_mode(True)
    (out / "find").mkdir(parents=True)
    (out / "find" / "summary.json").write_text(json.dumps({"rounds": [
        {"round": 0, "sparsity": 0.0, "test_acc": 96.0},
        {"round": 1, "sparsity": 0.5, "test_acc": 95.5}]}))
    for name in ("accuracy_vs_sparsity", "layer_density"):
        Image.new("RGB", (400, 300), "white").save(out / "find" / f"{name}.png")
    rows = []
    for label, strength, kind, _ in attack_plan(s):
        folder = out / "verify" / stolen_name(kind, strength)
        folder.mkdir(parents=True)
        Image.new("RGB", (900, 1200), "white").save(folder / "signature.png")
        Image.new("RGB", (990, 600), "white").save(folder / "trigger_confusion.png")
        rows.append({"attack": label, "strength": strength, "accuracy": 95.0,
                     "signature": "OWNED", "signature p": 1e-40, "trigger": "OWNED",
                     "trigger p": 1e-12, "lock": "locked (0% of key present)"})
    sig = {"qr_version": 1, "tag": "abc", "layer": "layer2.0.conv1.weight", "row": 0,
           "col": 0, "orientation": 0, "modules_changed": 100, "modules": 441}
    return {"settings": asdict(s), "ticket": {"sparsity": 0.75, "test_acc": 96.0},
            "owner": {"test_acc": 95.5, "trigger_acc": 100.0, "signature": sig},
            "lock": {"key_weights": 1000, "locked_as_is_acc": 40.0},
            "robustness": rows,
            "forgeries": [{"forgery": "f", "outcome": "rejected / owner wins", "why": "w"}]}


def test_demo_report_puts_the_verdicts_right_under_the_summary(tmp_path):
    from ticketmark.demo.report import write_report_json

    write_report_json(tmp_path, _finished_demo(tmp_path))
    html_path, _ = render_report(tmp_path)
    page = html_path.read_text()
    verdict = page.index("<p class='verdict'>")
    first_table, first_image = page.index("<table>"), page.index("<img")
    # the summary, then the verdict table, before any picture or other table
    assert verdict < first_table < first_image
    assert "stolen as released" in page[first_table:page.index("</table>", first_table)]
    assert page.index("False claims and forgeries") < first_image
    # each p in the table is named by the test it comes from, before the table
    caption = page[verdict:first_table]
    assert "signature p = " in caption and "trigger p = " in caption
    assert "match test" in caption and "rank test" in caption
