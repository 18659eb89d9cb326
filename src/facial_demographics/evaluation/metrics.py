"""Accuracy, fairness and trust metrics computed from a table of predictions.

Everything here is a pure function of a *predictions frame*: one row per evaluated image with the
columns below (the same columns ``predictions.csv`` holds), so the numbers in ``metrics.json`` can be
recomputed from that file alone.

=================  ==========================================================================
column             meaning
=================  ==========================================================================
``true_age``       labelled age (NaN when unknown)
``true_gender``    ``"male"`` / ``"female"`` (empty when unknown)
``race``           race label when the dataset has one (empty otherwise)
``pred_age``       predicted age (NaN when the image gave no prediction)
``age_low``        lower end of the predicted age interval
``age_high``       upper end of the predicted age interval
``pred_gender``    predicted ``"male"`` / ``"female"``
``p_female``       predicted probability that the face is female
``status``         ``ok``, ``fallback`` (whole image used, no face found), ``no_face``, ``unreadable``
=================  ==========================================================================

Rows with status ``ok`` or ``fallback`` carry a prediction and are *evaluated*: what a user gets for a
cropped image in which the detector found nothing is the whole-image fallback, so it is scored too
(and counted). Age metrics use the evaluated rows with a known age, gender metrics those with a known
gender.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from facial_demographics.labels import (
    ADULT_AGE,
    AGE_BANDS,
    AGE_GROUPS,
    GENDER_AGE_BANDS,
    GENDER_LABELS,
    age_band,
    age_buckets,
    gender_age_band,
)

#: Statuses that carry a prediction.
PREDICTED = ("ok", "fallback")
STATUSES = ("ok", "fallback", "no_face", "unreadable")
ECE_BINS = 10


def _num(value: float | np.floating | None) -> float | None:
    """A JSON-safe float: None for NaN/None."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def bootstrap_mean_ci(values: np.ndarray, *, n_resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of the mean (seeded, so a report is reproducible)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return None, None
    if len(values) == 1 or np.all(values == values[0]):
        return float(values[0]), float(values[0])
    res = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, method="percentile",
                          confidence_level=level, vectorized=True, batch=100,
                          rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def confusion(true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int) -> list[list[int]]:
    """Confusion counts: rows are the true class, columns the predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(matrix, (np.asarray(true_idx, dtype=int), np.asarray(pred_idx, dtype=int)), 1)
    return matrix.tolist()


def roc_auc(is_positive: np.ndarray, score: np.ndarray) -> float | None:
    """ROC-AUC by the rank (Mann-Whitney) formula, ties counted half; None with only one class."""
    is_positive = np.asarray(is_positive, dtype=bool)
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(np.asarray(score, dtype=float))
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class ReliabilityBin:
    lo: float
    hi: float
    n: int
    mean_p: float | None  # mean predicted P(female) in the bin
    frac_female: float | None  # observed share of women in the bin


def reliability(is_female: np.ndarray, p_female: np.ndarray,
                bins: int = ECE_BINS) -> tuple[float | None, list[ReliabilityBin]]:
    """Calibration of P(female): ECE over ``bins`` equal-width bins of [0, 1] and the bins themselves.

    ECE = sum over bins of (share of images in the bin) * |mean P(female) - observed share female|.
    """
    is_female = np.asarray(is_female, dtype=float)
    p = np.asarray(p_female, dtype=float)
    idx = np.clip(np.floor(p * bins), 0, bins - 1).astype(int)
    out: list[ReliabilityBin] = []
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        if n:
            mean_p, frac = float(p[sel].mean()), float(is_female[sel].mean())
            ece += n / len(p) * abs(mean_p - frac)
            out.append(ReliabilityBin(b / bins, (b + 1) / bins, n, mean_p, frac))
        else:
            out.append(ReliabilityBin(b / bins, (b + 1) / bins, 0, None, None))
    return (float(ece) if len(p) else None), out


def age_metrics(true: np.ndarray, pred: np.ndarray, low: np.ndarray, high: np.ndarray, *,
                n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """MAE (+ bootstrap CI unless ``n_resamples`` is 0), RMSE, bias, CS@k, 5-bucket accuracy/confusion
    and interval coverage."""
    true, pred = np.asarray(true, dtype=float), np.asarray(pred, dtype=float)
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    n = len(true)
    err = pred - true
    abs_err = np.abs(err)
    has_interval = ~(np.isnan(low) | np.isnan(high))
    covered = (low <= true) & (true <= high)
    ci = list(bootstrap_mean_ci(abs_err, n_resamples=n_resamples, seed=seed)) if n_resamples else None
    return {
        "n_age": n,
        "mae": _num(abs_err.mean()) if n else None,
        "mae_ci95": ci,
        "rmse": _num(np.sqrt((err**2).mean())) if n else None,
        "bias": _num(err.mean()) if n else None,
        "cs1": _num((abs_err <= 1).mean()) if n else None,
        "cs5": _num((abs_err <= 5).mean()) if n else None,
        "cs10": _num((abs_err <= 10).mean()) if n else None,
        "bucket5_accuracy": _num((age_buckets(true) == age_buckets(pred)).mean()) if n else None,
        "bucket5_confusion": confusion(age_buckets(true), age_buckets(pred), len(AGE_GROUPS)),
        "interval_coverage": _num(covered[has_interval].mean()) if has_interval.any() else None,
    }


def gender_metrics(true: Sequence[str], pred: Sequence[str], p_female: np.ndarray) -> dict[str, Any]:
    """Accuracy, per-class recall, ROC-AUC (female positive), 2x2 confusion and ECE of P(female)."""
    t = np.array([GENDER_LABELS.index(g) for g in true], dtype=int)
    p = np.array([GENDER_LABELS.index(g) for g in pred], dtype=int)
    pf = np.asarray(p_female, dtype=float)
    n = len(t)
    ece, bins = reliability(t == 1, pf)
    recall = {g: (_num((p[t == i] == i).mean()) if (t == i).any() else None) for i, g in enumerate(GENDER_LABELS)}
    return {
        "n_gender": n,
        "gender_accuracy": _num((t == p).mean()) if n else None,
        "gender_recall": recall,
        "gender_auc": roc_auc(t == 1, pf),
        "gender_confusion": confusion(t, p, 2),
        "gender_ece": ece,
        "gender_reliability": [b.__dict__ for b in bins],
    }


def age_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows age metrics use: a prediction, a known true age and a predicted age."""
    return df[df["status"].isin(PREDICTED) & df["true_age"].notna() & df["pred_age"].notna()]


