"""Loss terms: label distributions, masking of unknown labels, and each age head type."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from facial_demographics.labels import age_buckets
from facial_demographics.training.config import LossConfig
from facial_demographics.training.data import Labels, balanced_weights, per_dataset_gender_weights
from facial_demographics.training.losses import (
    MultiTaskLoss,
    age_loss,
    expected_age,
    gaussian_targets,
    gender_loss,
)
from facial_demographics.training.models import HeadSpec


def _labels(ages: list[float], genders: list[int]) -> Labels:
    return Labels(torch.tensor(ages), torch.tensor(genders), torch.ones(len(ages)))


def test_gaussian_targets_are_distributions_centred_on_the_age() -> None:
    t = gaussian_targets(torch.tensor([0.0, 37.0, 130.0]), 101, sigma=2.5)
    torch.testing.assert_close(t.sum(1), torch.ones(3))
    assert t.argmax(1).tolist() == [0, 37, 100]  # ages above the last bin are clipped to it


def test_distribution_loss_is_zero_at_the_target_and_grows_away_from_it() -> None:
    spec, cfg = HeadSpec("distribution", 101, True), LossConfig(sigma=2.0)
    ages = torch.tensor([25.0, 60.0])
    exact = gaussian_targets(ages, 101, 2.0).clamp_min(1e-30).log()  # logits whose softmax is the target
    assert float(age_loss(exact, ages, torch.ones(2), spec, cfg)) == pytest.approx(0.0, abs=1e-5)
    shifted = gaussian_targets(ages + 5, 101, 2.0).clamp_min(1e-30).log()
    assert float(age_loss(shifted, ages, torch.ones(2), spec, cfg)) > 1.0
    assert expected_age(exact, spec).tolist() == pytest.approx([25.0, 60.0], abs=0.01)


def test_mean_variance_penalises_spread_and_offset() -> None:
    spec, cfg = HeadSpec("mean_variance", 101, False), LossConfig(mean_weight=0.2, variance_weight=0.05)
    ages = torch.tensor([40.0])
    sharp = gaussian_targets(ages, 101, 1.0).clamp_min(1e-30).log()
    wide = gaussian_targets(ages, 101, 8.0).clamp_min(1e-30).log()
    off = gaussian_targets(ages + 10, 101, 1.0).clamp_min(1e-30).log()
    w = torch.ones(1)
    assert age_loss(sharp, ages, w, spec, cfg) < age_loss(wide, ages, w, spec, cfg)
    assert age_loss(sharp, ages, w, spec, cfg) < age_loss(off, ages, w, spec, cfg)


def test_unknown_labels_are_masked() -> None:
    spec, cfg = HeadSpec("distribution", 101, True), LossConfig()
    logits = torch.randn(3, 101, requires_grad=True)
    gender_logits = torch.randn(3, 2, requires_grad=True)
    parts = MultiTaskLoss(spec, cfg)(logits, gender_logits, _labels([30.0, math.nan, 50.0], [0, 1, -1]))
    parts.total.backward()
    assert logits.grad is not None and gender_logits.grad is not None
    assert torch.all(logits.grad[1] == 0) and torch.any(logits.grad[0] != 0)
    assert torch.all(gender_logits.grad[2] == 0) and torch.any(gender_logits.grad[1] != 0)
    none_known = gender_loss(gender_logits, torch.tensor([-1, -1, -1]), cfg)
    assert none_known.item() == 0.0


def test_buckets_and_regression_heads() -> None:
    cfg = LossConfig()
    ages = torch.tensor([10.0, 30.0, 110.0])
    buckets = HeadSpec("buckets5", 5, True)
    right = torch.full((3, 5), -10.0)
    right[[0, 1, 2], [0, 1, 4]] = 10.0
    assert float(age_loss(right, ages, torch.ones(3), buckets, cfg)) < 1e-3
    assert expected_age(right, buckets).tolist() == [12.0, 37.0, 105.0]
    weighted = age_loss(torch.zeros(3, 5), ages, torch.ones(3), buckets, cfg, torch.tensor([1.0, 2, 1, 1, 3]))
    assert float(weighted) == pytest.approx(math.log(5), rel=1e-5)  # uniform logits: CE is log 5 either way
    reg = HeadSpec("regression", 1, False)
    assert float(age_loss(torch.tensor([[12.0], [30.0], [100.0]]), ages, torch.ones(3), reg, cfg)) == (
        pytest.approx((2 + 0 + 10) / 3))


def test_balanced_weights_follow_sklearn() -> None:
    labels = age_buckets(torch.tensor([5.0, 10.0, 15.0, 30.0, math.nan]).double().numpy())
    assert labels.tolist() == [0, 0, 0, 1, -1]
    w = balanced_weights(labels, 5)
    assert w.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1), 0, 0, 0])


def test_flip_consistency_is_zero_for_a_mirror_symmetric_answer_and_grows_with_asymmetry() -> None:
    from facial_demographics.training.data import with_mirror
    from facial_demographics.training.losses import flip_consistency

    age = torch.randn(4, 101)
    gender = torch.randn(4, 2)
    assert flip_consistency(torch.cat([age, age]), torch.cat([gender, gender])).item() == pytest.approx(0.0, abs=1e-6)
    shifted = torch.roll(age, 5, dims=1)
    small = flip_consistency(torch.cat([age, age + 0.01 * torch.randn(4, 101)]), None)
    large = flip_consistency(torch.cat([age, shifted]), None)
    assert 0 < small.item() < large.item()
    with pytest.raises(ValueError, match="odd batch"):
        flip_consistency(torch.randn(3, 101), None)
    x = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 4)
    labels = Labels(torch.tensor([30.0, float("nan")]), torch.tensor([1, -1]), torch.ones(2))
    doubled, twice = with_mirror(x, labels)
    assert doubled.shape[0] == 4 and torch.equal(doubled[2], x[0].flip(-1))
    assert twice.gender.tolist() == [1, -1, 1, -1] and twice.teacher is None


def test_a_flip_consistency_run_trains_and_regression_heads_are_refused(tmp_path: Path) -> None:
    from facial_demographics.training.config import ConfigError, config_from_dict, load_config
    from facial_demographics.training.loop import train

    from tests_support import make_cache

    cache, split = make_cache(tmp_path, n=24, size=32)
    raw = load_config("tiny").to_dict()
    raw["data"].update(cache=str(cache), split=str(split), input_size=32, limit_batches=2)
    raw["train"].update(epochs=1, batch_size=8, tta_flip=False)
    raw["loss"]["flip_consistency"] = 1.0
    result = train(config_from_dict(raw), tmp_path / "run", progress=False, log=lambda _: None)
    assert (tmp_path / "run" / "best.pt").is_file() and result is not None
    raw["heads"]["age"] = "regression"
    with pytest.raises(ConfigError, match="flip_consistency"):
        config_from_dict(raw)


def test_per_dataset_gender_weights_even_out_each_dataset_and_keep_its_size() -> None:
    # dataset "a": 2 men, 2 women (already even); "b": 6 men, 1 woman, 1 unknown (like MORPH, mostly men)
    genders = np.array([0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, -1])
    sources = np.array(["a"] * 4 + ["b"] * 8)
    w = per_dataset_gender_weights(genders, sources)
    assert w[:4].tolist() == [1.0, 1.0, 1.0, 1.0]
    b_men, b_woman = w[4:10], w[10]
    assert b_men.sum() == pytest.approx(b_woman)  # the sexes weigh the same within "b"
    assert w[4:11].sum() == pytest.approx(7.0)  # "b" still weighs its 7 faces of known gender
    assert w[11] == 0.0  # no gender, no gender term
    assert per_dataset_gender_weights(np.array([0, 0]), np.array(["m", "m"])).tolist() == [1.0, 1.0]


def test_gender_loss_with_face_weights_is_their_weighted_mean() -> None:
    cfg = LossConfig(label_smoothing=0.0)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.3, 0.2]])
    genders = torch.tensor([0, 0, 1, -1])
    per = torch.nn.functional.cross_entropy(logits[:3], genders[:3], reduction="none")
    assert float(gender_loss(logits, genders, cfg, sample_weights=torch.ones(4))) == pytest.approx(
        float(gender_loss(logits, genders, cfg)))
    w = torch.tensor([0.5, 0.5, 3.0, 9.0])  # the unknown face's weight must not count
    assert float(gender_loss(logits, genders, cfg, sample_weights=w)) == pytest.approx(
        float((per * w[:3]).sum() / w[:3].sum()))
    classes = torch.tensor([1.0, 2.0])  # class weights multiply in, as F.cross_entropy's own mean does
    both = w[:3] * classes[genders[:3]]
    assert float(gender_loss(logits, genders, cfg, classes, w)) == pytest.approx(float((per * both).sum() / both.sum()))
