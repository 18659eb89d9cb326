"""Interval calibration on the validation split: coverage moves to the target, the bundle stays valid."""

from __future__ import annotations

from pathlib import Path

from facial_demographics.model import ModelBundle
from facial_demographics.training.calibrate import calibrate_bundle

from tests_support import copy_bundle, simple_cache


def test_calibration_hits_the_target_on_val(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    cache = simple_cache(tmp_path / "cache", 64, 200)
    cal = calibrate_bundle(bundle, cache, cache / "split.csv", target=0.5)
    assert cal.faces == 195  # the test rows are not used
    assert abs(cal.coverage_after - 0.5) <= abs(cal.coverage_before - 0.5)
    assert abs(cal.coverage_after - 0.5) < 0.1
    loaded = ModelBundle.load(bundle)  # hash still valid, temperature recorded
    assert loaded.manifest["heads"]["age"]["temperature"] == cal.temperature
    assert loaded.manifest["training"]["interval_calibration"]["split"] == "val"
