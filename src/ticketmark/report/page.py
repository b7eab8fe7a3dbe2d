"""One self-contained HTML page (images inlined as base64 PNG) and the same as Markdown.

The page is rendered from ``RUN/report.json``: a title, a verdict line and a list of
sections, each with optional text, a table (list of row dicts), notes on reading the table
and images (paths relative to the run directory). Whoever runs the story (the demo, a
script) writes that JSON; this module only renders it, so a report can be rebuilt from a
finished run at any time. The JSON is not trusted: images must be PNG files inside the
run folder (``_image_file``).
"""

from __future__ import annotations

import base64
import contextlib
import html
import math
from pathlib import Path
from typing import Any

from ticketmark.errors import TicketmarkError
from ticketmark.io.atomic import atomic_write_group
from ticketmark.io.untrusted import check_list_of_dicts, check_str, read_bytes_limited, read_json

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1400px;
color:#1d2430;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;border-bottom:1px solid #dde;padding-bottom:.2rem;
margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}
th,td{border:1px solid #ccd;padding:.25rem .5rem;text-align:left}
th{background:#f0f2f7}
td.OWNED{background:#dff3e3}td.NOT-OWNED{background:#fbe3e3}
td.COULD-NOT-VERIFY{background:#fff2cc}
figure{display:block;margin:.8rem 0 1.2rem;overflow-x:auto}
figure img{display:block;max-width:100%;height:auto;border:1px solid #eee;cursor:zoom-in}
figure img.zoom{max-width:none;cursor:zoom-out}
figcaption{font-size:.85rem;color:#445;max-width:75rem;margin-top:.3rem}
figcaption::after{content:" (click the picture for its full size)";color:#889}
td{font-variant-numeric:tabular-nums}td.num{white-space:nowrap}
.note{font-size:.85rem;color:#445;background:#f7f8fb;padding:.5rem .8rem;max-width:75rem}
.verdict{font-size:1.05rem;padding:.6rem .8rem;background:#eef4ff;border-left:4px solid #3b7dd8}
"""


# Figures fit the page width; a click shows one at its natural size (scroll sideways).
_ZOOM_SCRIPT = ("<script>document.querySelectorAll('figure img').forEach(function(i){"
                "i.addEventListener('click',function(){i.classList.toggle('zoom')})})"
                "</script>")


def fmt(value: Any) -> str:
    """Numbers as people read them: p-values in scientific notation, accuracies to 0.01."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.2e}"
        return f"{value:.2f}"
    if value is None:
        return "—"
    return str(value)


def _cell_class(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "num"  # never broken across lines: 3.2e-10 above 6 would read as 3.2e-10
    text = str(value)
    return text.replace(" ", "-") if text in {"OWNED", "NOT OWNED", "COULD NOT VERIFY"} else ""


def _html_table(rows: list[dict[str, Any]]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="{_cell_class(r.get(c))}">{html.escape(fmt(r.get(c)))}</td>'
            for c in cols) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(rows: list[dict[str, Any]]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)).replace("|", "/") for c in cols) + " |"
              for r in rows]
    return "\n".join(lines)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_BYTES = 32 * 1024 * 1024
MAX_REPORT_BYTES = 16 * 1024 * 1024


def _image_file(run: Path, rel: str) -> Path | None:
    """The PNG ``rel`` names inside ``run``, or None if missing; anything else is refused.

    ``report.json`` may come from someone else (a dispute, a shared run folder): a path
    that leaves the folder (``../``, an absolute path, a symlink pointing out) or a file
    that is not a PNG would otherwise be inlined into a page meant to be mailed around.
    """
    try:
        root, path = run.resolve(), (run / rel).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, symlink loops
        raise TicketmarkError(f"{run}/report.json: bad image path {rel[:200]!r} ({exc})") from None
    if not path.is_relative_to(root):
        raise TicketmarkError(f"{run}/report.json names an image outside the run folder "
                              f"({rel[:200]!r}); a report embeds only the run's own pictures")
    if not path.exists():
        return None
    if not path.is_file():
        raise TicketmarkError(f"{run}/report.json: image {rel[:200]!r} is not a file")
    return path


def _img_tag(run: Path, image: dict[str, str]) -> str:
    path = _image_file(run, image["path"])
    if path is None:
        return f"<p><em>missing image {html.escape(image['path'])}</em></p>"
    data = read_bytes_limited(path, MAX_IMAGE_BYTES, "report image")
    if not data.startswith(PNG_MAGIC):
        raise TicketmarkError(f"{run}/report.json: image {image['path'][:200]!r} is not a PNG "
                              "file; a report embeds only PNG pictures")
    cap = html.escape(image.get("caption", ""))
    return (f'<figure><img alt="{cap}" src="data:image/png;base64,'
            f'{base64.b64encode(data).decode()}"><figcaption>{cap}</figcaption></figure>')


def _check_report(report: Any, path: Path) -> dict[str, Any]:
    """The structure ``render_report`` walks, checked up front: one line for any defect."""
    src = str(path)
    if not isinstance(report, dict):
        raise TicketmarkError(f"{path} is not a report (not a JSON object)")
    for key in ("title", "verdict"):
        if report.get(key) is not None:
            check_str(report[key], key, src)
    sections = report.get("sections", [])
    check_list_of_dicts(sections, "sections", src)
    for i, section in enumerate(sections):
        check_str(section.get("title"), f"sections[{i}].title", src)
        if section.get("text") is not None:
            check_str(section["text"], f"sections[{i}].text", src)
        if section.get("table") is not None:
            check_list_of_dicts(section["table"], f"sections[{i}].table", src)
        images = section.get("images", [])
        check_list_of_dicts(images, f"sections[{i}].images", src)
        for j, image in enumerate(images):
            check_str(image.get("path"), f"sections[{i}].images[{j}].path", src, 4096)
            if "caption" in image:
                check_str(image["caption"], f"sections[{i}].images[{j}].caption", src)
    return report


def load_report(run: str | Path) -> dict[str, Any]:
    path = Path(run) / "report.json"
    if not path.is_file():
        raise TicketmarkError(f"{run} has no report.json (run 'ticketmark demo' first)")
    return _check_report(read_json(path, "report", MAX_REPORT_BYTES), path)


def render_report(run: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` (default: into the run directory)."""
    run = Path(run)
    report = load_report(run)
    out_dir = Path(out) if out else run
    title = html.escape(report.get("title") or "ticketmark report")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
             f"<style>{_CSS}</style></head><body><h1>{title}</h1>"]
    md = [f"# {report.get('title') or 'ticketmark report'}", ""]
    if report.get("verdict"):
        parts.append(f"<p class='verdict'>{html.escape(report['verdict'])}</p>")
        md += [f"> {report['verdict']}", ""]
    for section in report.get("sections", []):
        parts.append(f"<h2>{html.escape(section['title'])}</h2>")
        md += [f"## {section['title']}", ""]
        if section.get("text"):
            parts.append(f"<p>{html.escape(section['text'])}</p>")
            md += [section["text"], ""]
        if section.get("table"):
            parts.append(_html_table(section["table"]))
            md += [_md_table(section["table"]), ""]
        for note in section.get("notes", []):  # how to read the table, under it
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
            md += [note, ""]
        for image in section.get("images", []):
            parts.append(_img_tag(run, image))
            rel = (run / image["path"]).resolve()
            with contextlib.suppress(ValueError):
                rel = rel.relative_to(out_dir.resolve())
            md += [f"![{image.get('caption', '')}]({rel})", ""]
    parts.append(_ZOOM_SCRIPT + "</body></html>")
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    atomic_write_group({html_path: "\n".join(parts).encode(), md_path: "\n".join(md).encode()})
    return html_path, md_path
