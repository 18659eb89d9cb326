"""A population summary on disk: ``summary.json``, ``summary.csv``, ``pyramid.png`` and ``report.html``.

Each file is written to a temporary name and renamed, so an interrupted run never leaves half a file.
The report is self-contained (the pyramid inlined as base64), like ``evaluate``'s.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from ..htmlstyle import CSS
from .estimator import PopulationSummary, Share

SUMMARY_JSON, SUMMARY_CSV, PYRAMID_PNG, REPORT_HTML = "summary.json", "summary.csv", "pyramid.png", "report.html"
CSV_FIELDS = ("group", "band", "gender", "share", "low", "high", "count")
MALE_COLOR, FEMALE_COLOR, ALL_COLOR = "#4c78a8", "#e45756", "#72b7b2"


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``path`` whole or not at all (beside it, then renamed): an interrupted run never leaves half a file."""
    tmp = path.with_name(path.name + ".part")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def csv_text(summary: PopulationSummary) -> str:
    """One row per share: the age bands, the genders, then each band x gender cell."""
    doc = summary.to_dict()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in doc["age"]:
        writer.writerow({"group": "age", "band": r["band"], "gender": "", **_numbers(r)})
    for r in doc["gender"]:
        writer.writerow({"group": "gender", "band": "", "gender": r["gender"], **_numbers(r)})
    for r in doc["age_gender"]:
        writer.writerow({"group": "age_gender", "band": r["band"], "gender": r["gender"], **_numbers(r)})
    return buf.getvalue()


def _numbers(row: dict[str, object]) -> dict[str, object]:
    return {k: row[k] for k in ("share", "low", "high", "count")}


def pyramid_figure(summary: PopulationSummary, title: str = "") -> Figure:
    """Bands bottom (youngest) to top; men to the left, women to the right, each with its interval.
    Without a gender head, one bar per band."""
    names = summary.bands.names
    fig = Figure(figsize=(6.4, 0.45 * len(names) + 1.6))
    fig.set_layout_engine("tight")
    ax = fig.add_subplot()
    y = list(range(len(names)))
    if summary.age_gender:
        for k, sign, color, label in ((0, -1, MALE_COLOR, "male"), (1, 1, FEMALE_COLOR, "female")):
            cells = [row[k] for row in summary.age_gender]
            _bars(ax, y, cells, sign, color, label)
        ax.axvline(0, color="#333", linewidth=0.8)
        reach = min(1.0, max(s.high for row in summary.age_gender for s in row) * 1.08) or 1.0
        ax.set_xlim(-reach, reach)
        ticks = [t for t in ax.get_xticks() if abs(t) <= reach + 1e-9]
        ax.set_xticks(ticks, [f"{abs(t) * 100:.0f} %" for t in ticks])
        ax.legend(loc="lower right", frameon=False)
    else:
        _bars(ax, y, summary.age, 1, ALL_COLOR, "all")
        ax.set_xlim(0, min(1.0, max(s.high for s in summary.age) * 1.08) or 1.0)
        ax.set_xticks(ax.get_xticks(), [f"{t * 100:.0f} %" for t in ax.get_xticks()])
    ax.set_yticks(y, list(names))
    ax.set_xlabel(f"share of {'people' if summary.people is not None else 'faces'} "
                  f"(bars: estimate; lines: {summary.interval * 100:.0f} % interval)")
    ax.set_title(title or f"{summary.units} {'people' if summary.people is not None else 'faces'}")
    return fig


def _bars(ax: object, y: list[int], shares: Sequence[Share], sign: int, color: str, label: str) -> None:
    values = [sign * s.share for s in shares]
    err = [[s.share - s.low for s in shares], [s.high - s.share for s in shares]]
    ax.barh(y, values, color=color, label=label, height=0.8)  # type: ignore[attr-defined]
    ax.errorbar(values, y, xerr=err, fmt="none", ecolor="#222", capsize=3, linewidth=1)  # type: ignore[attr-defined]


def pyramid_png(summary: PopulationSummary, title: str = "") -> bytes:
    buf = io.BytesIO()
    pyramid_figure(summary, title).savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _pct(s: Share) -> str:
    return f"{s.share * 100:.1f} % <small>({s.low * 100:.1f}–{s.high * 100:.1f})</small>"


def html_table(summary: PopulationSummary) -> str:
    """The band table: share with interval and count, overall and per gender."""
    gendered = bool(summary.age_gender)
    head = "<tr><th>band</th><th>share</th><th>count</th>" + (
        "<th>female</th><th>male</th>" if gendered else "") + "</tr>"
    rows = []
    for b, name in enumerate(summary.bands.names):
        s = summary.age[b]
        cells = f"<td>{html.escape(name)}</td><td>{_pct(s)}</td><td>{s.count:.1f}</td>"
        if gendered:
            female, male = summary.age_gender[b][1], summary.age_gender[b][0]
            cells += f"<td>{_pct(female)}</td><td>{_pct(male)}</td>"
        rows.append(f"<tr>{cells}</tr>")
    if gendered:
        male, female = summary.gender
        rows.append(f"<tr><th>all</th><td>100 %</td><td>{summary.units}</td><td>{_pct(female)}</td>"
                    f"<td>{_pct(male)}</td></tr>")
    return f"<table class=\"metrics\">{head}{''.join(rows)}</table>"


def render_html(summary: PopulationSummary, title: str, png: bytes,
                sections: Sequence[tuple[str, str]] = ()) -> str:
    """The self-contained report page."""
    import base64

    doc = summary.to_dict()
    unit = "people" if summary.people is not None else "faces"
    counts = ", ".join(f"{k.replace('_', ' ')} {doc[k]}" for k in ("images", "errors", "no_face", "broken_lines")
                       if isinstance(doc.get(k), int))
    img = base64.b64encode(png).decode("ascii")
    extra = "".join(f"<h2>{html.escape(h)}</h2>{body}" for h, body in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">{summary.units} {unit}{' · ' + html.escape(counts) if counts else ''}
· method {html.escape(summary.method)} · {summary.interval * 100:.0f} % intervals (sampling, per-face
uncertainty and the model's bias measured on validation)</p>
<h2>Population pyramid</h2><img alt="population pyramid" src="data:image/png;base64,{img}">
<h2>By age band</h2>{html_table(summary)}
<p class="meta">Shares estimate the make-up of the population from each face's whole age distribution
and gender probability, corrected for the model's own confusion; counts are share × {unit}.</p>
{extra}
</body></html>
"""


def write_summary(summary: PopulationSummary, out: str | Path, title: str = "Population summary",
                  sections: Sequence[tuple[str, str]] = ()) -> list[Path]:
    """Write the four files into ``out`` (created when missing).

    Args:
        summary: what to write.
        out: the folder.
        title: the report's and the pyramid's title.
        sections: extra (heading, HTML) blocks appended to ``report.html`` (a video adds dwell times).

    Returns:
        The paths written, in the order json, csv, png, html.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = pyramid_png(summary, title)
    paths = [out / SUMMARY_JSON, out / SUMMARY_CSV, out / PYRAMID_PNG, out / REPORT_HTML]
    write_atomic(paths[0], json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n")
    write_atomic(paths[1], csv_text(summary))
    write_atomic(paths[2], png)
    write_atomic(paths[3], render_html(summary, title, png, sections))
    return paths