def gender_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows gender metrics use: a prediction, and a known true and predicted gender."""
    known = df["true_gender"].isin(GENDER_LABELS) & df["pred_gender"].isin(GENDER_LABELS)
    return df[df["status"].isin(PREDICTED) & known]


def summarize(df: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """All age and gender metrics for one set of rows (the whole set or one group)."""
    a, g = age_rows(df), gender_rows(df)
    out = age_metrics(a["true_age"].to_numpy(), a["pred_age"].to_numpy(), a["age_low"].to_numpy(),
                      a["age_high"].to_numpy(), n_resamples=n_resamples, seed=seed)
    out.update(gender_metrics(list(g["true_gender"]), list(g["pred_gender"]), g["p_female"].to_numpy()))
    return out


BAND_KEYS = ("mae", "bias", "rmse", "cs5", "interval_coverage")


def by_age_band(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per true-age band: n, MAE, signed bias (mean predicted - true), RMSE, CS@5, interval coverage."""
    a = age_rows(df)
    bands = a["true_age"].map(age_band)
    out: dict[str, dict[str, Any]] = {}
    for label in AGE_BANDS:
        rows = a[bands == label]
        m = age_metrics(rows["true_age"].to_numpy(), rows["pred_age"].to_numpy(), rows["age_low"].to_numpy(),
                        rows["age_high"].to_numpy(), n_resamples=0)
        out[label] = {"n": len(rows), **{k: m[k] for k in BAND_KEYS}}
    return out


