"""dlib's face-recognition ResNet as a trainable backbone (issue 33, ``model.name = "dlib_resnet"``): the built
network's trunk gives dlib's own features on a real face (resized to 150 px once, normalised once), a few
optimiser steps move the pretrained weights, and the export reproduces torch in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("face_recognition_models", reason="dlib's weights come with the 'teacher' extra")
pytest.importorskip("skimage", reason="the astronaut photo comes with scikit-image")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from facial_demographics.datasets.descriptors import TeacherMissingError  # noqa: E402
from facial_demographics.training.checkpoint import Best, Checkpoint, atomic_save  # noqa: E402
from facial_demographics.training.config import ConfigError, RunConfig, config_from_dict, load_config  # noqa: E402
from facial_demographics.training.data import Labels, to_input  # noqa: E402
from facial_demographics.training.dlib_resnet import load_dlib_resnet, packaged_model_file  # noqa: E402
from facial_demographics.training.losses import MultiTaskLoss  # noqa: E402
from facial_demographics.training.models import AgeGenderNet, DlibTrunk, build_model, head_spec  # noqa: E402
from facial_demographics.training.optim import make_optimizer  # noqa: E402

SIZE = 112  # the caches' input size (v04_dlib inherits it); the trunk resizes to dlib's 150


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    # The tests share a 2-core machine with training runs.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cfg() -> RunConfig:
    try:
        packaged_model_file()
    except TeacherMissingError as error:
        pytest.skip(str(error))
    return load_config("v04_dlib")


@pytest.fixture(scope="module")
def model(cfg: RunConfig) -> AgeGenderNet:
    return build_model(cfg).eval()


@pytest.fixture(scope="module")
def faces(astronaut: np.ndarray) -> torch.Tensor:
    """The astronaut's face cropped roughly, at the input size, plus its mirror: (2, 3, 112, 112) in [0, 255]."""
    face = np.ascontiguousarray(astronaut[30:250, 150:320])
    return to_input(torch.from_numpy(np.stack([face, face[:, ::-1]]).copy()), SIZE)


def test_the_config_is_dlib_resnet_without_a_teacher(cfg: RunConfig) -> None:
    assert (cfg.model.name, cfg.model.pretrained, cfg.data.input_size) == ("dlib_resnet", True, SIZE)
    assert cfg.teacher.descriptors == "" and cfg.teacher.weight == 0.0
    assert cfg.optim.lr < load_config("default").optim.lr
    with pytest.raises(ConfigError, match="model.name: must be one of .*dlib_resnet"):
        config_from_dict({"model": {"name": "dlib"}})


def test_trunk_gives_dlibs_features_on_a_real_face(model: AgeGenderNet, faces: torch.Tensor) -> None:
    reference = load_dlib_resnet().eval()
    assert isinstance(model.normalize, nn.Identity)  # DlibResNet normalises itself: not twice
    assert isinstance(model.trunk, DlibTrunk) and model.features == 256
    with torch.no_grad():
        want = reference.features(F.interpolate(faces, size=(150, 150), mode="bilinear", align_corners=False))
        got = model.trunk(model.normalize(faces))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        # The heads sit on exactly those features.
        age, gender = model(faces)
        torch.testing.assert_close(age, model.age_head(want), rtol=0, atol=1e-5)
        assert model.gender_head is not None and gender is not None
        torch.testing.assert_close(gender, model.gender_head(want), rtol=0, atol=1e-5)
        # A 150 px input is not resized: the trunk is DlibResNet.features itself.
        chip = F.interpolate(faces, size=(150, 150), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model.trunk(chip), reference.features(chip), rtol=0, atol=0)
        # Real features, not a random network's: the face and its mirror are the same person to dlib.
        descriptors = reference.fc(want)
        assert float((descriptors[0] - descriptors[1]).norm()) < 0.6  # dlib's same-person threshold


def test_dropout_and_untrained_build(cfg: RunConfig) -> None:
    raw = cfg.to_dict()
    raw["model"].update(dropout=0.35, pretrained=False)
    net = build_model(config_from_dict(raw))
    assert all(m.p == 0.35 for m in net.modules() if isinstance(m, nn.Dropout))
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 2  # one per head
    untrained, pretrained = net.state_dict(), build_model(cfg).state_dict()
    assert untrained.keys() == pretrained.keys()
    assert not any(k.startswith("trunk.backbone.fc.") for k in untrained)  # the descriptor layer is dropped
    assert not torch.equal(untrained["trunk.backbone.conv.weight"], pretrained["trunk.backbone.conv.weight"])


def test_a_few_steps_train_the_dlib_trunk(cfg: RunConfig) -> None:
    torch.manual_seed(0)
    net = build_model(cfg).train()
    spec = head_spec(cfg)
    loss_fn = MultiTaskLoss(spec, cfg.loss)
    optimizer = make_optimizer(net, cfg, cfg.optim.lr)
    x = torch.rand(4, 3, SIZE, SIZE) * 255
    labels = Labels(age=torch.tensor([5.0, 30.0, 60.0, float("nan")]), gender=torch.tensor([0, 1, -1, 1]),
                    weight=torch.ones(4))
    watched = {name: p.detach().clone() for name, p in net.named_parameters()
               if name in ("trunk.backbone.conv.weight", "trunk.backbone.affine.weight",
                           "trunk.backbone.blocks.12.conv2.weight", "trunk.backbone.blocks.12.affine2.bias")}
    assert len(watched) == 4
    for _ in range(3):
        optimizer.zero_grad(set_to_none=True)
        age, gender = net(x)
        loss = loss_fn(age, gender, labels).total
        assert torch.isfinite(loss)
        loss.backward()
        # Every parameter gets a gradient (what DistributedDataParallel requires without find_unused).
        assert all(p.grad is not None for p in net.parameters())
        optimizer.step()
    for name, before in watched.items():
        after = dict(net.named_parameters())[name].detach()
        assert torch.isfinite(after).all() and not torch.equal(after, before), name


def test_export_matches_torch_in_onnx_runtime(cfg: RunConfig, model: AgeGenderNet, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from facial_demographics.training.export import export_bundle

    # A checkpoint as the training loop writes one, holding the built network's weights (dlib's trunk,
    # untrained heads): export_bundle rebuilds it untrained and loads these.
    states = {"model": model.state_dict(), "optimizer": None, "scheduler": None, "ema": None, "ema_model": None,
              "rng": None}
    ckpt = Checkpoint(cfg, 0, "round1", False, 1, 1, Best("val_mae", None, 1), {}, [],
                      {"margin": 0.0, "template": "utkface5"}, {}, states)
    atomic_save(ckpt.to_dict(), tmp_path / "best.pt")
    report = export_bundle(tmp_path / "best.pt", tmp_path / "bundle", tolerance=1e-3)  # astronaut faces
    assert report.max_abs_diff < 1e-3 and report.faces == 3
    assert report.manifest["training"]["model"] == "dlib_resnet"
    assert report.manifest["input"]["size"] == SIZE

    import onnxruntime as ort

    session = ort.InferenceSession(str(report.bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 255, (3, 3, SIZE, SIZE)).astype(np.float32)
    got = session.run(None, {"input": x})
    with torch.no_grad():  # the bundle's flip-TTA (train.tta_flip) averages over the mirror
        want = [(a + b) / 2 for a, b in zip(model(torch.from_numpy(x)), model(torch.from_numpy(x).flip(-1)),
                                            strict=True)]
    for g, w in zip(got, want, strict=True):
        assert g.shape == tuple(w.shape) and np.abs(g - w.numpy()).max() < 1e-3
