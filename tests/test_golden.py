"""The shipped model's answer on the bundled astronaut photo, pinned.

A retrained or re-exported default bundle changes its sha256, which fails here first: whoever ships a new
model updates these numbers on purpose (and the README and model card with them), instead of a bad
retrain passing every other test. Tolerances cover ONNX Runtime's run-to-run and CPU differences only.
"""

from __future__ import annotations

import pytest

from facial_demographics.commands.analyze import SAMPLE_PHOTO
from facial_demographics.model import ModelBundle
from facial_demographics.pipeline import FaceAnalyzer

SHIPPED_SHA256 = "9c7778c1af590271f25fb6538697cd5c42307d47c16f35e520872992daeaa507"


def test_bundled_model_is_the_pinned_one() -> None:
    bundle = ModelBundle.load()
    assert (bundle.spec.name, bundle.spec.version) == ("default", "0.2.0")
    assert bundle.spec.sha256["model.onnx"] == SHIPPED_SHA256


def test_astronaut_answer_is_unchanged() -> None:
    result = FaceAnalyzer().analyze(SAMPLE_PHOTO)
    assert result.ok and (result.width, result.height) == (512, 512)
    [face] = result.faces
    assert face.box == pytest.approx((179.35, 56.67, 271.52, 178.17), abs=0.5)
    assert face.score > 0.999
    assert face.landmarks[0] == pytest.approx((204.09, 100.63), abs=0.5)  # her right eye
    assert face.age == pytest.approx(36.38, abs=0.05)
    assert face.age_interval == pytest.approx((26.15, 48.89), abs=0.05)
    assert face.age_group == "25-49"
    assert face.gender == "female"
    assert face.gender_probability == pytest.approx(0.6539, abs=0.002)
