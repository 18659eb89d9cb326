"""Imbalance helpers on known cases: buckets, bands, class weights and sampler weights."""

from __future__ import annotations

import numpy as np
import pytest

from facial_demographics.datasets.imbalance import (
    AGE_BANDS,
    age_band,
    age_bucket5,
    class_weights,
    filter_age_range,
    record_labels,
    sample_weights,
)
from facial_demographics.datasets.records import FEMALE, MALE, Record


def test_age_bucket5_matches_seed_rule() -> None:
    ages = np.array([0, 24, 24.9, 25, 49, 50, 74, 75, 99, 100, 116, -3])
    expected = [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 0]
    assert age_bucket5(ages).tolist() == expected
    assert [age_bucket5(float(a)) for a in ages] == expected
    assert isinstance(age_bucket5(30.0), int)


def test_age_band_edges() -> None:
    ages = [0, 12, 12.9, 13, 19, 20, 39, 40, 59, 60, 79, 80, 116]
    assert [AGE_BANDS[age_band(a)] for a in ages] == [
        "0-12", "0-12", "0-12", "13-19", "13-19", "20-39", "20-39", "40-59", "40-59", "60-79", "60-79",
        "80+", "80+"]
    assert age_band(np.array(ages, dtype=float)).tolist() == [age_band(a) for a in ages]


def test_filter_age_range() -> None:
    records = [Record(path=str(a), key=str(a), age=a) for a in (20.0, 21.0, 50.0, 75.0, 75.5, None)]
    assert [r.age for r in filter_age_range(records, 21, 75)] == [21.0, 50.0, 75.0]


def test_class_weights_balanced_known_case() -> None:
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]  # counts 6, 2, 2; n=10, k=3
    weights = class_weights(labels)
    np.testing.assert_allclose(weights, [10 / 18, 10 / 6, 10 / 6])
    # Balanced weights make every class contribute the same total weight.
    counts = np.bincount(labels)
    np.testing.assert_allclose(weights * counts, [10 / 3] * 3)
    np.testing.assert_allclose(class_weights(labels, mode="sqrt"), np.sqrt(weights))
    np.testing.assert_allclose(class_weights(labels, mode="none"), [1, 1, 1])


def test_class_weights_absent_class_and_errors() -> None:
    weights = class_weights([0, 0, 2], n_classes=4)  # classes 1 and 3 absent; k = 2 present
    np.testing.assert_allclose(weights, [3 / 4, 0, 3 / 2, 0])
    with pytest.raises(ValueError, match="does not fit"):
        class_weights([0, 5], n_classes=3)
    with pytest.raises(ValueError, match=">= 0"):
        class_weights([-1, 0])
    with pytest.raises(ValueError, match="unknown weight mode"):
        class_weights([0, 1], mode="log")  # type: ignore[arg-type]


def test_sample_weights_balance_a_sampler() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    weights = sample_weights(labels)
    assert weights.mean() == pytest.approx(1.0)
    # Expected draws per class are equal under these weights.
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum())
    assert weights[0] == pytest.approx(10 / 90 * weights[-1])


def test_sample_weights_from_records() -> None:
    records = ([Record(path="", key=f"y{i}", age=25.0, gender=MALE) for i in range(6)]
               + [Record(path="", key=f"o{i}", age=70.0, gender=FEMALE) for i in range(2)]
               + [Record(path="", key="u", age=None, gender=None)])
    assert record_labels(records, "age_band").tolist() == [2] * 6 + [4] * 2 + [6]
    assert record_labels(records, "gender").tolist() == [0] * 6 + [1] * 2 + [2]
    assert record_labels(records, "age_band_gender").tolist() == [6] * 6 + [13] * 2 + [20]
    assert record_labels(records, "age_bucket5").tolist() == [1] * 6 + [2] * 2 + [5]
    weights = sample_weights(records, by="gender")
    np.testing.assert_allclose([weights[:6].sum(), weights[6:8].sum(), weights[8:].sum()], [3, 3, 3])
    assert sample_weights([]).size == 0
