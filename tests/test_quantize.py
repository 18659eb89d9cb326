"""INT8 export: flip-TTA removal on the shipped graph, static quantisation, the side-by-side comparison and
the manifest's precision; ``export --quantize int8`` on the command line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from typer.testing import CliRunner

from facial_demographics.cli import app
from facial_demographics.manifest import BundleError, BundleSpec
from facial_demographics.model import AgeGenderModel, ModelBundle
from facial_demographics.training.quantize import (
    QuantizeError,
    calibration_faces,
    quantize_bundle,
    strip_flip_tta,
    strip_tta_bundle,
)

from tests_support import simple_cache


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_stripped_graph_is_the_plain_branch_of_the_shipped_one() -> None:
    """(plain(x) + plain(mirror x)) / 2 must be exactly what the TTA graph computes."""
    full = onnx.load(str(ModelBundle.load("fp32").graph_path))
    plain = strip_flip_tta(full)
    assert len(plain.graph.node) < len(full.graph.node) / 2
    x = np.random.default_rng(0).uniform(0, 255, (3, 3, 112, 112)).astype(np.float32)
    want = _session(full).run(None, {"input": x})
    one = _session(plain)
    a, b = one.run(None, {"input": x}), one.run(None, {"input": np.ascontiguousarray(x[..., ::-1])})
    for w, u, v in zip(want, a, b, strict=True):
        np.testing.assert_allclose(w, (u + v) / 2, atol=1e-5)
    with pytest.raises(QuantizeError, match="no flip test-time augmentation"):
        strip_flip_tta(plain)


def test_precision_is_optional_and_checked(tiny_bundle: Path) -> None:
    doc = json.loads((tiny_bundle / "manifest.json").read_text())
    spec = BundleSpec.parse(doc)
    assert (spec.precision, spec.tta_flip) == ("fp32", None)  # old bundles: no precision key
    assert BundleSpec.parse({**doc, "precision": "int8", "tta_flip": False}).precision == "int8"
    with pytest.raises(BundleError, match="precision must be one of"):
        BundleSpec.parse({**doc, "precision": "int4"})
    with pytest.raises(BundleError, match="tta_flip"):
        BundleSpec.parse({**doc, "tta_flip": "yes"})


def test_quantize_a_bundle_and_compare(tiny_bundle: Path, tmp_path: Path) -> None:
    cache = simple_cache(tmp_path / "cache", 64, 40)
    split = cache / "split.csv"
    report = quantize_bundle(ModelBundle.load(tiny_bundle), tmp_path / "q", cache, split,
                             calibration_split="val", calibration_count=16, compare_split="val", name="tiny-int8")
    bundle = ModelBundle.load(tmp_path / "q")
    assert (bundle.spec.name, bundle.spec.precision) == ("tiny-int8", "int8")
    ops = {n.op_type for n in onnx.load(str(bundle.graph_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    section = bundle.manifest["quantization"]
    assert section["calibration"] == {"split": "val", "faces": 16, "split_file": "split.csv"}
    assert section["comparison"]["faces"] == report.faces == 35
    assert section["comparison"]["int8"]["mae"] == pytest.approx(report.quantized.mae, abs=1e-4)
    assert section["from"]["sha256"] == ModelBundle.load(tiny_bundle).spec.sha256["model.onnx"]
    # The quantised graph answers like the float one (an untrained net: compare answers, not accuracy).
    faces = np.load(cache / "faces.npy")[:8]
    ref, q = AgeGenderModel(tiny_bundle).predict(faces), AgeGenderModel(bundle).predict(faces)
    assert np.abs(ref.age - q.age).max() < 2.0
    with pytest.raises(QuantizeError, match="already int8"):
        quantize_bundle(bundle, tmp_path / "qq", cache, split, calibration_split="val")
    with pytest.raises(QuantizeError, match="no flip TTA to keep"):
        quantize_bundle(ModelBundle.load(tiny_bundle), tmp_path / "q3", cache, split, tta_flip=True,
                        calibration_split="val")


def test_calibration_never_uses_the_test_split(tmp_path: Path) -> None:
    from facial_demographics.datasets.cache import load_cache

    cache = load_cache(simple_cache(tmp_path / "cache", 32, 20))
    with pytest.raises(QuantizeError, match="not 'test'"):
        calibration_faces(cache, cache.path / "split.csv", "test", 8)
    with pytest.raises(QuantizeError, match="no cached face of the 'train' split"):
        calibration_faces(cache, cache.path / "split.csv", "train", 8)
    faces = calibration_faces(cache, cache.path / "split.csv", "val", 8)
    assert faces.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(faces, calibration_faces(cache, cache.path / "split.csv", "val", 8))  # seeded


def test_export_quantize_cli(tiny_bundle: Path, tmp_path: Path) -> None:
    cache = simple_cache(tmp_path / "cache", 64, 30)
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tiny_bundle), "--quantize", "int8", "--cache", str(cache),
                                 "--split", str(cache / "split.csv"), "--calibration-split", "val",
                                 "--calibration-faces", "8", "--out", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    for text in ("age MAE", "gender accuracy", "interval coverage", "fp32 (source)", "int8", "model file"):
        assert text in result.output
    assert ModelBundle.load(tmp_path / "q").spec.precision == "int8"
    refused = runner.invoke(app, ["export", str(tiny_bundle), "--quantize", "int8", "--cache", str(cache),
                                  "--split", str(cache / "split.csv"), "--calibration-split", "test",
                                  "--out", str(tmp_path / "q2")])
    assert refused.exit_code == 2 and "test" in refused.output
    nothing = runner.invoke(app, ["export", str(tiny_bundle), "--out", str(tmp_path / "q3")])
    assert nothing.exit_code == 2 and "--quantize int8" in nothing.output
    no_cache = runner.invoke(app, ["export", "fp32", "--quantize", "int8", "--out", str(tmp_path / "q4")])
    assert no_cache.exit_code == 2 and "--cache" in no_cache.output


def test_strip_tta_bundle(tmp_path: Path) -> None:
    out = strip_tta_bundle(ModelBundle.load("fp32"), tmp_path / "no-tta", name="fp32-no-tta")
    bundle = ModelBundle.load(out)
    assert (bundle.spec.precision, bundle.spec.tta_flip, bundle.spec.name) == ("fp32", False, "fp32-no-tta")
    with pytest.raises(QuantizeError, match="no flip TTA to remove"):
        strip_tta_bundle(bundle, tmp_path / "again")


@pytest.mark.slow
def test_int8_keeps_the_shipped_accuracy_on_real_faces(utkface_dir: Path, tmp_path: Path) -> None:
    """Real UTKFace faces through the real detector into a cache; the shipped float graph quantised with
    train faces and compared on val faces: the INT8 answers stay close to the float ones."""
    from facial_demographics.alignment import AlignmentConfig
    from facial_demographics.datasets.cache import prepare_cache
    from facial_demographics.datasets.utkface import read_utkface

    records = random.Random(0).sample(list(read_utkface(utkface_dir).records), 48)
    cache = prepare_cache(records, tmp_path / "cache", AlignmentConfig(size=112), workers=1)
    split = tmp_path / "split.csv"
    pd.DataFrame({"key": [r.key for r in records], "split": ["train"] * 24 + ["val"] * 24}).to_csv(split, index=False)
    report = quantize_bundle(ModelBundle.load("fp32"), tmp_path / "q", cache.path, split, tta_flip=False,
                             calibration_count=24)
    assert report.faces == 24 and report.calibration_split == "train" and not report.tta_flip
    assert abs(report.quantized.mae - report.reference.mae) < 1.0
    assert report.onnx_bytes < report.source_bytes / 3
