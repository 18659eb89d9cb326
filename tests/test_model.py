"""The bundle format: schema and hash checks, and how outputs become ages and intervals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facial_demographics.model import MANIFEST, AgeGenderModel, BundleError, ModelBundle, manifest_text
from facial_demographics.registry import resolve


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundle, target)
    return target


def test_bundle_loads_and_predicts(tiny_bundle: Path) -> None:
    model = AgeGenderModel(tiny_bundle)
    faces = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    pred = model.predict(faces)
    assert pred.age.shape == (5,)
    assert np.all((pred.age_low <= pred.age) & (pred.age <= pred.age_high))
    assert np.all((pred.p_female >= 0) & (pred.p_female <= 1))
    assert model.predict(faces[:0]).age.shape == (0,)


def test_tampered_graph_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    with open(bundle / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        ModelBundle.load(bundle)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("heads"), "missing key 'heads"),
        (lambda m: m["input"].update(color="BGR"), "input.color"),
        (lambda m: m["heads"]["age"].update(type="magic"), "heads.age.type"),
        (lambda m: m["alignment"].update(size=7), "alignment.size"),
        (lambda m: m.update(format=99), "unsupported format"),
    ],
)
def test_bad_manifest_is_refused(tiny_bundle: Path, tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    bundle = _copy(tiny_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        ModelBundle.load(bundle)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a model bundle"):
        ModelBundle.load(tmp_path)


def _model_with_head(tiny_bundle: Path, tmp_path: Path, head: dict) -> AgeGenderModel:  # type: ignore[type-arg]
    bundle = _copy(tiny_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["heads"]["age"].update(head)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return AgeGenderModel(ModelBundle.load(bundle))


def test_distribution_expected_value_and_interval(tiny_bundle: Path, tmp_path: Path) -> None:
    model = _model_with_head(tiny_bundle, tmp_path, {})
    logits = np.full((1, 101), -1e9)
    logits[0, 30] = logits[0, 40] = 0.0  # half the mass at 30, half at 40
    age, low, high = model.bundle.spec.age.decode(logits, model.interval)
    assert age[0] == pytest.approx(35.0)
    # 10 % quantile lies inside the bin of 30, 90 % inside the bin of 40.
    assert 29.5 <= low[0] <= 30.5 and 39.5 <= high[0] <= 40.5


def test_bucket_head(tiny_bundle: Path, tmp_path: Path) -> None:
    model = _model_with_head(tiny_bundle, tmp_path, {"type": "buckets", "edges": [0, 25, 50, 75, 100, 120],
                                                          "values": [12.5, 37.5, 62.5, 87.5, 110.0]})
    logits = np.array([[0.0, -1e9, -1e9, -1e9, -1e9]])
    age, low, high = model.bundle.spec.age.decode(logits, model.interval)
    assert age[0] == pytest.approx(12.5)
    assert low[0] == pytest.approx(2.5) and high[0] == pytest.approx(22.5)
    # 40 % in 0-24 and 60 % in 50-74: the answer is the chosen bucket's value, not the mean (47.5, 25-49).
    split = np.log(np.array([[0.4, 1e-9, 0.6, 1e-9, 1e-9]]))
    age, _, _ = model.bundle.spec.age.decode(split, model.interval)
    assert age[0] == pytest.approx(62.5)


def test_manifests_are_written_with_number_lists_on_one_line(tmp_path: Path) -> None:
    doc = {"name": "x", "values": [0.0, 1.5, 2.0], "matrix": [[1, 2], [3, 4]], "labels": ["male", "female"],
           "bands": [{"band": "0-5", "faces": 3}], "empty": {}, "text": "a [b] \"c\""}
    text = manifest_text(doc)
    assert json.loads(text) == doc
    lines = text.splitlines()
    assert '  "values": [0.0, 1.5, 2.0],' in lines and '    [1, 2],' in lines and '  "empty": {},' in lines
    for name in ("default", "fast", "fp32", "seed"):  # the shipped manifests are kept in this form
        shipped = Path(resolve(name)) / MANIFEST
        assert shipped.read_text() == manifest_text(json.loads(shipped.read_text())) + "\n", name
