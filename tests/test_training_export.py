"""Export: ONNX Runtime reproduces torch (< 1e-4 on logits), the manifest describes the graph, and the
bundle loads with the shared reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facial_demographics.training.config import config_from_dict, load_config
from facial_demographics.training.export import export_bundle
from facial_demographics.training.loop import train

from tests_support import make_cache

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    cache, split = make_cache(root, n=24, size=32)
    raw = load_config("tiny").to_dict()
    raw["data"].update(cache=str(cache), split=str(split), input_size=32, limit_batches=1)
    raw["train"].update(epochs=1, batch_size=8)
    train(config_from_dict(raw), root / "run", progress=False, log=lambda _: None)
    return root / "run" / "best.pt", cache


def test_export_parity_and_manifest(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, cache = trained
    report = export_bundle(ckpt, tmp_path / "bundle", cache=cache)
    assert report.max_abs_diff < 1e-4 and report.faces > 1
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["input"] == {"name": "input", "size": 32, "color": "RGB", "layout": "NCHW",
                                 "range": [0, 255]}
    assert manifest["alignment"] == {"template": "arcface5", "size": 32, "margin": 0.2}
    assert manifest["heads"]["age"]["type"] == "distribution"
    assert manifest["heads"]["age"]["values"] == [float(a) for a in range(101)]
    assert manifest["heads"]["gender"] == {"output": "gender_logits", "labels": ["male", "female"]}
    assert len(manifest["sha256"]["model.onnx"]) == 64
    assert manifest["training"]["ema"] is True and manifest["training"]["tta_flip"] is True


def test_onnx_has_dynamic_batch_and_flip_tta_baked_in(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    report = export_bundle(trained[0], tmp_path / "bundle")  # no cache: the skimage astronaut
    session = ort.InferenceSession(str(report.bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["age_logits", "gender_logits"]
    x = np.random.default_rng(0).uniform(0, 255, (5, 3, 32, 32)).astype(np.float32)
    age, gender = session.run(None, {"input": x})
    assert age.shape == (5, 101) and gender.shape == (5, 2)
    age_flipped, _ = session.run(None, {"input": x[..., ::-1].copy()})
    np.testing.assert_allclose(age, age_flipped, atol=1e-4)  # averaged over the mirror: flip-invariant


def test_bundle_loads_with_the_shared_reader(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import facial_demographics.model as model_mod  # a broken import must fail the test, not skip it
    report = export_bundle(trained[0], tmp_path / "bundle", cache=trained[1])
    predictor = model_mod.AgeGenderModel(model_mod.ModelBundle.load(report.bundle))
    faces = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    pred = predictor.predict(faces)
    assert pred.age.shape == (3,) and np.all((pred.age >= 0) & (pred.age <= 100))


def test_regression_export_records_residual_intervals(tmp_path: Path) -> None:
    cache, split = make_cache(tmp_path, n=24, size=32)
    raw = load_config("seed_wiki").to_dict()
    raw["data"].update(cache=str(cache), split=str(split), input_size=32, limit_batches=1, age_range=None)
    raw["model"]["channels"] = [8, 16]
    raw["train"].update(epochs=1, batch_size=8)
    train(config_from_dict(raw), tmp_path / "run", progress=False, log=lambda _: None)
    report = export_bundle(tmp_path / "run" / "best.pt", tmp_path / "bundle", cache=cache)
    head = report.manifest["heads"]["age"]
    assert head["type"] == "regression" and report.manifest["heads"]["gender"] is None
    q = head["residual_quantile"]
    assert q["0.5"] <= q["0.8"] <= q["0.9"] <= q["0.95"]
    assert report.max_abs_diff < 1e-4


def test_an_age_head_over_0_to_120_exports_and_answers_above_100(tmp_path: Path) -> None:
    # configs/v03_age120.toml: UTKFace goes to 116, a 0..100 head cannot say so.
    import facial_demographics.model as model_mod

    cache, split = make_cache(tmp_path, n=24, size=32)
    raw = load_config("tiny").to_dict()
    raw["data"].update(cache=str(cache), split=str(split), input_size=32, limit_batches=1)
    raw["heads"]["max_age"] = load_config("v03_age120").heads.max_age
    raw["train"].update(epochs=1, batch_size=8)
    train(config_from_dict(raw), tmp_path / "run", progress=False, log=lambda _: None)
    # A head that puts its mass on age 110 whatever the face: the bundle must carry the answer through.
    ckpt = torch.load(tmp_path / "run" / "best.pt", map_location="cpu", weights_only=False)
    head = {k: v for k, v in ckpt["ema_model"].items() if k.startswith("age_head") and v.shape[0] == 121}
    assert sorted(k.rsplit(".", 1)[1] for k in head) == ["bias", "weight"]
    for key, value in head.items():
        value.zero_()
        if key.endswith("bias"):
            value[110] = 30.0
    torch.save(ckpt, tmp_path / "run" / "peaked.pt")
    report = export_bundle(tmp_path / "run" / "peaked.pt", tmp_path / "bundle", cache=cache)
    assert report.manifest["heads"]["age"]["values"] == [float(a) for a in range(121)]
    predictor = model_mod.AgeGenderModel(model_mod.ModelBundle.load(report.bundle))
    pred = predictor.predict(np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    np.testing.assert_allclose(pred.age, 110.0, atol=0.5)


def test_the_cli_names_the_bundle_and_calibrates_per_band(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facial_demographics.cli import app

    ckpt, cache = trained
    out = tmp_path / "named"
    result = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(out), "--cache", str(cache),
                                      "--split", str(cache.parent / "split.csv"), "--name", "fp32"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "fp32"  # not the config's name ("tiny")
    assert "temperature(s)" in result.output and len(manifest["heads"]["age"]["temperatures"]) == 8
    assert manifest["license"].startswith("Weights trained on UTKFace / MORPH / IMDB-WIKI")
