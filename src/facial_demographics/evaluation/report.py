"""A self-contained HTML evaluation report: every plot and face thumbnail is inlined as base64.

The report must open offline and be mailable as one file, so there are no external assets, scripts or
fonts. Plots are drawn with matplotlib's object API (``Figure``), which keeps no global pyplot state.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from facial_demographics.evaluation.metrics import age_rows, gender_rows
from facial_demographics.htmlstyle import CSS
from facial_demographics.labels import ADULT_AGE, AGE_BANDS, AGE_GROUPS, GENDER_AGE_BANDS, GENDER_LABELS

THUMB = 128
#: Colour per model in plots that compare models; also the first model's colour everywhere.
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


@dataclass
class ModelEvaluation:
    """One model's results on the evaluation set, as the report needs them."""

    label: str
    predictions: pd.DataFrame
    metrics: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportContext:
    """What was evaluated: shown in the report header."""

    dataset: str
    split_note: str
    cropped: bool
    interval_level: float | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


# --------------------------------------------------------------------------- plotting helpers


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float = 5.2, height: float = 3.8) -> Figure:
    fig = Figure(figsize=(width, height))
    fig.set_layout_engine("tight")
    return fig


def plot_scatter(df: pd.DataFrame) -> str:
    rows = age_rows(df)
    fig = _figure()
    ax = fig.add_subplot()
    top = float(max(rows["true_age"].max(), rows["pred_age"].max(), 1)) if len(rows) else 100.0
    ax.plot([0, top], [0, top], color="gray", lw=1, ls="--", label="perfect")
    ax.scatter(rows["true_age"], rows["pred_age"], s=8, alpha=0.35 if len(rows) > 500 else 0.7,
               color=COLORS[0], edgecolors="none")
    ax.set(xlabel="true age", ylabel="predicted age", title="Predicted vs true age", xlim=(0, top * 1.02),
           ylim=(0, top * 1.02))
    ax.legend(loc="upper left")
    return _png(fig)


def plot_error_vs_age(df: pd.DataFrame) -> str:
    rows = age_rows(df)
    err = rows["pred_age"] - rows["true_age"]
    fig = _figure()
    ax = fig.add_subplot()
    ax.axhline(0, color="gray", lw=1, ls="--")
    ax.scatter(rows["true_age"], err, s=8, alpha=0.3 if len(rows) > 500 else 0.6, color=COLORS[0],
               edgecolors="none", label="one image")
    if len(rows):
        bins = (rows["true_age"] // 5) * 5 + 2.5
        mean = err.groupby(bins).mean()
        ax.plot(mean.index, mean.to_numpy(), color=COLORS[1], lw=2, label="mean per 5 years")
    ax.set(xlabel="true age", ylabel="predicted - true (years)", title="Signed age error by true age")
    ax.legend(loc="best")
    return _png(fig)


def plot_band_bars(by_band: dict[str, dict[str, Any]]) -> str:
    labels = list(AGE_BANDS)
    mae = [by_band[b]["mae"] or 0 for b in labels]
    bias = [by_band[b]["bias"] or 0 for b in labels]
    x = np.arange(len(labels))
    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(x - 0.2, mae, 0.4, label="MAE", color=COLORS[0])
    ax.bar(x + 0.2, bias, 0.4, label="bias (pred - true)", color=COLORS[4])
    ax.axhline(0, color="gray", lw=1)
    ax.set_xticks(x, [f"{b}\nn={by_band[b]['n']}" for b in labels])
    ax.set(ylabel="years", title="Age error by true-age band")
    ax.legend()
    return _png(fig)


def plot_heatmap(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str) -> str:
    """Confusion heatmap coloured by row share (recall), annotated with counts."""
    m = np.asarray(matrix, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig = _figure(4.6, 3.9)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, label="share of true class")
    return _png(fig)


def plot_reliability(bins: list[dict[str, Any]], ece: float | None) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls="--", label="perfectly calibrated")
    used = [b for b in bins if b["n"]]
    centers = [(b["lo"] + b["hi"]) / 2 for b in used]
    ax.bar(centers, [b["frac_female"] for b in used], width=0.09, alpha=0.5, color=COLORS[0],
           label="observed share female")
    ax.plot([b["mean_p"] for b in used], [b["frac_female"] for b in used], "o-", color=COLORS[1],
            label="mean P(female) vs observed")
    for c, b in zip(centers, used, strict=True):
        ax.text(c, 1.02, str(b["n"]), ha="center", fontsize=7, color="gray")
    title = "Gender reliability diagram" + (f" (ECE {ece:.3f})" if ece is not None else "")
    ax.set(xlabel="predicted P(female)", ylabel="observed share female", title=title, xlim=(0, 1),
           ylim=(0, 1.08))
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def plot_coverage(by_band: dict[str, dict[str, Any]], overall: float | None, level: float | None) -> str:
    labels = list(AGE_BANDS)
    cov = [by_band[b]["interval_coverage"] or 0 for b in labels]
    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(range(len(labels)), cov, color=COLORS[2])
    if level is not None:
        ax.axhline(level, color=COLORS[1], ls="--", lw=1.5, label=f"nominal {level:.0%}")
    if overall is not None:
        ax.axhline(overall, color="gray", ls=":", lw=1.5, label=f"overall {overall:.0%}")
    ax.set_xticks(range(len(labels)), [f"{b}\nn={by_band[b]['n']}" for b in labels])
    ax.set(ylabel="share of true ages inside the interval", ylim=(0, 1.05),
           title="Age-interval coverage by true-age band")
    ax.legend(loc="lower right")
    return _png(fig)


