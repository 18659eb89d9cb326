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


# -- faces larger than the graph's anchors, clipping, the two passes ----------------------------------
def _closeup(astronaut: np.ndarray, side: int, shift: float) -> np.ndarray:
    """The astronaut's head enlarged to ``side`` px and moved by ``shift`` of the frame (cut by the border)."""
    head = astronaut[20:260, 130:330]
    big = cv2.resize(head, (side, int(side * 1.2)), interpolation=cv2.INTER_LINEAR)
    frame = np.full((1200, 1200, 3), 90, np.uint8)
    x0, y0 = int((1200 - big.shape[1]) / 2 + shift * 1200), int((1200 - big.shape[0]) / 2)
    xs, ys = max(x0, 0), max(y0, 0)
    xe, ye = min(x0 + big.shape[1], 1200), min(y0 + big.shape[0], 1200)
    frame[ys:ye, xs:xe] = big[ys - y0 : ye - y0, xs - x0 : xe - x0]
    return frame


@pytest.mark.parametrize(("side", "shift"), [(700, 0.0), (1000, 0.0), (1400, 0.0), (900, 0.3), (1200, -0.25)])
def test_a_close_up_is_one_box_inside_the_image(detector: FaceDetector, astronaut: np.ndarray,
                                                side: int, shift: float) -> None:
    image = _closeup(astronaut, side, shift)
    faces = detector.detect(image)
    assert len(faces) == 1, [f.box for f in faces]
    x1, y1, x2, y2 = faces[0].box
    assert 0 <= x1 < x2 <= 1200 and 0 <= y1 < y2 <= 1200
    assert x2 - x1 > 0.4 * min(side, 1200)  # the whole face, not a part of it


