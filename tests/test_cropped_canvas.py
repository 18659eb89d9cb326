"""Cropped mode's canvas (10 % padding, shrunk to 192 px): coordinates come back in the crop's pixels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from facial_demographics.alignment import AlignmentConfig, align_single, best_face, padded_canvas_detections
from facial_demographics.detection import DetectorConfig, FaceDetector
from facial_demographics.errors import InvalidValueError


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(DetectorConfig.single_scale(score_threshold=0.5, threads=1))


def test_shrunk_canvas_finds_the_same_face_in_crop_pixels(astronaut: np.ndarray, detector: FaceDetector) -> None:
    crop = np.ascontiguousarray(astronaut[30:230, 125:325])  # her face, filling a 200 px crop like UTKFace's
    now = AlignmentConfig()
    assert (now.canvas_pad, now.canvas_side) == (0.10, 192)
    full = best_face(padded_canvas_detections(crop, detector, replace(now, canvas_side=None)), 200, 200)
    small = best_face(padded_canvas_detections(crop, detector, now), 200, 200)
    assert full is not None and small is not None
    # Same face: boxes overlap almost entirely and the landmarks move by a few crop pixels at most.
    assert np.abs(np.subtract(full.box, small.box)).max() < 12
    assert np.linalg.norm(full.landmarks - small.landmarks, axis=1).max() < 8
    aligned = align_single(crop, detector, now)
    assert not aligned.fallback and aligned.image.shape == (112, 112, 3)


def test_canvas_side_is_checked() -> None:
    with pytest.raises(InvalidValueError, match="canvas_side"):
        AlignmentConfig(canvas_side=16)
    assert AlignmentConfig(canvas_side=None).canvas_side is None
