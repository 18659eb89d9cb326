"""Metric unit tests on hand-made cases whose answers are worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from facial_demographics.evaluation import metrics as M


def frame(rows: list[dict]) -> pd.DataFrame:
    base = {"true_age": np.nan, "true_gender": "", "race": "", "pred_age": np.nan, "age_low": np.nan,
            "age_high": np.nan, "pred_gender": "", "p_female": np.nan, "status": "ok"}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_age_metrics_known_values() -> None:
    true = np.array([10, 20, 30, 40])
    pred = np.array([12, 18, 30, 50])  # errors +2, -2, 0, +10
    m = M.age_metrics(true, pred, true - 1, true + 1)
    assert m["mae"] == pytest.approx(3.5)
    assert m["rmse"] == pytest.approx(math.sqrt((4 + 4 + 0 + 100) / 4))
    assert m["bias"] == pytest.approx(2.5)
    assert m["cs1"] == pytest.approx(0.25)  # only the exact hit
    assert m["cs5"] == pytest.approx(0.75)
    assert m["cs10"] == pytest.approx(1.0)  # |10| <= 10 counts
    lo, hi = m["mae_ci95"]
    assert lo <= 3.5 <= hi and lo >= 0 and hi <= 10


def test_bucket5_accuracy_and_confusion() -> None:
    true = np.array([10, 30, 60, 80, 110, 24.9])
    pred = np.array([20, 20, 70, 99, 130, 25.0])  # buckets: 0/0, 1/0, 2/2, 3/3, 4/4, 0/1
    m = M.age_metrics(true, pred, np.full(6, np.nan), np.full(6, np.nan))
    assert m["bucket5_accuracy"] == pytest.approx(4 / 6)
    expected = np.zeros((5, 5), int)
    for t, p in [(0, 0), (1, 0), (2, 2), (3, 3), (4, 4), (0, 1)]:
        expected[t, p] += 1
    assert m["bucket5_confusion"] == expected.tolist()
    assert m["interval_coverage"] is None  # no intervals given


def test_interval_coverage_inclusive_bounds() -> None:
    true = np.array([20, 30, 40, 50])
    low = np.array([20, 31, 30, 10])  # 20 on the lower edge: in; 30 < 31: out
    high = np.array([25, 35, 40, 49])  # 40 on the upper edge: in; 50 > 49: out
    m = M.age_metrics(true, true.astype(float), low, high)
    assert m["interval_coverage"] == pytest.approx(0.5)


def test_bootstrap_ci_is_seeded_and_shrinks_with_data() -> None:
    rng = np.random.default_rng(1)
    small = rng.exponential(5, 50)
    big = rng.exponential(5, 5000)
    a = M.bootstrap_mean_ci(small, seed=3)
    b = M.bootstrap_mean_ci(big, seed=3)
    assert None not in a and None not in b
    assert a == M.bootstrap_mean_ci(small, seed=3)
    assert a != M.bootstrap_mean_ci(small, seed=4)
    assert a[0] < small.mean() < a[1]
    assert (b[1] - b[0]) < (a[1] - a[0])  # type: ignore[operator]
    assert M.bootstrap_mean_ci(np.array([2.0, 2.0, 2.0])) == (2.0, 2.0)
    assert M.bootstrap_mean_ci(np.array([])) == (None, None)


def test_roc_auc_rank_formula() -> None:
    # Pairs (pos, neg): (0.35 vs 0.1 ok) (0.35 vs 0.4 wrong) (0.8 vs both ok) -> 3/4.
    assert M.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert M.roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)  # tie counts half
    assert M.roc_auc(np.array([1, 1]), np.array([0.2, 0.9])) is None


def test_gender_metrics_known_confusion() -> None:
    true = ["male", "male", "female", "female", "female"]
    pred = ["male", "female", "female", "female", "male"]
    p = np.array([0.2, 0.7, 0.9, 0.6, 0.3])
    m = M.gender_metrics(true, pred, p)
    assert m["gender_confusion"] == [[1, 1], [1, 2]]
    assert m["gender_accuracy"] == pytest.approx(3 / 5)
    assert m["gender_recall"] == {"male": pytest.approx(0.5), "female": pytest.approx(2 / 3)}
    # Female scores 0.9, 0.6, 0.3 vs male 0.2, 0.7: wins 2 + 1 + 1 = 4 of 6 pairs.
    assert m["gender_auc"] == pytest.approx(4 / 6)


def test_ece_known_value_and_bins() -> None:
    # Bin 0: mean p 0.05, half female -> |0.05-0.5| * 2/4; bin 9: mean p 0.95, all female -> 0.05 * 2/4.
    ece, bins = M.reliability(np.array([0, 1, 1, 1]), np.array([0.05, 0.05, 0.95, 0.95]))
    assert ece == pytest.approx(0.225 + 0.025)
    assert len(bins) == 10 and [b.n for b in bins] == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins[0].frac_female == pytest.approx(0.5) and bins[1].mean_p is None
    # p = 1.0 falls in the last bin; perfectly calibrated bins give 0.
    ece, bins = M.reliability(np.array([1, 0, 0, 0, 1]), np.array([0.25, 0.25, 0.25, 0.25, 1.0]))
    assert ece == pytest.approx(0.0) and bins[9].n == 1


def test_by_age_band_mae_bias_and_coverage() -> None:
    df = frame([
        {"true_age": 10, "pred_age": 14, "age_low": 5, "age_high": 12},  # 0-12: +4, covered
        {"true_age": 5, "pred_age": 3, "age_low": 1, "age_high": 4},  # 0-12: -2, not covered
        {"true_age": 85, "pred_age": 70, "age_low": 60, "age_high": 90},  # 80+: -15, covered
        {"true_age": 30, "pred_age": 99, "status": "no_face"},  # ignored: no prediction
    ])
    bands = M.by_age_band(df)
    assert bands["0-12"]["n"] == 2 and bands["0-12"]["mae"] == pytest.approx(3)
    assert bands["0-12"]["bias"] == pytest.approx(1) and bands["0-12"]["interval_coverage"] == 0.5
    assert bands["80+"]["bias"] == pytest.approx(-15)
    assert bands["20-39"] == {"n": 0, "mae": None, "bias": None, "rmse": None, "cs5": None,
                              "interval_coverage": None}


def test_gaps_sentence_and_small_groups() -> None:
    groups = {
        "White": {"n": 40, "mae": 4.1, "gender_accuracy": 0.9},
        "Black": {"n": 30, "mae": 5.6, "gender_accuracy": 0.8},
        "Others": {"n": 3, "mae": 20.0, "gender_accuracy": 0.1},  # too small to compare
    }
    g = M.gaps(groups, "race", min_group_size=10)
    assert g["mae"]["gap"] == pytest.approx(1.5)
    assert g["mae"]["min_group"] == "White" and g["mae"]["max_group"] == "Black"
    assert g["mae"]["sentence"] == ("MAE by race ranges from 4.10 (White, n=40) to 5.60 (Black, n=30): "
                                    "gap 1.50 years.")
    assert "10.0 percentage points" in g["gender_accuracy"]["sentence"]
    assert g["bias"]["gap"] is None and "fewer than two groups" in g["bias"]["sentence"]


def test_compute_metrics_counts_groups_and_json_ready() -> None:
    import json

    rows = []
    for i in range(12):
        rows.append({"true_age": 20 + i, "pred_age": 22 + i, "age_low": 15 + i, "age_high": 25 + i,
                     "true_gender": "male", "pred_gender": "male", "p_female": 0.1, "race": "White"})
        rows.append({"true_age": 20 + i, "pred_age": 26 + i, "age_low": 25 + i, "age_high": 30 + i,
                     "true_gender": "female", "pred_gender": "male" if i < 3 else "female",
                     "p_female": 0.4 if i < 3 else 0.8, "race": "Black"})
    rows += [{"status": "no_face", "true_age": 50, "true_gender": "male"},
             {"status": "unreadable", "true_age": 50, "true_gender": "male"},
             {"status": "fallback", "true_age": 50, "pred_age": 50, "true_gender": "male",
              "pred_gender": "male", "p_female": 0.2, "race": "White", "age_low": 40, "age_high": 60}]
    m = M.compute_metrics(frame(rows), n_resamples=200)
    assert m["counts"] == {"images": 27, "evaluated": 25, "no_face": 1, "fallback": 1, "unreadable": 1}
    assert m["n_age"] == 25
    assert m["mae"] == pytest.approx((12 * 2 + 12 * 6 + 0) / 25)
    assert m["by_race"]["White"]["mae"] == pytest.approx(24 / 13)
    assert m["by_race"]["Black"]["mae"] == pytest.approx(6)
    assert m["by_gender"]["female"]["gender_accuracy"] == pytest.approx(9 / 12)
    assert m["gaps"]["race"]["mae"]["gap"] == pytest.approx(6 - 24 / 13)
    assert m["interval_coverage"] == pytest.approx(13 / 25)
    assert m["gender_auc"] == pytest.approx(1.0)  # every woman scored above every man
    json.dumps(m, allow_nan=False)  # no NaN leaks into metrics.json


def test_compute_metrics_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="unknown status"):
        M.compute_metrics(frame([{"status": "weird"}]))


def test_no_race_column_gives_no_race_breakdown() -> None:
    df = frame([{"true_age": 30, "pred_age": 31, "true_gender": "male", "pred_gender": "male",
                 "p_female": 0.3}])
    m = M.compute_metrics(df, n_resamples=50)
    assert m["by_race"] == {} and "race" not in m["gaps"]
