"""The release rule and the model-0.3 targets, on metrics computed from generated prediction tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facial_demographics.evaluation.metrics import compute_metrics
from facial_demographics.evaluation.release import V03_TARGETS, release_checks, target_checks

ROOT = Path(__file__).resolve().parents[1]
RACES = ("White", "Black", "Asian", "Indian", "Others")


def _faces(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Labelled faces: ages 1-90, both genders, five races."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "true_age": rng.integers(1, 91, n).astype(float),
        "true_gender": rng.choice(["male", "female"], n),
        "race": rng.choice(RACES, n),
    })


def _predict(faces: pd.DataFrame, *, age_error: float, gender_error: float, seed: int,
             error_scale: dict[str, float] | None = None) -> pd.DataFrame:
    """A predictions frame whose mean absolute age error is about ``age_error`` (times ``error_scale`` for
    the named races) and whose gender is wrong for a ``gender_error`` share of faces."""
    rng = np.random.default_rng(seed)
    n = len(faces)
    err = rng.exponential(age_error, n) * rng.choice([-1.0, 1.0], n)
    for race, scale in (error_scale or {}).items():
        err = np.where(faces["race"] == race, err * scale, err)
    pred_age = np.clip(faces["true_age"] + err, 0, 100)
    wrong = rng.random(n) < gender_error
    other = faces["true_gender"].map({"male": "female", "female": "male"})
    pred_gender = np.where(wrong, other, faces["true_gender"])
    p_female = np.where(pred_gender == "female", 0.9, 0.1)
    return faces.assign(pred_age=pred_age, age_low=pred_age - 5, age_high=pred_age + 5,
                        pred_gender=pred_gender, p_female=p_female, status="ok")


def _metrics(df: pd.DataFrame) -> dict:
    return compute_metrics(df, n_resamples=0)


def test_a_better_model_passes_every_release_check() -> None:
    faces = _faces()
    reference = _metrics(_predict(faces, age_error=5.0, gender_error=0.08, seed=1))
    candidate = _metrics(_predict(faces, age_error=4.0, gender_error=0.04, seed=1))
    checks = release_checks(candidate, reference)
    names = [c.name for c in checks]
    assert names[:2] == ["age MAE", "gender accuracy"]
    assert {f"race {r} MAE" for r in RACES} | {"gender male MAE", "gender female MAE"} <= set(names)
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    assert checks[0].margin == pytest.approx(reference["mae"] - candidate["mae"])


def test_one_group_worse_by_more_than_the_tolerance_blocks_the_release() -> None:
    faces = _faces()
    reference = _metrics(_predict(faces, age_error=5.0, gender_error=0.08, seed=1))
    # Better overall, but Black faces get about 1.5 years worse: the overall rule passes, the group one fails.
    candidate = _metrics(_predict(faces, age_error=4.0, gender_error=0.04, seed=1, error_scale={"Black": 1.6}))
    checks = {c.name: c for c in release_checks(candidate, reference)}
    assert checks["age MAE"].passed and checks["gender accuracy"].passed
    black = checks["race Black MAE"]
    assert not black.passed and black.margin is not None and black.margin < 0
    assert black.limit == pytest.approx(reference["by_race"]["Black"]["mae"] + 0.2)
    assert checks["race White MAE"].passed


def test_equal_is_not_better_and_missing_metrics_fail() -> None:
    faces = _faces()
    metrics = _metrics(_predict(faces, age_error=5.0, gender_error=0.08, seed=1))
    checks = {c.name: c for c in release_checks(metrics, metrics)}
    assert not checks["age MAE"].passed and not checks["gender accuracy"].passed  # must strictly improve
    assert checks["race Asian MAE"].passed  # within the tolerance
    no_race = {k: v for k, v in metrics.items() if k != "by_race"}
    failed = {c.name: c for c in release_checks(no_race, metrics)}["race Asian MAE"]
    assert failed.value is None and not failed.passed


def test_different_images_are_refused() -> None:
    reference = _metrics(_predict(_faces(600), age_error=5.0, gender_error=0.08, seed=1))
    candidate = _metrics(_predict(_faces(500), age_error=4.0, gender_error=0.04, seed=1))
    with pytest.raises(ValueError, match="not the same images"):
        release_checks(candidate, reference)


def test_targets_say_by_how_much_each_is_missed() -> None:
    metrics = _metrics(_predict(_faces(), age_error=5.0, gender_error=0.08, seed=1))
    checks = {c.name: c for c in target_checks(metrics)}
    assert len(checks) == len(V03_TARGETS)
    mae = checks["age MAE"]
    assert mae.value == pytest.approx(metrics["mae"]) and not mae.passed
    assert mae.margin == pytest.approx(4.0 - metrics["mae"])
    worst = max(v["gender_ece"] for k, v in metrics["gender_by_age_band"].items() if k != "20+")
    assert checks["gender ECE, worst age band"].value == pytest.approx(worst)
    assert checks["children 0-12 MAE"].value == pytest.approx(metrics["by_age_band"]["0-12"]["mae"])
    # The interval is ±5 years around errors of ~5: coverage is a real number checked on both sides.
    low, high = checks["80 % interval coverage, low end"], checks["80 % interval coverage, high end"]
    assert low.value == high.value == pytest.approx(metrics["interval_coverage"])


def test_script_prints_tables_writes_json_and_exits_by_the_rule(tmp_path: Path) -> None:
    faces = _faces()
    paths = {}
    for name, error in (("ref", 5.0), ("good", 4.0), ("bad", 6.0)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(_metrics(_predict(faces, age_error=error, gender_error=0.05,
                                                            seed=1 if name != "ref" else 2))))
    script = ROOT / "benchmarks" / "release_gate.py"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=False)

    good = run("--candidate", str(paths["good"]), "--reference", str(paths["ref"]),
               "--targets", f"good={paths['good']}", "--json", str(tmp_path / "out.json"))
    assert good.returncode == 0, good.stderr
    assert "release: yes" in good.stdout and "## Targets: good" in good.stdout
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["release"]["passed"] is True and len(written["targets"]["good"]) == len(V03_TARGETS)
    bad = run("--candidate", str(paths["bad"]), "--reference", str(paths["ref"]))
    assert bad.returncode == 1 and "release: no" in bad.stdout and "| age MAE |" in bad.stdout
    broken = run("--candidate", str(tmp_path / "missing.json"), "--reference", str(paths["ref"]))
    assert broken.returncode != 0 and "missing.json: cannot read metrics.json" in broken.stderr
