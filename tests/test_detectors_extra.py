"""The third-party detector adapters of ``benchmarks/detectors_extra.py`` (issue 12's candidates).

Each adapter runs its real detector on a real photo when its package is installed
(``benchmarks/setup_candidates.sh``) and is skipped with the install hint otherwise; the shared helpers
(NMS, landmark order, the torchvision stand-in) are tested everywhere.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from facial_demographics.detection import DetectorConfig, FaceDetector

from tests_support import load_benchmark

dx = load_benchmark("detectors_extra")

SCRFD = Path(os.environ.get("FD_SCRFD_ONNX", "/nonexistent/scrfd.onnx"))
LOADERS: dict[str, Callable[[], tuple[object, str]]] = {
    "centerface": lambda: dx.load_centerface(520_000),
    "libfacedetection": lambda: dx.load_libfacedetection(640),
    "blazeface": dx.load_blazeface,
    "mtcnn": lambda: dx.load_mtcnn(20, None),
    "dlib_hog": lambda: dx.load_dlib_hog(0),
    "dlib_mmod": lambda: dx.load_dlib_mmod(0),
    "haar": dx.load_haar,
    "scrfd": lambda: dx.load_scrfd(SCRFD if SCRFD.is_file() else None, 640, None),
}


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float64)
    keep = dx._nms(boxes, np.array([0.5, 0.9, 0.7]), 0.4)
    assert keep.tolist() == [1, 2]


def test_landmarks_are_put_in_our_order_whatever_the_library_calls_left() -> None:
    mirrored = np.array([[70, 40], [30, 40], [50, 60], [65, 80], [35, 80]], np.float32)
    assert dx._ordered(mirrored).tolist() == [[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]]


def test_torchvision_stand_in_never_suppresses_across_images() -> None:
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: the stand-in is not used")
    dx._torchvision_shim()
    from torchvision.ops.boxes import batched_nms

    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11]], dtype=torch.float32)
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.5)
    assert sorted(keep.tolist()) == [0, 1]  # box 1 is another image's; box 2 loses to box 0


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_candidate_finds_the_one_face_and_nothing_on_a_blank_wall(name: str, astronaut: np.ndarray) -> None:
    detect, note = LOADERS[name]()
    if detect is None:
        pytest.skip(note)
    assert callable(detect)
    truth = FaceDetector(DetectorConfig.single_scale()).detect(astronaut)
    assert len(truth) == 1
    found = detect(astronaut)
    overlaps = [d for d in found if _iou(d.box, truth[0].box) > 0.3]  # dlib draws tighter boxes
    assert len(overlaps) == 1, f"{name}: {[(d.box, d.score) for d in found]}"
    face = overlaps[0]
    assert _iou(face.box, truth[0].box) > 0.4
    if np.isfinite(face.landmarks).all():
        x1, y1, x2, y2 = face.box
        assert face.landmarks[0, 0] < face.landmarks[1, 0] and face.landmarks[3, 0] < face.landmarks[4, 0]
        assert ((face.landmarks >= [x1 - 5, y1 - 5]) & (face.landmarks <= [x2 + 5, y2 + 5])).all()
    assert detect(np.full((480, 640, 3), 128, np.uint8)) == []