def plot_group_bars(groups: dict[str, dict[str, Any]], attribute: str) -> str:
    names = list(groups)
    fig = _figure(8.5, 3.6)
    for k, (key, label, scale) in enumerate((("mae", "MAE (years)", 1.0),
                                             ("gender_accuracy", "gender accuracy (%)", 100.0),
                                             ("interval_coverage", "interval coverage (%)", 100.0))):
        ax = fig.add_subplot(1, 3, k + 1)
        values = [(groups[g].get(key) or 0) * scale for g in names]
        ax.bar(range(len(names)), values, color=COLORS[k])
        ax.set_xticks(range(len(names)), [f"{g}\nn={groups[g]['n']}" for g in names], fontsize=8)
        ax.set_title(label, fontsize=10)
    fig.suptitle(f"By {attribute}")
    return _png(fig)


# --------------------------------------------------------------------------- gallery


Box = tuple[float, float, float, float]


def _crop(image: np.ndarray, box: Box | None, margin: float = 0.25) -> np.ndarray:
    if box is None or any(np.isnan(box)):
        return image
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    x1, x2 = max(0, int(x1 - margin * w)), min(image.shape[1], int(x2 + margin * w))
    y1, y2 = max(0, int(y1 - margin * h)), min(image.shape[0], int(y2 + margin * h))
    return image[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else image


def thumbnail(path: str, box: Box | None,
              load: Callable[[str], np.ndarray]) -> str | None:
    """Base64 JPEG of the face (or whole image when ``box`` is None); None when it cannot be read."""
    try:
        image = load(path)
    except Exception:  # a thumbnail is decoration: an unreadable file must not stop the report
        return None
    img = Image.fromarray(_crop(image, box))
    img.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def worst_cases(df: pd.DataFrame, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` largest absolute age errors and the ``n`` most confident gender misses."""
    rows = age_rows(df).assign(abs_error=lambda d: (d["pred_age"] - d["true_age"]).abs())
    age = rows.sort_values("abs_error", ascending=False, kind="stable").head(n)
    g = gender_rows(df)
    miss = g[g["true_gender"] != g["pred_gender"]]
    miss = miss.assign(confidence=(miss["p_female"] - 0.5).abs()).sort_values(
        "confidence", ascending=False, kind="stable").head(n)
    return age, miss


def _box(row: pd.Series, cropped: bool) -> Box | None:
    if cropped or row.get("status") == "fallback":
        return None
    cols = ("box_x1", "box_y1", "box_x2", "box_y2")
    if not all(c in row for c in cols):
        return None
    return tuple(float(row[c]) for c in cols)  # type: ignore[return-value]


def _gallery(rows: pd.DataFrame, caption: Callable[[pd.Series], str], cropped: bool,
             load: Callable[[str], np.ndarray]) -> str:
    cells = []
    for _, row in rows.iterrows():
        thumb = thumbnail(str(row["path"]), _box(row, cropped), load)
        img = (f'<img src="data:image/jpeg;base64,{thumb}" alt="{html.escape(str(row["key"]))}">'
               if thumb else '<div class="missing">image unreadable</div>')
        cells.append(f'<figure>{img}<figcaption>{caption(row)}<br><span class="key">'
                     f'{html.escape(str(row["key"]))}</span></figcaption></figure>')
    return '<div class="gallery">' + "".join(cells) + "</div>" if cells else "<p>None.</p>"


# --------------------------------------------------------------------------- HTML


def _f(value: Any, digits: int = 2, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{100 * value:.1f} %" if percent else f"{value:.{digits}f}"


#: (metrics key, label, digits, percent) for the headline tables.
HEADLINE: tuple[tuple[str, str, int, bool], ...] = (
    ("mae", "Age MAE (years)", 2, False),
    ("rmse", "Age RMSE (years)", 2, False),
    ("bias", "Mean signed age error", 2, False),
    ("cs5", "CS@5 (|error| ≤ 5)", 1, True),
    ("cs10", "CS@10", 1, True),
    ("bucket5_accuracy", "5-bucket accuracy", 1, True),
    ("interval_coverage", "Age-interval coverage", 1, True),
    ("gender_accuracy", "Gender accuracy", 1, True),
    ("gender_auc", "Gender ROC-AUC", 3, False),
    ("gender_ece", "Gender ECE", 3, False),
)


def _headline_value(m: dict[str, Any], key: str, digits: int, percent: bool) -> str:
    text = _f(m.get(key), digits, percent)
    if key == "mae" and m.get("mae_ci95") and m["mae_ci95"][0] is not None:
        lo, hi = m["mae_ci95"]
        text += f' <span class="ci">[{lo:.2f}, {hi:.2f}]</span>'
    return text


def _comparison_table(evals: Sequence[ModelEvaluation]) -> str:
    head = "".join(f"<th>{html.escape(e.label)}</th>" for e in evals)
    body = []
    for key, label, digits, percent in HEADLINE:
        cells = "".join(f"<td>{_headline_value(e.metrics, key, digits, percent)}</td>" for e in evals)
        body.append(f"<tr><th>{label}</th>{cells}</tr>")
    for attr in ("race", "gender"):
        for key, what in (("mae", "MAE"), ("mae_age_std", "age-standardised MAE")):
            cells = "".join(
                f"<td>{_f(e.metrics['gaps'].get(attr, {}).get(key, {}).get('gap'))}</td>" for e in evals)
            body.append(f"<tr><th>Largest {what} gap by {attr} (years)</th>{cells}</tr>")
    adult = f"{ADULT_AGE}+"
    for band in (GENDER_AGE_BANDS[0], adult):
        cells = "".join(
            f"<td>{_f(e.metrics.get('gender_by_age_band', {}).get(band, {}).get('gender_accuracy'), 1, True)}"
            "</td>" for e in evals)
        body.append(f"<tr><th>Gender accuracy, ages {band}</th>{cells}</tr>")
    cells = "".join(f"<td>{e.metrics['counts']['evaluated']} / {e.metrics['counts']['images']}</td>"
                    for e in evals)
    body.append(f"<tr><th>Images evaluated</th>{cells}</tr>")
    return f'<table class="metrics"><tr><th></th>{head}</tr>{"".join(body)}</table>'


def _model_line(model: dict[str, Any]) -> str:
    if not model:
        return "unknown model"
    parts = [f"{model.get('name', '?')} {model.get('version', '')}".strip()]
    if model.get("sha256"):
        parts.append(f"sha256 {str(model['sha256'])[:12]}…")
    if model.get("path"):
        parts.append(str(model["path"]))
    return html.escape(" · ".join(parts))


def _group_table(groups: dict[str, dict[str, Any]], attribute: str) -> str:
    cols = (("mae", "MAE", 2, False), ("mae_age_std", "MAE, age-std.", 2, False),
            ("bias", "bias", 2, False), ("cs5", "CS@5", 1, True),
            ("interval_coverage", "interval cov.", 1, True), ("gender_accuracy", "gender acc.", 1, True),
            ("gender_ece", "gender ECE", 3, False))
    head = "".join(f"<th>{c[1]}</th>" for c in cols)
    rows = "".join(
        f"<tr><th>{html.escape(g)}</th><td>{m['n']}</td>"
        + "".join(f"<td>{_f(m.get(k), d, p)}</td>" for k, _, d, p in cols) + "</tr>"
        for g, m in groups.items())
    return f'<table class="metrics"><tr><th>{attribute}</th><th>n</th>{head}</tr>{rows}</table>'


def _band_table(by_band: dict[str, dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><th>{b}</th><td>{m['n']}</td><td>{_f(m['mae'])}</td><td>{_f(m['bias'])}</td>"
        f"<td>{_f(m['cs5'], 1, True)}</td><td>{_f(m['interval_coverage'], 1, True)}</td></tr>"
        for b, m in by_band.items())
    return ('<table class="metrics"><tr><th>true age</th><th>n</th><th>MAE</th><th>bias</th><th>CS@5</th>'
            f"<th>interval cov.</th></tr>{rows}</table>")


def _gender_band_table(bands: dict[str, dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(b)}</th><td>{m['n']}</td><td>{_f(m['gender_accuracy'], 1, True)}</td>"
        f"<td>{_f(m['mean_confidence'], 1, True)}</td><td>{_f(m['gender_ece'], 3)}</td>"
        f"<td>{_f(m.get('ece_noise_floor'), 3)}</td></tr>"
        for b, m in bands.items())
    return ('<table class="metrics"><tr><th>true age</th><th>n</th><th>gender acc.</th>'
            "<th>mean shown confidence</th><th>ECE</th><th>ECE if perfectly calibrated</th></tr>"
            f"{rows}</table>")


def gap_sentences(metrics: dict[str, Any]) -> list[str]:
    """The fairness sentences, largest MAE gap first; one line per attribute that has too few groups."""
    out = []
    for attr in ("race", "gender", "age_band"):
        gaps = metrics["gaps"].get(attr, {})
        found = [g["sentence"] for g in gaps.values() if g.get("gap") is not None]
        if found:
            out += found
        elif gaps:
            out.append(next(iter(gaps.values()))["sentence"].replace("MAE by", "By", 1))
    return out


def _img(b64: str, alt: str) -> str:
    return f'<img class="plot" src="data:image/png;base64,{b64}" alt="{html.escape(alt)}">'


def _model_section(e: ModelEvaluation, ctx: ReportContext, gallery_size: int,
                   load: Callable[[str], np.ndarray], index: int) -> str:
    m, df = e.metrics, e.predictions
    c = m["counts"]
    cards = "".join(f'<div class="card"><div class="v">{_headline_value(m, k, d, p)}</div>'
                    f'<div class="l">{label}</div></div>' for k, label, d, p in HEADLINE)
    fairness = "".join(f"<li>{html.escape(s)}</li>" for s in gap_sentences(m))
    gender_words = "".join(f"<li>{html.escape(s)}</li>" for s in m.get("gender_by_age_band_sentences", []))
    plots = [
        _img(plot_scatter(df), "predicted vs true age"),
        _img(plot_error_vs_age(df), "error versus age"),
        _img(plot_band_bars(m["by_age_band"]), "MAE and bias per band"),
        _img(plot_heatmap(m["bucket5_confusion"], AGE_GROUPS, "5-bucket age confusion"), "age confusion"),
        _img(plot_heatmap(m["gender_confusion"], GENDER_LABELS, "Gender confusion"), "gender confusion"),
        _img(plot_reliability(m["gender_reliability"], m["gender_ece"]), "reliability diagram"),
        _img(plot_coverage(m["by_age_band"], m["interval_coverage"], ctx.interval_level), "coverage"),
    ]
    groups_html = ""
    if m["by_race"]:
        groups_html += _img(plot_group_bars(m["by_race"], "race"), "metrics by race")
        groups_html += _group_table(m["by_race"], "race")
    if m["by_gender"]:
        groups_html += _img(plot_group_bars(m["by_gender"], "gender"), "metrics by gender")
        groups_html += _group_table(m["by_gender"], "gender")
    worst_age, worst_gender = worst_cases(df, gallery_size)

    def age_caption(r: pd.Series) -> str:
        return (f"true {r['true_age']:.0f} · pred {r['pred_age']:.1f}<br>"
                f"[{_f(r['age_low'], 0)}–{_f(r['age_high'], 0)}]")

    def gender_caption(r: pd.Series) -> str:
        return f"true {r['true_gender']} · pred {r['pred_gender']}<br>P(female) {r['p_female']:.2f}"

    return f"""
<section id="model-{index}">
<h2>{html.escape(e.label)}</h2>
<p class="meta">Model: {_model_line(e.model)}</p>
<div class="cards">{cards}</div>
<h3>Counts</h3>
<p>{c['images']} images: {c['evaluated']} evaluated ({c['fallback']} of them with the whole-image fallback
because no face was found), {c['no_face']} without a face, {c['unreadable']} unreadable.
Age metrics over {m['n_age']} images, gender metrics over {m['n_gender']}.</p>
<h3>Fairness</h3>
<ul class="gaps">{fairness}</ul>
{groups_html}
<h3>Accuracy and trust</h3>
<div class="plots">{''.join(plots)}</div>
<h3>By true-age band</h3>
{_band_table(m['by_age_band'])}
<h3>Gender by true-age band</h3>
<ul class="gaps">{gender_words}</ul>
{_gender_band_table(m.get('gender_by_age_band', {}))}
<h3>Worst age predictions</h3>
{_gallery(worst_age, age_caption, ctx.cropped, load)}
<h3>Most confident gender misses</h3>
{_gallery(worst_gender, gender_caption, ctx.cropped, load)}
</section>"""





def _domain_table(evals: Sequence[ModelEvaluation]) -> str:
    """Every model's ``domains`` entries: one row per (dataset, model), bias per age band beside them."""
    rows = []
    for e in evals:
        for name, d in e.metrics.get("domains", {}).items():
            recall = d.get("gender_recall") or {}
            bands = ", ".join(f"{b}: {_f(m['bias'])} ({_f(m['interval_coverage'], 0, True)})"
                              for b, m in d.get("by_age_band", {}).items())
            link = f'<a href="{html.escape(d["report"])}">{html.escape(name)}</a>' if d.get("report") else (
                html.escape(name))
            rows.append(
                f"<tr><th>{link}</th><td>{html.escape(e.label)}</td><td>{d.get('n')}</td>"
                f"<td>{_f(d.get('mae'))}</td><td>{_f(d.get('bias'))}</td><td>{_f(d.get('cs5'), 1, True)}</td>"
                f"<td>{_f(d.get('interval_coverage'), 1, True)}</td><td>{_f(recall.get('male'), 1, True)} / "
                f"{_f(recall.get('female'), 1, True)}</td><td>{html.escape(bands)}</td></tr>")
    if not rows:
        return ""
    return ('<h2>Other datasets (out of domain)</h2><p>The same models on whole photos of other datasets '
            '(face detection as users get it); each name links to its full report.</p>'
            '<table class="metrics"><tr><th>dataset</th><th>model</th><th>n</th><th>MAE</th><th>bias</th>'
            '<th>CS@5</th><th>interval cov.</th><th>gender men / women</th>'
            f'<th>bias (coverage) by true age</th></tr>{"".join(rows)}</table>')


def render_report(evals: Sequence[ModelEvaluation], ctx: ReportContext, *, gallery_size: int = 12,
                  load: Callable[[str], np.ndarray] | None = None) -> str:
    """The whole report as one HTML string; ``load`` reads an image for the gallery (default read_image)."""
    if not evals:
        raise ValueError("render_report: no model results to report")
    if load is None:
        from facial_demographics.imaging import read_image

        load = read_image
    title = "Evaluation report" if len(evals) == 1 else f"Model comparison ({len(evals)} models)"
    sections = "".join(_model_section(e, ctx, gallery_size, load, i) for i, e in enumerate(evals))
    links = (f'<a href="#model-{i}">{html.escape(e.label)}</a>' for i, e in enumerate(evals))
    toc = "<p>" + " · ".join(links) + "</p>"
    interval = f" · age interval nominal level {ctx.interval_level:.0%}" if ctx.interval_level else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">Dataset: {html.escape(ctx.dataset)} · {html.escape(ctx.split_note)} ·
{'cropped faces (one face per image)' if ctx.cropped else 'face detection on full images'}{interval}</p>
<p class="meta">Created {html.escape(ctx.created)}</p>
{'<h2>Side by side</h2>' + _comparison_table(evals) + toc if len(evals) > 1 else ''}
{_domain_table(evals)}
{sections}
</body></html>
"""


def write_report(path: Path, evals: Sequence[ModelEvaluation], ctx: ReportContext, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(evals, ctx, **kwargs), encoding="utf-8")
    return path


__all__ = ["ModelEvaluation", "ReportContext", "render_report", "write_report", "worst_cases"]
