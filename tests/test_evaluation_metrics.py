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


def test_age_standardised_mae_removes_the_age_mix_effect() -> None:
    # Both groups have the same error at the same age (1 year at 10, 9 years at 50); A is mostly
    # children, B mostly adults. Raw MAE differs widely; standardised to the pooled mix it is equal.
    rows = []
    for race, n_child, n_adult in (("A", 9, 1), ("B", 1, 9)):
        rows += [{"true_age": 10, "pred_age": 11, "race": race}] * n_child
        rows += [{"true_age": 50, "pred_age": 59, "race": race}] * n_adult
    df = frame(rows)
    weights = M.band_weights(df)
    assert weights["0-12"] == pytest.approx(0.5) and weights["40-59"] == pytest.approx(0.5)
    groups = M.by_group(df, "race", n_resamples=0, weights=weights)
    assert groups["A"]["mae"] == pytest.approx((9 * 1 + 9) / 10)  # 1.8
    assert groups["B"]["mae"] == pytest.approx((1 + 9 * 9) / 10)  # 8.2
    for g in ("A", "B"):  # 0.5 * 1 + 0.5 * 9
        assert groups[g]["mae_age_std"] == pytest.approx(5.0)
        assert groups[g]["mae_age_std_missing"] == []
    gap = M.gaps(groups, "race", min_group_size=5)
    assert gap["mae"]["gap"] == pytest.approx(6.4) and gap["mae_age_std"]["gap"] == pytest.approx(0.0)


def test_age_standardised_mae_spreads_a_missing_band_over_the_others() -> None:
    # Reference: one third each of 0-12, 20-39, 40-59; the group has no 20-39 face, so its 0-12 (MAE 2)
    # and 40-59 (MAE 6) bands share the weight equally: (1/3 * 2 + 1/3 * 6) / (2/3) = 4.
    ref = M.band_weights(frame([{"true_age": a, "pred_age": a} for a in (5, 30, 45)]))
    part = frame([{"true_age": 5, "pred_age": 7}, {"true_age": 45, "pred_age": 51}])
    out = M.age_standardised_mae(part, ref)
    assert out["mae_age_std"] == pytest.approx(4.0) and out["mae_age_std_missing"] == ["20-39"]
    assert M.age_standardised_mae(frame([]).reindex(columns=part.columns), ref)["mae_age_std"] is None


def test_gender_by_age_band_accuracy_confidence_and_ece() -> None:
    # Ages 0-5: 4 faces shown at 0.9 for the predicted gender, 2 of them right -> accuracy 0.5,
    # confidence 0.9, over-confident by 0.4. Adults (30): 4 faces at 0.8 for the right gender.
    rows = [{"true_age": 3, "true_gender": t, "pred_gender": "female", "p_female": 0.9}
            for t in ("female", "female", "male", "male")]
    rows += [{"true_age": 30, "true_gender": "male", "pred_gender": "male", "p_female": 0.2}] * 4
    m = M.compute_metrics(frame([{**r, "pred_age": r["true_age"]} for r in rows]), n_resamples=0,
                          min_group_size=1)
    kids, adults = m["gender_by_age_band"]["0-5"], m["gender_by_age_band"]["20+"]
    assert kids["n"] == 4 and kids["gender_accuracy"] == 0.5
    assert kids["mean_confidence"] == pytest.approx(0.9) and kids["overconfidence"] == pytest.approx(0.4)
    assert kids["gender_ece"] == pytest.approx(0.4)  # one bin: |0.9 - 0.5|
    assert adults["n"] == 4 and adults["gender_accuracy"] == 1.0
    assert adults["gender_ece"] == pytest.approx(0.2)  # P(female) 0.2 in a bin with no woman
    assert m["gender_by_age_band"]["6-12"]["n"] == 0 and m["gender_by_age_band"]["6-12"]["gender_ece"] is None
    words = m["gender_by_age_band_sentences"]
    assert words[0].startswith("Gender at ages 0-5 (n=4): 50.0 % correct, mean shown confidence 90.0 %, "
                               "over-confident by 40.0 points; ECE 0.400 (a perfectly calibrated model")
    assert m["gaps"]["age_band"]["gender_accuracy"]["gap"] == pytest.approx(0.5)
    assert set(m["gaps"]["age_band"]) == {"gender_accuracy", "gender_ece"}


def test_ece_noise_floor_shrinks_with_faces_and_matches_a_calibrated_model() -> None:
    rng = np.random.default_rng(3)
    small, large = rng.uniform(0, 1, 100), rng.uniform(0, 1, 10_000)
    floor_small, floor_large = M.ece_noise_floor(small), M.ece_noise_floor(large)
    assert floor_small is not None and floor_large is not None
    assert 0.05 < floor_small < 0.15 and floor_large < 0.02  # about 1/sqrt(n) scaling
    assert M.ece_noise_floor(small) == floor_small  # seeded
    assert M.ece_noise_floor(np.array([])) is None
    # Labels drawn from the probabilities themselves: the measured ECE sits near the floor.
    measured = [M.reliability(rng.random(100) < small, small)[0] for _ in range(100)]
    assert abs(float(np.median(measured)) - floor_small) < 0.015