def test_enlarged_utkface_crops_get_one_box_where_0_2_gave_several(detector: FaceDetector, utkface_dir) -> None:
    """The reported bug: UTKFace faces enlarged to 1000–1400 px came back as 2–5 boxes (parts of the face)."""
    from PIL import Image

    files = sorted(utkface_dir.glob("*.jpg"))[:: max(1, len(list(utkface_dir.glob("*.jpg"))) // 10)][:10]
    legacy = FaceDetector(DetectorConfig.single_scale(score_threshold=0.8))
    old_counts, new_counts = [], []
    for f in files:
        image = cv2.resize(np.asarray(Image.open(f).convert("RGB")), (1400, 1400), interpolation=cv2.INTER_LINEAR)
        old_counts.append(len(legacy.detect(image)))
        new_counts.append(len(detector.detect(image)))
    assert new_counts == [1] * len(files)
    assert sum(c > 1 for c in old_counts) >= len(files) // 2  # the bug was there to fix


def test_passes_depend_on_the_image_size() -> None:
    det = FaceDetector()
    small = det._passes(0, np.zeros((160, 160, 3), np.uint8))
    large = det._passes(0, np.zeros((1080, 1920, 3), np.uint8))
    assert [p.coarse for p in small] == [False] and small[0].scale > 1  # enlarged, no coarse pass
    assert [p.coarse for p in large] == [False, True]
    fine, coarse = large
    assert fine.tensor_image.shape[0] * fine.tensor_image.shape[1] <= det.config.pixel_budget * 1.01
    assert max(coarse.tensor_image.shape[:2]) == 256 + 2 * round(det.config.coarse_pad * 256)
    legacy = FaceDetector(DetectorConfig.single_scale())._passes(0, np.zeros((1080, 1920, 3), np.uint8))
    assert len(legacy) == 1 and legacy[0].tensor_image.shape[:2] == (540, 960)


def _face_points(box: tuple[float, float, float, float]) -> np.ndarray:
    """Five landmarks where a face in ``box`` has them (eyes, nose, mouth corners)."""
    x1, y1, x2, y2 = box
    unit = np.array([[0.32, 0.4], [0.68, 0.4], [0.5, 0.58], [0.36, 0.75], [0.64, 0.75]])
    return (unit * [x2 - x1, y2 - y1] + [x1, y1]).astype(np.float32)


def test_parts_of_a_face_are_suppressed_but_faces_in_front_of_it_are_not() -> None:
    from facial_demographics.detection import _suppress_parts

    face = (100.0, 100.0, 500.0, 600.0)
    eyes = (180.0, 250.0, 420.0, 450.0)  # a part: lies on the face's eyes and nose, less confident
    small = (150.0, 480.0, 210.0, 550.0)  # a face in front, 0.15 of the big one's side
    beside = (600.0, 100.0, 700.0, 200.0)  # another face, outside
    front = (300.0, 420.0, 450.0, 580.0)  # a confident face in front, 0.35 of the side, its features elsewhere
    boxes = np.array([face, eyes, small, beside, front], np.float32)
    scores = np.array([0.99, 0.7, 0.95, 0.9, 0.999], np.float32)
    points = np.stack([_face_points(face), _face_points(face)[[0, 1, 2, 2, 2]], _face_points(small),
                       _face_points(beside), _face_points(front)])
    points[1, 3:] += [[-20, 40], [20, 40]]  # the part's "mouth" lands on the face's nose
    assert sorted(_suppress_parts(boxes, scores, points, range(5), DetectorConfig())) == [0, 2, 3, 4]
    # The same part scoring above the face is a face of its own (a part never looks more like a face).
    scores[1] = 0.995
    assert 1 in _suppress_parts(boxes, scores, points, range(5), DetectorConfig())
    # Containment alone (the rule before issue 32) would have dropped the faces in front too.
    legacy = DetectorConfig(part_min_ratio=0.0, weak_part_min_ratio=0.0, part_landmarks=10.0)
    scores[[1, 2, 4]] = 0.5
    assert sorted(_suppress_parts(boxes, scores, points, range(5), legacy)) == [0, 3]


@pytest.mark.parametrize(("score", "dropped"), [(0.7, True), (0.9, False)])
def test_a_smaller_part_must_score_far_below_its_face(score: float, dropped: bool) -> None:
    """0.25–0.3 of the face's side: a fragment when it scores 0.2 or more below the face, else a face."""
    from facial_demographics.detection import _suppress_parts

    face, part = (0.0, 0.0, 400.0, 400.0), (150.0, 150.0, 260.0, 260.0)  # 0.275 of the side
    boxes = np.array([face, part], np.float32)
    points = np.stack([_face_points(face), _face_points(face)[[0, 1, 2, 2, 2]]])
    kept = _suppress_parts(boxes, np.array([0.99, score], np.float32), points, [0, 1], DetectorConfig())
    assert kept == ([0] if dropped else [0, 1])


def test_faces_in_front_of_a_big_face_are_all_found(detector: FaceDetector, astronaut: np.ndarray) -> None:
    """The reported bug: a big face behind a group (a poster, a screen) took the group's faces with it."""
    head = astronaut[20:260, 130:330]
    canvas = np.ascontiguousarray(cv2.GaussianBlur(cv2.resize(head, (1280, 1536))[150:870], (0, 0), 3))
    spots = [(200, 420, 0.9), (470, 470, 0.7), (760, 380, 1.0), (1000, 460, 0.8), (580, 120, 0.6)]
    for x, y, s in spots:
        patch = cv2.resize(head, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        canvas[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    faces = detector.detect(canvas)
    assert len(faces) == len(spots) + 1
    centres = [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces]
    for x, y, s in spots:
        assert sum(x < cx < x + 200 * s and y < cy < y + 240 * s for cx, cy in centres) == 1, (x, y)
    big = max(faces, key=lambda f: f.width)
    assert big.width > 400  # the poster's face, found by the coarse pass, with front faces inside its box
    assert sum(big.box[0] < cx < big.box[2] and big.box[1] < cy < big.box[3] for cx, cy in centres) >= 3


def test_cropped_mode_reports_a_box_inside_the_crop(astronaut: np.ndarray) -> None:
    """A face filling the crop has a box reaching outside it; the box is clipped, the landmarks are not."""
    from facial_demographics.alignment import AlignmentConfig, align_single, padded_canvas_detections

    crop = np.ascontiguousarray(cv2.resize(astronaut[70:230, 170:290], (200, 200)))
    single = FaceDetector(DetectorConfig.single_scale(score_threshold=0.5))
    raw = padded_canvas_detections(crop, single, AlignmentConfig())
    assert raw and (min(raw[0].box[:2]) < 0 or max(raw[0].box[2:]) > 200)  # the case being fixed
    aligned = align_single(crop, single, AlignmentConfig())
    x1, y1, x2, y2 = aligned.detection.box
    assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 200
    np.testing.assert_array_equal(aligned.detection.landmarks, raw[0].landmarks)


@pytest.mark.parametrize("bad", [{"coarse_side": 2000}, {"coarse_pad": -0.1}, {"containment": 0.0},
                                 {"max_upscale": 0.5}, {"pixel_budget": 10}, {"part_min_ratio": 1.5},
                                 {"part_landmarks": 0.0}, {"weak_part_gap": 2.0}])
def test_bad_detector_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        DetectorConfig(**bad)
