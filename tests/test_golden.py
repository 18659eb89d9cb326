"""The shipped models' answers on the bundled astronaut photo, pinned.

A retrained, re-exported or re-quantised bundle changes its sha256, which fails here first: whoever ships a
new model updates these numbers on purpose (and the README and model card with them), instead of a bad
retrain passing every other test. Tolerances cover ONNX Runtime's run-to-run and CPU differences only.

Model 0.3.0 (issue 15): ``fp32`` is the float graph of the ``v03_teacher`` run (default.toml plus dlib's
face descriptors as a training-time teacher), which replaced 0.2.0 because it beat it on the validation
split in age MAE and gender accuracy with no race or gender group worse (``benchmarks/release_gate.py``).
The default is its INT8 quantisation, within 0.05 MAE and 0.3 gender points of it on validation (README,
"Speed and footprint"); ``fast`` is the INT8 graph without flip TTA. Each bundle's gender probability is
calibrated per predicted-age band on the validation split (``facial-demographics calibrate``). On this
portrait (about 36 years old when photographed) 0.2.0 answered 37.3 / 36.7 / 36.4 and P(female) 0.735 /
0.704 / 0.692; 0.3.0 answers younger and more surely female, below.

``seed`` is the report's own system (issue 19): five age classes, so its age is the argmax class's value and
its group is the class; on this portrait it answers the youngest class (the model card says how weak it is).
"""

from __future__ import annotations

import pytest

from facial_demographics.commands.analyze import SAMPLE_PHOTO
from facial_demographics.model import ModelBundle
from facial_demographics.pipeline import FaceAnalyzer

# name: (version, sha256 of model.onnx, precision, flip TTA, age, age interval, age group, P(female))
PINNED = {
    # Re-quantised with 7-bit weights (quantize.quantize_graph says why). INT8 kernels still differ by CPU:
    # pinned from an AVX2-only EPYC; an AVX-512 VNNI EPYC answers 34.38 (25.89-44.87), P(female) 0.9054 and
    # fast 33.30 (24.63-43.91), 0.9250, within INT8_TOLERANCE. The 8-bit graphs read her as 33.06 on one
    # and 25.59 on the other, far outside it.
    "default": ("0.3.0", "9535b1ca34cc8bd21e16f5907a2f25d2d4a3d0da75487309061b50dc86b7e163", "int8", True,
                34.23, (25.71, 44.56), "25-49", 0.9054),
    "fast": ("0.3.0", "7e9361a8b10ef36be2e05132744bc97d5629e364d3b1a14bfae16a0ba42f71c1", "int8", False,
             33.20, (24.58, 43.39), "25-49", 0.9229),
    "fp32": ("0.3.0", "7cbaaaf6c1ca05049705c2289f089c47bbf928d8e90d311855a0de643755ba95", "fp32", True,
             33.03, (24.69, 42.78), "25-49", 0.8803),
    "seed": ("0.2.0", "336f0d4830b76ceb0169d75a9b7ec7fdfdc16a2eb6bcf0986de09b7ac8c1ac32", "fp32", False,
             12.0, (4.66, 49.77), "0-24", 0.8253),
}


@pytest.mark.parametrize("name", list(PINNED))
def test_shipped_model_is_the_pinned_one(name: str) -> None:
    spec = ModelBundle.load(name).spec
    version, sha, precision, tta = PINNED[name][:4]
    assert (spec.name, spec.version, spec.precision, spec.tta_flip) == (name, version, precision, tta)
    assert spec.sha256["model.onnx"] == sha


#: (age, interval ends, P(female)) tolerance: fp32 differs by ONNX Runtime run and CPU in the last digits;
#: INT8 by CPU instruction set (the kernels round differently), by up to 0.15 / 0.52 / 0.002 measured.
FP32_TOLERANCE = (0.05, 0.05, 0.002)
INT8_TOLERANCE = (0.3, 0.8, 0.005)


@pytest.mark.parametrize("name", list(PINNED))
def test_astronaut_answer_is_unchanged(name: str) -> None:
    age, interval, age_group, p_female = PINNED[name][4:]
    age_tol, interval_tol, p_tol = INT8_TOLERANCE if PINNED[name][2] == "int8" else FP32_TOLERANCE
    result = FaceAnalyzer(name).analyze(SAMPLE_PHOTO)
    assert result.ok and (result.width, result.height) == (512, 512)
    [face] = result.faces
    assert face.box == pytest.approx((179.35, 56.67, 271.52, 178.17), abs=0.5)
    assert face.score > 0.999
    assert face.landmarks[0] == pytest.approx((204.09, 100.63), abs=0.5)  # her right eye
    assert face.age == pytest.approx(age, abs=age_tol)
    assert face.age_interval == pytest.approx(interval, abs=interval_tol)
    assert face.age_group == age_group
    assert face.gender == "female"
    assert face.gender_probability == pytest.approx(p_female, abs=p_tol)