def band_weights(df: pd.DataFrame) -> dict[str, float]:
    """Share of each :data:`AGE_BANDS` band among the rows with age metrics: the reference age mix."""
    bands = age_rows(df)["true_age"].map(age_band)
    n = len(bands)
    return {b: (float((bands == b).sum()) / n if n else 0.0) for b in AGE_BANDS}


def age_standardised_mae(df: pd.DataFrame, weights: dict[str, float]) -> dict[str, Any]:
    """MAE with each age band's MAE re-weighted to a reference age mix (direct standardisation).

    A group that is younger on average than the whole set looks better or worse on raw MAE only
    because age errors grow with age; standardising removes that age-mix effect, so what is left of a
    gap between groups is the model treating them differently at the same age.

    Args:
        df: predictions of one group.
        weights: the reference share of each band (``band_weights`` of the whole set).

    Returns:
        ``mae_age_std`` (None without rows) and ``mae_age_std_missing``: reference bands in which the
        group has no face; their weight is spread over the others (the sentence-level caveat).
    """
    a = age_rows(df)
    bands = a["true_age"].map(age_band)
    err = (a["pred_age"] - a["true_age"]).abs()
    total, used, missing = 0.0, 0.0, []
    for band, w in weights.items():
        if w <= 0:
            continue
        sel = bands == band
        if not sel.any():
            missing.append(band)
            continue
        total += w * float(err[sel].mean())
        used += w
    return {"mae_age_std": (total / used) if used else None, "mae_age_std_missing": missing}


