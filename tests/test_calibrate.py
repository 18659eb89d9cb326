"""Interval and gender calibration on the validation split: each moves toward its target, the bundle stays valid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facial_demographics.errors import InvalidValueError
from facial_demographics.labels import GENDER_AGE_BAND_EDGES, GENDER_AGE_BANDS
from facial_demographics.manifest import BundleError, BundleSpec, GenderHead
from facial_demographics.model import AgeGenderModel, ModelBundle
from facial_demographics.training.calibrate import calibrate_bundle, calibrate_gender, fit_gender_temperatures

from tests_support import copy_bundle, simple_cache


def test_calibration_hits_the_target_on_val(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    cache = simple_cache(tmp_path / "cache", 64, 200)
    cal = calibrate_bundle(bundle, cache, cache / "split.csv", target=0.5, by_band=False)
    assert cal.faces == 195  # the test rows are not used
    assert abs(cal.coverage_after - 0.5) <= abs(cal.coverage_before - 0.5)
    assert abs(cal.coverage_after - 0.5) < 0.1
    loaded = ModelBundle.load(bundle)  # hash still valid, temperature recorded
    assert loaded.spec.age.temperature == cal.temperature
    assert loaded.manifest["training"]["interval_calibration"]["split"] == "val"


def test_gender_temperatures_recover_each_bands_miscalibration() -> None:
    # Labels drawn from sigmoid(z); children's logits are shown 3x too sharp, adults' 2x too soft.
    # The fitted temperatures undo both, and the argmax (the predicted gender) never changes.
    rng = np.random.default_rng(0)
    n = 4000
    ages = np.where(rng.random(n) < 0.5, rng.uniform(0, 5, n), rng.uniform(25, 35, n))
    z = rng.normal(0, 2.5, n)
    is_female = rng.random(n) < 1 / (1 + np.exp(-z))
    scale = np.where(ages < 6, 3.0, 0.5)
    logits = np.stack([np.zeros(n), z * scale], axis=1)  # columns: male, female
    head = GenderHead("gender", ("male", "female"))
    fitted, fits = fit_gender_temperatures(head, logits, ages, is_female)
    by_band = {f.band: f for f in fits}
    assert abs(by_band["0-5"].temperature - 3.0) < 0.35 and abs(by_band["20-39"].temperature - 0.5) < 0.06
    assert by_band["13-19"].faces == 0 and by_band["13-19"].temperature == 1.0  # nothing to fit on
    assert by_band["0-5"].ece_after < by_band["0-5"].ece_before
    assert by_band["20-39"].ece_after < by_band["20-39"].ece_before
    p = fitted.p_female(logits, ages)
    assert ((p >= 0.5) == (logits[:, 1] >= 0)).all()
    with pytest.raises(ValueError, match="needs the predicted ages"):
        fitted.p_female(logits)


def test_gender_calibration_round_trips_through_the_manifest(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    cache = simple_cache(tmp_path / "cache", 64, 200)
    index = pd.read_parquet(cache / "index.parquet")
    index["gender"] = (np.arange(len(index)) % 3 == 0).astype(float)  # a third women, so there is a signal
    index.to_parquet(cache / "index.parquet")
    cal = calibrate_gender(bundle, cache, cache / "split.csv")
    assert cal.faces == 195 and len(cal.bands) == len(GENDER_AGE_BANDS)
    loaded = ModelBundle.load(bundle)
    gender = loaded.spec.gender
    assert gender is not None and gender.temperatures == tuple(f.temperature for f in cal.bands)
    assert gender.age_edges == tuple(float(e) for e in GENDER_AGE_BAND_EDGES)
    assert loaded.manifest["training"]["gender_calibration"]["bands_by"] == "predicted age"
    faces = np.asarray(np.load(cache / "faces.npy", mmap_mode="r")[:8])
    pred = AgeGenderModel(loaded).predict(faces)  # the calibrated head is applied at inference
    raw = AgeGenderModel(loaded).raw(faces)[gender.output].astype(np.float64)
    assert np.allclose(pred.p_female, gender.p_female(raw, pred.age))
    with pytest.raises(InvalidValueError, match="test split"):
        calibrate_gender(bundle, cache, cache / "split.csv", split="test")


def test_manifest_refuses_a_malformed_gender_calibration(tiny_bundle: Path) -> None:
    doc = json.loads((tiny_bundle / "manifest.json").read_text())
    doc["heads"]["gender"]["calibration"] = {"age_edges": [6, 13], "temperatures": [1.0, 2.0]}
    with pytest.raises(BundleError, match="one more temperature than edges"):
        BundleSpec.parse(doc)
    doc["heads"]["gender"]["calibration"] = {"age_edges": [6], "temperatures": [1.0, -2.0]}
    with pytest.raises(BundleError, match="positive"):
        BundleSpec.parse(doc)


def test_calibrate_command_writes_a_copy_and_refuses_a_non_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facial_demographics.cli import app

    cache = simple_cache(tmp_path / "cache", 64, 120)
    runner = CliRunner()
    out = tmp_path / "calibrated"
    result = runner.invoke(app, ["calibrate", str(tiny_bundle), "--cache", str(cache), "--split",
                                 str(cache / "split.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "age interval: temperature" in result.output and "0-5" in result.output
    assert ModelBundle.load(out).spec.gender.temperatures  # type: ignore[union-attr]
    assert "calibration" not in json.loads((tiny_bundle / "manifest.json").read_text())["heads"]["gender"]
    again = runner.invoke(app, ["calibrate", str(tiny_bundle), "--cache", str(cache), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(app, ["calibrate", str(tmp_path), "--cache", str(cache)])
    assert bad.exit_code == 2 and "not a model bundle directory" in bad.output
