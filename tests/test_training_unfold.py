"""Fine-tuning from a bundle (train.start_from): the exported graph rebuilt as a training network, with its
folded BatchNorms unfolded, reproduces ONNX Runtime in eval mode and itself in train mode; a run starts from
it; bundles that cannot be rebuilt are refused with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facial_demographics.registry import resolve
from facial_demographics.training.checkpoint import Checkpoint
from facial_demographics.training.config import RunConfig, config_from_dict, load_config
from facial_demographics.training.export import export_bundle
from facial_demographics.training.loop import train
from facial_demographics.training.models import build_model
from facial_demographics.training.unfold import UnfoldError, weights_from_bundle
from facial_demographics.training.validate import predict_logits

from tests_support import make_cache

ort = pytest.importorskip("onnxruntime")
torch.set_num_threads(2)


def _tiny(root: Path, **train: object) -> RunConfig:
    cache, split = make_cache(root, n=24, size=32)
    raw = load_config("tiny").to_dict()
    raw["data"].update(cache=str(cache), split=str(split), input_size=32, limit_batches=1)
    raw["train"].update({"epochs": 1, "batch_size": 8, **train})
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path]:
    """A tiny trained run exported with flip TTA baked in (its BatchNorms folded by the exporter)."""
    root = tmp_path_factory.mktemp("unfold")
    cfg = _tiny(root, epochs=2)
    train(cfg, root / "run", progress=False, log=lambda _: None)
    report = export_bundle(root / "run" / "best.pt", root / "bundle")
    return cfg, report.bundle


def _onnx(bundle: Path, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    return list(session.run(None, {"input": x.numpy()}))


def _faces(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, 255, (n, 3, size, size)).astype(np.float32))


def test_the_rebuilt_network_reproduces_the_graph_and_trains_from_where_it_stands(
        bundle: tuple[RunConfig, Path]) -> None:
    cfg, path = bundle
    x = _faces(6, 32, 0)
    model = build_model(cfg, pretrained=False)
    model.load_state_dict(weights_from_bundle(path, cfg, [x]))
    model.eval()
    with torch.no_grad():
        got = predict_logits(model, x, tta_flip=True)
    for want, have in zip(_onnx(path, x), got, strict=True):
        assert have is not None
        np.testing.assert_allclose(have.numpy(), want, atol=1e-4)
    # BatchNorm statistics are measured, not left at the identity: train mode (batch statistics) on the
    # batch they were measured on computes the same function as eval mode (tiny has no dropout).
    variances = [m.running_var for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert variances and all(v is not None and float(v.mean()) != pytest.approx(0.999) for v in variances)
    with torch.no_grad():
        eval_age = model(x)[0]
        model.train()
        train_age = model(x)[0]
    np.testing.assert_allclose(train_age.numpy(), eval_age.numpy(), atol=2e-3)


def test_the_shipped_fp32_bundle_rebuilds_as_its_training_network() -> None:
    cfg = load_config("v04_flip_tune")
    path = resolve(cfg.train.start_from)
    x = _faces(3, cfg.data.input_size, 1)
    model = build_model(cfg, pretrained=False)
    model.load_state_dict(weights_from_bundle(path, cfg, [x]))
    with torch.no_grad():
        got = predict_logits(model.eval(), x, tta_flip=True)
    for want, have in zip(_onnx(path, x), got, strict=True):
        assert have is not None
        np.testing.assert_allclose(have.numpy(), want, atol=1e-3)


def test_a_run_starts_from_the_bundle(bundle: tuple[RunConfig, Path], tmp_path: Path) -> None:
    cfg, path = bundle
    tuned = _tiny(tmp_path, start_from=str(path))
    raw = tuned.to_dict()
    raw["optim"]["lr"] = 1e-9  # one step this small cannot move a weight measurably: saved = started
    lines: list[str] = []
    train(config_from_dict(raw), tmp_path / "run", progress=False, log=lines.append)
    assert any(f"starting from the bundle {path}" in line for line in lines)
    saved = Checkpoint.load(tmp_path / "run" / "last.pt").states["model"]
    start = weights_from_bundle(path, cfg, [_faces(2, 32, 2)])
    convs = [k for k in saved if k.endswith("conv.weight") or k.endswith("_conv_stem.weight")]
    assert convs
    for key in convs:
        torch.testing.assert_close(saved[key], start[key])


def test_a_run_starts_from_a_checkpoint(bundle: tuple[RunConfig, Path], tmp_path: Path) -> None:
    first = _tiny(tmp_path / "a")
    train(first, tmp_path / "a" / "run", progress=False, log=lambda _: None)
    source = tmp_path / "a" / "run" / "best.pt"
    raw = _tiny(tmp_path / "b", start_from=str(source)).to_dict()
    raw["optim"]["lr"] = 1e-9
    lines: list[str] = []
    train(config_from_dict(raw), tmp_path / "b" / "run", progress=False, log=lines.append)
    assert any(f"starting from the weights of {source}" in line for line in lines)
    want = Checkpoint.load(source).eval_weights
    got = Checkpoint.load(tmp_path / "b" / "run" / "last.pt").states["model"]
    torch.testing.assert_close(got["age_head.1.weight"], want["age_head.1.weight"])


def _edited(path: Path, target: Path, edit: dict[str, object]) -> Path:
    shutil.copytree(path, target)
    manifest = json.loads((target / "manifest.json").read_text())
    for dotted, value in edit.items():
        node = manifest
        *parents, key = dotted.split(".")
        for p in parents:
            node = node[p]
        node[key] = value
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


@pytest.mark.parametrize(("edit", "reason"), [
    ({"precision": "int8"}, "an int8 bundle; fine-tuning needs the fp32 one"),
    ({"training.model": "efficientnet_lite1"}, "trained as 'efficientnet_lite1', the config builds"),
    ({"input.size": 64, "alignment.size": 64}, "input size 64, the config's is 32"),
])
def test_bundles_that_cannot_be_rebuilt_are_refused_with_the_reason(
        bundle: tuple[RunConfig, Path], tmp_path: Path, edit: dict[str, object], reason: str) -> None:
    cfg, path = bundle
    broken = _edited(path, tmp_path / "broken", edit)
    with pytest.raises(UnfoldError, match=reason):
        weights_from_bundle(broken, cfg, [_faces(2, 32, 3)])


def test_a_bundle_whose_graph_is_not_the_network_is_refused(bundle: tuple[RunConfig, Path]) -> None:
    cfg, path = bundle
    other = load_config("v04_flip_tune")  # Lite1 at 112 px against a Lite0 graph at 32 px
    raw = other.to_dict()
    raw["model"]["name"], raw["data"]["input_size"] = cfg.model.name, cfg.data.input_size
    raw["heads"]["max_age"] = 120  # a wider age head than the graph's
    with pytest.raises(UnfoldError, match="initializer for the network's age_head"):
        weights_from_bundle(path, config_from_dict(raw), [_faces(2, 32, 4)])


def test_the_fine_tuning_config_in_the_docs_loads(tmp_path: Path) -> None:
    page = (Path(__file__).parents[1] / "docs" / "own-data.md").read_text(encoding="utf-8")
    block = page.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "mine_tuned.toml").write_text(block, encoding="utf-8")
    cfg = load_config(tmp_path / "mine_tuned.toml")
    assert (cfg.train.start_from, cfg.train.epochs, cfg.optim.lr) == ("fp32", 5, 0.0002)
    assert cfg.model.name == "efficientnet_lite1" and cfg.teacher.weight == 0


def test_a_missing_or_unfitting_checkpoint_is_refused_with_the_reason(tmp_path: Path) -> None:
    from facial_demographics.training.config import ConfigError

    missing = _tiny(tmp_path / "a", start_from=str(tmp_path / "nowhere.pt"))
    with pytest.raises(ConfigError, match="nowhere.pt: no such checkpoint"):
        train(missing, tmp_path / "a" / "run", progress=False, log=lambda _: None)
    train(_tiny(tmp_path / "b"), tmp_path / "b" / "run", progress=False, log=lambda _: None)
    raw = _tiny(tmp_path / "c", start_from=str(tmp_path / "b" / "run" / "best.pt")).to_dict()
    raw["heads"]["max_age"] = 120  # an age head the checkpoint does not have
    with pytest.raises(ConfigError, match="its weights do not fit efficientnet_lite0"):
        train(config_from_dict(raw), tmp_path / "c" / "run", progress=False, log=lambda _: None)