def by_group(df: pd.DataFrame, column: str, *, n_resamples: int = 1000, seed: int = 0,
             weights: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """``summarize`` for each value of ``column`` among the evaluated rows (empty values skipped), plus
    the age-standardised MAE against ``weights`` (default: the age mix of ``df`` itself)."""
    rows = df[df["status"].isin(PREDICTED)]
    weights = band_weights(df) if weights is None else weights
    values = rows[column].fillna("").astype(str)
    out: dict[str, dict[str, Any]] = {}
    for value in sorted(v for v in values.unique() if v):
        part = rows[values == value]
        out[value] = {"n": len(part), **summarize(part, n_resamples=n_resamples, seed=seed),
                      **age_standardised_mae(part, weights)}
    return out


def ece_noise_floor(p_female: np.ndarray, *, n_draws: int = 200, seed: int = 0) -> float | None:
    """The median ECE a *perfectly* calibrated model would show with these probabilities on this many faces.

    ECE over 10 bins is biased upwards on small sets: with 100 faces even exact probabilities give
    about 0.04. A band's measured ECE near this floor says "no miscalibration detectable", not "0.04 off".
    """
    p = np.asarray(p_female, dtype=float)
    if not len(p):
        return None
    rng = np.random.default_rng(seed)
    draws = [reliability(rng.random(len(p)) < p, p)[0] for _ in range(n_draws)]
    return float(np.median([d for d in draws if d is not None]))


def _gender_trust(is_female: np.ndarray, p_female: np.ndarray) -> dict[str, Any]:
    """Accuracy, mean confidence (the probability shown for the predicted gender), ECE and its noise floor."""
    n = len(p_female)
    if not n:
        return {"n": 0, "gender_accuracy": None, "mean_confidence": None, "overconfidence": None,
                "gender_ece": None, "ece_noise_floor": None}
    correct = (p_female >= 0.5) == is_female
    confidence = np.maximum(p_female, 1 - p_female)
    ece, _ = reliability(is_female, p_female)
    acc, conf = float(correct.mean()), float(confidence.mean())
    return {"n": n, "gender_accuracy": acc, "mean_confidence": conf, "overconfidence": conf - acc,
            "gender_ece": ece, "ece_noise_floor": ece_noise_floor(p_female)}


def gender_by_age_band(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Gender accuracy and calibration per :data:`GENDER_AGE_BANDS` band and for adults.

    Keys: each band, then ``f"{ADULT_AGE}+"`` (all adults, overlapping the adult bands). Each value has
    ``n``, ``gender_accuracy``, ``mean_confidence``, ``overconfidence`` (confidence - accuracy; > 0
    means the shown probability promises more than the model delivers), ``gender_ece`` and
    ``ece_noise_floor`` (see :func:`ece_noise_floor`).
    """
    g = gender_rows(df)
    g = g[g["true_age"].notna()]
    is_female = (g["true_gender"] == GENDER_LABELS[1]).to_numpy()
    p = g["p_female"].to_numpy(dtype=float)
    bands = g["true_age"].map(gender_age_band).to_numpy()
    out = {band: _gender_trust(is_female[bands == band], p[bands == band]) for band in GENDER_AGE_BANDS}
    adult = (g["true_age"] >= ADULT_AGE).to_numpy()
    out[f"{ADULT_AGE}+"] = _gender_trust(is_female[adult], p[adult])
    return out


def gender_band_sentences(bands: dict[str, dict[str, Any]], *, min_n: int = 30) -> list[str]:
    """One sentence per band: accuracy, and whether the shown probability over- or under-promises."""
    out = []
    for band, m in bands.items():
        if m["n"] == 0:
            continue
        text = (f"Gender at ages {band} (n={m['n']}): {100 * m['gender_accuracy']:.1f} % correct, "
                f"mean shown confidence {100 * m['mean_confidence']:.1f} %")
        gap = 100 * m["overconfidence"]
        if abs(gap) >= 1.0:
            text += f", {'over' if gap > 0 else 'under'}-confident by {abs(gap):.1f} points"
        text += f"; ECE {m['gender_ece']:.3f} (a perfectly calibrated model would show about " \
                f"{m['ece_noise_floor']:.3f} on this many faces)."
        if m["n"] < min_n:
            text += f" (Fewer than {min_n} faces: noisy.)"
        out.append(text)
    return out


@dataclass(frozen=True)
class GapMetric:
    key: str
    name: str
    percent: bool  # shown as a percentage, gap in percentage points
    unit: str = ""


#: Metrics whose spread between groups is reported as a fairness gap.
GAP_METRICS: tuple[GapMetric, ...] = (
    GapMetric("mae", "MAE", False, "years"),
    GapMetric("mae_age_std", "Age-standardised MAE", False, "years"),
    GapMetric("bias", "Mean signed age error", False, "years"),
    GapMetric("bucket5_accuracy", "5-bucket age accuracy", True),
    GapMetric("interval_coverage", "Age-interval coverage", True),
    GapMetric("gender_accuracy", "Gender accuracy", True),
    GapMetric("gender_ece", "Gender calibration error (ECE)", False),
)


def _fmt(value: float, metric: GapMetric) -> str:
    if metric.percent:
        return f"{100 * value:.1f} %"
    if metric.unit:
        return f"{value:.2f}"
    return f"{value:.3f}"


def gaps(groups: dict[str, dict[str, Any]], attribute: str, *, min_group_size: int = 10,
         metrics: Sequence[GapMetric] = GAP_METRICS) -> dict[str, dict[str, Any]]:
    """For each GAP_METRIC, the best- and worst-off group and the gap between them, with a sentence.

    Only groups with at least ``min_group_size`` images are compared (tiny groups give noise, not
    evidence); when fewer than two qualify the gap is None and the sentence says why.
    """
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        values = {g: (m[metric.key], m["n"]) for g, m in groups.items()
                  if m["n"] >= min_group_size and m.get(metric.key) is not None}
        if len(values) < 2:
            out[metric.key] = {
                "metric": metric.key, "attribute": attribute, "gap": None,
                "sentence": f"{metric.name} by {attribute}: fewer than two groups with at least "
                            f"{min_group_size} images, no comparison.",
            }
            continue
        lo_g = min(values, key=lambda g: values[g][0])
        hi_g = max(values, key=lambda g: values[g][0])
        lo, hi = values[lo_g][0], values[hi_g][0]
        gap = hi - lo
        gap_text = (f"{100 * gap:.1f} percentage points" if metric.percent
                    else f"{_fmt(gap, metric)} {metric.unit}".rstrip())
        out[metric.key] = {
            "metric": metric.key, "attribute": attribute,
            "min_group": lo_g, "min": lo, "min_n": values[lo_g][1],
            "max_group": hi_g, "max": hi, "max_n": values[hi_g][1],
            "gap": gap,
            "sentence": f"{metric.name} by {attribute} ranges from {_fmt(lo, metric)} ({lo_g}, "
                        f"n={values[lo_g][1]}) to {_fmt(hi, metric)} ({hi_g}, n={values[hi_g][1]}): "
                        f"gap {gap_text}.",
        }
    return out


def counts(df: pd.DataFrame) -> dict[str, int]:
    """How many images there were and what happened to them."""
    status = df["status"]
    return {
        "images": len(df),
        "evaluated": int(status.isin(PREDICTED).sum()),
        "no_face": int((status == "no_face").sum()),
        "fallback": int((status == "fallback").sum()),
        "unreadable": int((status == "unreadable").sum()),
    }


def compute_metrics(df: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0,
                    min_group_size: int = 10) -> dict[str, Any]:
    """Every number of ``metrics.json`` except ``model`` (see evaluation/__init__ for the key table)."""
    unknown = set(df["status"]) - set(STATUSES)
    if unknown:
        raise ValueError(f"predictions: unknown status values {sorted(unknown)}; expected {STATUSES}")
    out = summarize(df, n_resamples=n_resamples, seed=seed)
    out["by_age_band"] = by_age_band(df)
    races = df.loc[df["status"].isin(PREDICTED), "race"] if "race" in df else pd.Series([], dtype=str)
    has_race = bool(races.fillna("").astype(str).ne("").any())
    weights = band_weights(df)
    out["age_band_weights"] = weights
    out["by_race"] = by_group(df, "race", n_resamples=n_resamples, seed=seed, weights=weights) if has_race else {}
    out["by_gender"] = by_group(df, "true_gender", n_resamples=n_resamples, seed=seed, weights=weights)
    out["gaps"] = {"gender": gaps(out["by_gender"], "gender", min_group_size=min_group_size)}
    if has_race:
        out["gaps"]["race"] = gaps(out["by_race"], "race", min_group_size=min_group_size)
    bands = gender_by_age_band(df)
    out["gender_by_age_band"] = bands
    out["gender_by_age_band_sentences"] = gender_band_sentences(bands)
    trust = [m for m in GAP_METRICS if m.key in ("gender_accuracy", "gender_ece")]
    banded = {b: m for b, m in bands.items() if b in GENDER_AGE_BANDS}
    out["gaps"]["age_band"] = gaps(banded, "age band", min_group_size=min_group_size, metrics=trust)
    out["counts"] = counts(df)
    return out


#: The keys of a ``domains`` entry's per-band rows.
DOMAIN_BAND_KEYS = ("mae", "bias", "interval_coverage")


def domain_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """What ``metrics.json`` repeats about another dataset under ``domains``: the out-of-domain numbers the
    release rule and the model card use (the dataset's own folder keeps every metric)."""
    recall = metrics.get("gender_recall") or {}
    return {
        "n": metrics.get("n_age"),
        "mae": metrics.get("mae"), "mae_ci95": metrics.get("mae_ci95"), "bias": metrics.get("bias"),
        "cs5": metrics.get("cs5"), "interval_coverage": metrics.get("interval_coverage"),
        "gender_accuracy": metrics.get("gender_accuracy"),
        "gender_recall": {g: recall.get(g) for g in ("male", "female")},
        "by_age_band": {b: {"n": m["n"], **{k: m[k] for k in DOMAIN_BAND_KEYS}}
                        for b, m in metrics.get("by_age_band", {}).items() if m["n"]},
        "counts": metrics.get("counts"),
    }
