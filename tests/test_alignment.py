"""Alignment: template placement, the cropped-dataset mode and its fallback."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from facial_demographics.alignment import (
    AlignmentConfig,
    align,
    align_single,
    similarity_transform,
    whole_image_fallback,
)
from facial_demographics.detection import DetectorConfig, FaceDetector
from facial_demographics.imaging import read_image


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(DetectorConfig(score_threshold=0.5))


@pytest.mark.parametrize("cfg", [AlignmentConfig(), AlignmentConfig(size=160, margin=0.2),
                                 AlignmentConfig(template="arcface5", size=112)])
def test_eyes_land_on_the_template(detector: FaceDetector, astronaut: np.ndarray, cfg: AlignmentConfig) -> None:
    det = detector.detect(astronaut)[0]
    aligned = align(astronaut, det, cfg)
    assert aligned.image.shape == (cfg.size, cfg.size, 3)
    mapped = np.c_[det.landmarks, np.ones(5)] @ aligned.matrix.T
    np.testing.assert_allclose(mapped[:2], cfg.destination()[:2], atol=2.0)
    # Re-detecting on the aligned crop finds the eyes where the template puts them.
    canvas_det = detector.detect(np.pad(aligned.image, ((64, 64), (64, 64), (0, 0))))
    assert canvas_det, "the aligned face should still be a face"
    np.testing.assert_allclose(canvas_det[0].landmarks[:2] - 64, cfg.destination()[:2], atol=2.0 + cfg.size / 40)


def test_similarity_transform_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_fallback_when_no_face(detector: FaceDetector) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (200, 160, 3), dtype=np.uint8)
    aligned = align_single(image, detector, AlignmentConfig(size=64))
    assert aligned.fallback
    assert aligned.image.shape == (64, 64, 3)
    assert aligned.detection.score == 0.0
    np.testing.assert_array_equal(aligned.image, whole_image_fallback(image, AlignmentConfig(size=64)).image)


def test_single_face_mode_on_a_tight_crop(detector: FaceDetector, astronaut: np.ndarray) -> None:
    crop = astronaut[50:190, 160:290]  # face fills the crop, like UTKFace
    aligned = align_single(crop, detector)
    assert not aligned.fallback
    assert aligned.detection.score > 0.5


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="template"):
        AlignmentConfig(template="nope")
    with pytest.raises(ValueError, match="size"):
        AlignmentConfig(size=4)


def test_utkface_sample_finds_faces_without_fallback(utkface_dir: Path, detector: FaceDetector) -> None:
    names = sorted(n for n in os.listdir(utkface_dir) if n.endswith(".jpg"))
    sample = random.Random(0).sample(names, 200)
    fallbacks = [n for n in sample if align_single(read_image(utkface_dir / n), detector).fallback]
    assert len(fallbacks) <= 4, f"{len(fallbacks)} of 200 fell back: {fallbacks}"
