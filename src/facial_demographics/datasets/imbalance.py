"""Class imbalance tools (numpy only): age filtering, class weights, per-sample sampler weights.

UTKFace is dominated by young adults and sparse past 75; the seed model therefore trained on ages
21..75 only. These helpers let training keep the full range and rebalance instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import numpy as np
from numpy.typing import ArrayLike

from facial_demographics.datasets.records import Record

#: Coarse life-stage bands used to stratify splits and weight classes.
AGE_BANDS: tuple[str, ...] = ("0-12", "13-19", "20-39", "40-59", "60-79", "80+")
_BAND_EDGES = np.array([13, 20, 40, 60, 80])
UNKNOWN = "unknown"
WeightMode = Literal["balanced", "sqrt", "none"]
LabelKind = Literal["age_band", "age_bucket5", "gender", "age_band_gender"]


@overload
def age_bucket5(age: float) -> int: ...
@overload
def age_bucket5(age: np.ndarray) -> np.ndarray: ...
def age_bucket5(age: float | np.ndarray) -> int | np.ndarray:
    """The seed report's 25-year bucket, ``min(age // 25, 4)`` (negative ages go to 0)."""
    bucket = np.clip(np.floor_divide(np.asarray(age, dtype=float), 25), 0, 4).astype(int)
    return bucket if bucket.ndim else int(bucket)


@overload
def age_band(age: float) -> int: ...
@overload
def age_band(age: np.ndarray) -> np.ndarray: ...
def age_band(age: float | np.ndarray) -> int | np.ndarray:
    """Index into :data:`AGE_BANDS` (0-12, 13-19, 20-39, 40-59, 60-79, 80+)."""
    band = np.searchsorted(_BAND_EDGES, np.floor(np.asarray(age, dtype=float)), side="right")
    return band if band.ndim else int(band)


def age_band_label(age: float | None) -> str:
    return UNKNOWN if age is None else AGE_BANDS[age_band(age)]


def filter_age_range(records: Sequence[Record], lo: float, hi: float) -> list[Record]:
    """Records whose age is known and within ``lo..hi`` inclusive (the seed model used 21..75)."""
    return [r for r in records if r.age is not None and lo <= r.age <= hi]


def record_labels(records: Sequence[Record], by: LabelKind = "age_band") -> np.ndarray:
    """Integer class labels for records; an unknown age or gender gets its own last class.

    ``age_band`` has 7 classes (6 bands + unknown), ``age_bucket5`` 6, ``gender`` 3,
    ``age_band_gender`` 21 (band * 3 + gender).
    """
    def band(r: Record) -> int:
        return len(AGE_BANDS) if r.age is None else age_band(r.age)

    def bucket(r: Record) -> int:
        return 5 if r.age is None else age_bucket5(r.age)

    def gender(r: Record) -> int:
        return 2 if r.gender is None else r.gender

    if by == "age_band":
        values = [band(r) for r in records]
    elif by == "age_bucket5":
        values = [bucket(r) for r in records]
    elif by == "gender":
        values = [gender(r) for r in records]
    elif by == "age_band_gender":
        values = [band(r) * 3 + gender(r) for r in records]
    else:
        raise ValueError(f"unknown label kind {by!r}")
    return np.asarray(values, dtype=int)


def class_weights(labels: ArrayLike, n_classes: int | None = None, *,
                  mode: WeightMode = "balanced") -> np.ndarray:
    """Per-class loss weights: ``balanced`` is sklearn's ``n / (k * count)`` over the k present classes.

    ``sqrt`` is its square root (a gentler push), ``none`` all ones. Absent classes get weight 0.
    """
    y = np.asarray(labels, dtype=int).reshape(-1)
    if y.size and y.min() < 0:
        raise ValueError(f"class labels must be >= 0, got {int(y.min())}")
    k_total = int(y.max()) + 1 if n_classes is None and y.size else (n_classes or 0)
    if y.size and y.max() >= k_total:
        raise ValueError(f"label {int(y.max())} does not fit n_classes={k_total}")
    counts = np.bincount(y, minlength=k_total).astype(float)
    present = counts > 0
    weights = np.zeros(k_total)
    if mode == "none":
        weights[present] = 1.0
        return weights
    if mode not in ("balanced", "sqrt"):
        raise ValueError(f"unknown weight mode {mode!r} (expected balanced, sqrt or none)")
    weights[present] = y.size / (present.sum() * counts[present])
    return np.sqrt(weights) if mode == "sqrt" else weights


def sample_weights(records_or_labels: Sequence[Record] | ArrayLike, *, by: LabelKind = "age_band",
                   mode: WeightMode = "balanced") -> np.ndarray:
    """Per-sample weights (mean 1) that make every class equally likely in a weighted sampler.

    Pass records (labelled ``by``) or integer labels; training feeds the result to torch's
    ``WeightedRandomSampler``.
    """
    if isinstance(records_or_labels, Sequence) and records_or_labels and isinstance(
            records_or_labels[0], Record):
        labels = record_labels(list(records_or_labels), by)  # type: ignore[arg-type]
    else:
        labels = np.asarray(records_or_labels, dtype=int).reshape(-1)
    if labels.size == 0:
        return np.zeros(0)
    per_sample = class_weights(labels, mode=mode)[labels]
    return per_sample / per_sample.mean()
