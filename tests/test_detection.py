"""Real detection with the bundled RetinaFace on real faces, blanks and noise."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facial_demographics.detection import DetectorConfig, FaceDetector


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def test_astronaut_has_exactly_one_face(detector: FaceDetector, astronaut: np.ndarray) -> None:
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    assert face.score > 0.9
    assert face.landmarks.shape == (5, 2)
    assert np.all((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2))
    assert np.all((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2))
    eyes_y = face.landmarks[:2, 1].max()
    mouth_y = face.landmarks[3:, 1].min()
    assert eyes_y < face.landmarks[2, 1] < mouth_y  # eyes above nose above mouth
    assert face.landmarks[0, 0] < face.landmarks[1, 0]  # image-left eye first


@pytest.mark.parametrize("kind", ["blank", "white", "noise"])
def test_no_face_is_an_empty_list(detector: FaceDetector, kind: str) -> None:
    rng = np.random.default_rng(0)
    image = {
        "blank": np.zeros((480, 640, 3), np.uint8),
        "white": np.full((300, 300, 3), 255, np.uint8),
        "noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
    }[kind]
    assert detector.detect(image) == []


def _paste(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    canvas[y : y + patch.shape[0], x : x + patch.shape[1]] = patch


def test_several_scaled_and_rotated_faces(detector: FaceDetector, astronaut: np.ndarray) -> None:
    face = astronaut[20:260, 130:330]  # the astronaut's head with some context
    canvas = np.full((720, 1280, 3), 200, np.uint8)
    placements = []
    for i, (scale, angle) in enumerate([(1.0, 0), (0.6, 15), (0.8, -20), (0.45, 0)]):
        patch = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = patch.shape[:2]
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        patch = cv2.warpAffine(patch, rot, (w, h), borderMode=cv2.BORDER_REPLICATE)
        x, y = 40 + i * 310, 100 + (i % 2) * 200
        _paste(canvas, patch, x, y)
        placements.append((x, y, x + w, y + h))
    faces = detector.detect(canvas)
    assert len(faces) == len(placements)
    for x1, y1, x2, y2 in placements:
        centres = [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces]
        assert sum(x1 < cx < x2 and y1 < cy < y2 for cx, cy in centres) == 1


def test_large_photos_are_downscaled_and_mapped_back(astronaut: np.ndarray) -> None:
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    small = FaceDetector(DetectorConfig(max_side=512)).detect(big)
    full = FaceDetector(DetectorConfig(max_side=2048)).detect(big)
    assert len(small) == len(full) == 1
    np.testing.assert_allclose(small[0].box, full[0].box, atol=24)  # within ~1 % of the side
    np.testing.assert_allclose(small[0].landmarks, full[0].landmarks, atol=16)


def test_batch_matches_single_images(detector: FaceDetector, astronaut: np.ndarray) -> None:
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    batch = detector.detect_batch([astronaut, flipped, np.zeros((100, 120, 3), np.uint8)])
    assert [len(b) for b in batch] == [1, 1, 0]
    np.testing.assert_allclose(batch[0][0].box, detector.detect(astronaut)[0].box, atol=1e-3)


def test_min_face_size_and_threshold_filter(astronaut: np.ndarray) -> None:
    assert FaceDetector(DetectorConfig(min_face_size=400)).detect(astronaut) == []
    assert FaceDetector(DetectorConfig(score_threshold=1.0)).detect(astronaut) == []


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="score_threshold"):
        DetectorConfig(score_threshold=1.5)
    with pytest.raises(ValueError, match="max_side"):
        DetectorConfig(max_side=4)
    with pytest.raises(ValueError, match="RGB uint8"):
        FaceDetector().detect(np.zeros((10, 10), np.uint8))
