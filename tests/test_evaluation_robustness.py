"""Robustness to picture quality: the perturbations, the shift/flip bookkeeping and the CLI, on a real face
and the bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facial_demographics.alignment import align
from facial_demographics.cli import app
from facial_demographics.detection import FaceDetector
from facial_demographics.evaluation.robustness import PERTURBATIONS, perturb, robustness
from facial_demographics.model import AgeGenderModel

from tests_support import simple_cache


@pytest.fixture(scope="module")
def real_faces(astronaut: np.ndarray) -> np.ndarray:
    """12 aligned crops of the astronaut at the bundled model's size: shifted by a few pixels, some mirrored."""
    model = AgeGenderModel()
    det = FaceDetector().detect(astronaut)[0]
    face = align(astronaut, det, model.bundle.alignment).image
    crops = [np.roll(face, (dy, dx), axis=(0, 1)) for dy in (-2, 0, 2) for dx in (-2, 2)]
    return np.stack(crops + [c[:, ::-1] for c in crops])


def test_every_perturbation_keeps_shape_and_changes_pixels(real_faces: np.ndarray) -> None:
    assert perturb(real_faces, "clean") is real_faces
    for name in PERTURBATIONS:
        out = perturb(real_faces[:2], name)
        assert out.shape == (2, *real_faces.shape[1:]) and out.dtype == np.uint8, name
        assert np.abs(out.astype(int) - real_faces[:2]).mean() > 0.2, name
    with pytest.raises(ValueError, match="unknown perturbation 'fog'"):
        perturb(real_faces, "fog")


def test_noise_is_the_same_whichever_batch_a_face_is_in(real_faces: np.ndarray) -> None:
    alone = perturb(real_faces[3:4], "noise σ8")
    assert np.array_equal(perturb(real_faces, "noise σ8")[3:4], alone)


def test_rows_measure_accuracy_and_movement(real_faces: np.ndarray) -> None:
    model = AgeGenderModel()
    ages = np.full(len(real_faces), 36.0)
    genders = np.ones(len(real_faces))
    genders[0] = np.nan  # an unknown gender is left out of the accuracy
    rows = robustness({"a": model, "b": model}, real_faces, ages, genders,
                      perturbations=("clean", "blur σ2", "downscale ¼"))
    assert [(r.model, r.perturbation) for r in rows] == [
        ("a", "clean"), ("b", "clean"), ("a", "blur σ2"), ("b", "blur σ2"), ("a", "downscale ¼"),
        ("b", "downscale ¼")]
    clean = rows[0]
    pred = model.predict(real_faces)
    assert clean.mae == pytest.approx(np.mean(np.abs(pred.age - 36.0)))
    assert clean.gender_accuracy == pytest.approx(np.mean(pred.p_female[1:] >= 0.5))
    assert clean.mean_age_shift == 0.0 and clean.gender_flip_rate == 0.0
    blurred = model.predict(perturb(real_faces, "blur σ2"))
    assert rows[2].mean_age_shift == pytest.approx(np.mean(np.abs(blurred.age - pred.age)))
    assert rows[2].mean_age_shift > 0
    assert rows[2] == rows[3].__class__(**{**rows[3].__dict__, "model": "a"})  # same model, same numbers


def test_cli_writes_table_json_and_plot(real_faces: np.ndarray, tmp_path: Path) -> None:
    cache = simple_cache(tmp_path / "cache", real_faces.shape[1], len(real_faces), faces=real_faces)
    out = tmp_path / "rob"
    result = CliRunner().invoke(app, ["robustness", "--cache", str(cache), "--split-file", str(cache / "split.csv"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "robustness.json").read_text())
    assert report["faces"] == len(real_faces) - 5  # val rows only
    assert {r["perturbation"] for r in report["rows"]} == {"clean", *PERTURBATIONS}
    assert (out / "robustness.png").stat().st_size > 10_000


def test_cli_names_the_problem(tiny_bundle: Path, real_faces: np.ndarray, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["robustness", "--cache", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "not an aligned-face cache (faces.npy missing)" in missing.output
    cache = simple_cache(tmp_path / "cache", real_faces.shape[1], 8, faces=real_faces[:8])
    wrong_size = runner.invoke(app, ["robustness", "-m", str(tiny_bundle), "--cache", str(cache),
                                     "--split-file", str(cache / "split.csv")])
    assert wrong_size.exit_code == 2 and "takes 64 px faces" in wrong_size.output
