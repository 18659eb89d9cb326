"""The label vocabulary: one bucket rule for numpy, torch and single ages; bands; gender codes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facial_demographics import labels
from facial_demographics.labels import (
    AGE_BANDS,
    AGE_BUCKET_AGES,
    AGE_BUCKET_EDGES,
    AGE_GROUPS,
    FEMALE,
    GENDER_LABELS,
    MALE,
    age_band,
    age_bucket,
    age_buckets,
    age_group,
    gender_codes,
)


def _edge_ages(dtype: type) -> np.ndarray:
    """Every bucket edge, the float just below and just above it, and a spread of ordinary ages."""
    edges = np.array([0, 25, 50, 75, 100], dtype=dtype)
    near = np.concatenate([edges, np.nextafter(edges, dtype(-1)), np.nextafter(edges, dtype(200))])
    spread = np.random.default_rng(0).uniform(-5, 130, 2000).astype(dtype)
    return np.concatenate([near, spread, np.array([-3, 24.9, 116], dtype=dtype)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bucket_rule_is_the_seed_rule_for_numpy_torch_and_single_ages(dtype: type) -> None:
    ages = _edge_ages(dtype)
    seed_rule = [min(max(int(a // 25), 0), 4) for a in ages.tolist()]  # the seed report's age // 25
    assert age_buckets(ages).tolist() == seed_rule
    assert age_bucket(ages).dtype == dtype  # the array's own dtype, as the loss needs
    tensor = torch.from_numpy(ages)
    assert age_bucket(tensor).long().tolist() == seed_rule
    assert [age_group(float(a)) for a in ages] == [AGE_GROUPS[b] for b in seed_rule]


def test_unknown_and_infinite_ages() -> None:
    assert age_buckets([math.nan, math.inf, -math.inf, 30.0]).tolist() == [-1, 4, 0, 1]
    assert age_buckets([]).tolist() == []
    with pytest.raises(ValueError, match="no age group"):
        age_group(math.nan)


def test_bucket_edges_and_representative_ages_agree_with_the_rule() -> None:
    assert age_buckets(AGE_BUCKET_EDGES[:-1]).tolist() == list(range(len(AGE_GROUPS)))
    assert age_buckets(AGE_BUCKET_AGES).tolist() == list(range(len(AGE_GROUPS)))
    assert AGE_BUCKET_EDGES[-1] > AGE_BUCKET_AGES[-1]


def test_age_band_edges() -> None:
    ages = [-2, 0, 12, 12.9, 13, 19, 19.99, 20, 39, 40, 59, 60, 79, 80, 116]
    assert [age_band(a) for a in ages] == [
        "0-12", "0-12", "0-12", "0-12", "13-19", "13-19", "13-19", "20-39", "20-39", "40-59", "40-59", "60-79",
        "60-79", "80+", "80+"]
    assert set(AGE_BANDS) == {age_band(a) for a in ages}


def test_gender_codes() -> None:
    assert GENDER_LABELS[MALE] == "male" and GENDER_LABELS[FEMALE] == "female"
    codes = gender_codes(np.array([0.0, 1.0, np.nan]))
    assert codes.tolist() == [MALE, FEMALE, -1] and codes.dtype == np.int64


def test_age_band_indices_agree_with_age_band() -> None:
    ages = [-1.0, 0.0, 12.0, 12.9, 13.0, 19.0, 20.0, 39.0, 40.0, 79.0, 80.0, 116.0]
    assert [labels.AGE_BANDS[i] for i in labels.age_band_indices(ages)] == [labels.age_band(a) for a in ages]
