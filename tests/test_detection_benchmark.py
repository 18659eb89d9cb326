"""The detection benchmark: matching rules on hand-made cases, deterministic scenes, and a small real run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facial_demographics.cli import app
from facial_demographics.detection import DetectorConfig, FaceDetector
from facial_demographics.evaluation.detection_eval import BenchmarkSettings, benchmark, load_pool
from facial_demographics.evaluation.detection_metrics import match_scene, summarize
from facial_demographics.evaluation.scenes import PoolFace, Scene, SceneFace, make_scene, paste, pool_from_crops
from facial_demographics.types import Detection

LANDMARKS = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], dtype=np.float64)


def _face(box: tuple[float, float, float, float]) -> SceneFace:
    x, y = box[0], box[1]
    scale = (box[2] - box[0]) / 100
    return SceneFace(box, LANDMARKS * scale + [x, y], "k")


def _det(box: tuple[float, float, float, float], score: float = 0.9, shift: float = 0.0) -> Detection:
    scale = (box[2] - box[0]) / 100
    return Detection(box, score, (LANDMARKS * scale + [box[0] + shift, box[1]]).astype(np.float32))


def _scene(faces: list[SceneFace], kind: str = "group", size: tuple[int, int] = (400, 300)) -> Scene:
    return Scene(0, kind, "none", np.zeros((size[1], size[0], 3), np.uint8), tuple(faces))


def test_hits_duplicates_and_false_faces_are_told_apart() -> None:
    scene = _scene([_face((10, 10, 110, 130)), _face((200, 20, 260, 92))])
    detections = [
        _det((10, 10, 110, 125), 0.99, shift=4.0),  # hit, landmarks 4 px off
        _det((20, 30, 70, 70), 0.95),  # an eye-sized part of face 0: duplicate
        _det((300, 200, 350, 250), 0.9),  # on the background: false positive
    ]
    out = match_scene(scene, detections)
    assert out.found == [True, False]
    assert out.matched == [0, -1, -1]
    assert (out.duplicates, out.false_positives, out.misses) == (1, 1, 1)
    assert out.landmark_errors == [pytest.approx(4.0 / 40.0, rel=0.03)]  # / inter-ocular distance
    m = summarize([out])
    assert m["recall"] == 0.5 and m["precision"] == pytest.approx(1 / 3)
    assert m["duplicates_per_face"] == 0.5
    assert m["recall_by_size"]["64-128"] == {"faces": 2, "recall": 0.5}


def test_faces_mostly_outside_or_tiny_are_ignored() -> None:
    outside = _face((-150, 10, 50, 210))  # a quarter inside the image
    tiny = _face((300, 100, 310, 112))
    scene = _scene([outside, tiny])
    out = match_scene(scene, [_det((0, 10, 50, 210), 0.9)])  # a box on the visible part
    assert out.ignored == [True, True]
    assert (out.misses, out.duplicates, out.false_positives) == (0, 0, 0)
    assert summarize([out])["faces"] == 0


def test_box_is_matched_against_the_clipped_face() -> None:
    cut = _face((-40, 20, 160, 220))  # 80 % inside: the reported box can only cover that part
    out = match_scene(_scene([cut]), [_det((0, 20, 160, 220))])
    assert out.found == [True] and out.false_positives == 0


def test_closeups_count_images_with_exactly_one_box() -> None:
    one = match_scene(_scene([_face((0, 0, 300, 300))], "closeup"), [_det((0, 0, 300, 290))])
    two = match_scene(_scene([_face((0, 0, 300, 300))], "closeup"), [_det((0, 0, 300, 290)), _det((20, 20, 90, 90))])
    c = summarize([one, two])["closeups"]
    assert c["images"] == 2 and c["exactly_one_box"] == 0.5 and c["boxes_histogram"] == {"1": 1, "2": 1}


@pytest.fixture(scope="module")
def astronaut_pool(astronaut: np.ndarray) -> list[PoolFace]:
    """A pool from the astronaut's head, so scene generation is testable without the dataset."""
    import cv2

    head = cv2.resize(astronaut[30:250, 150:320], (200, 200), interpolation=cv2.INTER_AREA)
    pool = pool_from_crops(["astronaut", "flipped"], [head, np.ascontiguousarray(head[:, ::-1])],
                           FaceDetector(DetectorConfig.single_scale()))
    assert len(pool) == 2
    return pool


def test_scenes_are_a_function_of_seed_and_index(astronaut_pool: list[PoolFace]) -> None:
    a, b = make_scene(astronaut_pool, 7, 3), make_scene(astronaut_pool, 7, 3)
    assert (a.kind, a.condition) == (b.kind, b.condition)
    assert np.array_equal(a.image, b.image)
    assert [f.box for f in a.faces] == [f.box for f in b.faces]
    others = [make_scene(astronaut_pool, 7, i) for i in range(4, 24)]
    assert not all(np.array_equal(a.image, o.image) for o in others if o.image.shape == a.image.shape)
    assert {o.kind for o in others} >= {"group", "closeup"}


def test_poster_scenes_put_a_group_before_one_big_face(astronaut_pool: list[PoolFace]) -> None:
    scenes = [make_scene(astronaut_pool, 7, i, kind="poster") for i in range(3)]
    again = make_scene(astronaut_pool, 7, 0, kind="poster")
    assert np.array_equal(scenes[0].image, again.image)
    assert not np.array_equal(scenes[0].image[:100, :100], make_scene(astronaut_pool, 7, 0).image[:100, :100])
    for scene in scenes:
        backdrop = [f for f in scene.faces if f.backdrop]
        front = [f for f in scene.faces if not f.backdrop]
        assert scene.kind == "poster" and len(backdrop) == 1 and 2 <= len(front) <= 10
        assert backdrop[0].size >= 0.6 * min(scene.image.shape[:2]) - 1
        assert all(f.size <= 0.4 * backdrop[0].size + 1e-6 for f in front)
    with pytest.raises(ValueError, match="unknown scene kind"):
        make_scene(astronaut_pool, 7, 0, kind="closeup")


def test_poster_figures_count_front_faces_and_the_backdrop_apart() -> None:
    scene = Scene(0, "poster", "none", np.zeros((300, 400, 3), np.uint8),
                  (replace(_face((0, 0, 300, 300)), backdrop=True), _face((20, 20, 80, 90)),
                   _face((200, 150, 260, 220))))
    out = match_scene(scene, [_det((0, 0, 300, 295)), _det((20, 20, 80, 88))])
    posters = summarize([out])["posters"]
    assert posters == {"images": 1, "front_faces": 2, "front_recall": 0.5, "backdrop_faces": 1, "backdrop_recall": 1.0}


def test_pasted_face_ground_truth_follows_the_transform(astronaut_pool: list[PoolFace]) -> None:
    canvas = np.full((600, 800, 3), 128, np.uint8)
    face = paste(canvas, astronaut_pool[0], 150.0, 0.0, (400.0, 300.0))
    assert face.size == pytest.approx(150.0, rel=1e-6)
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    assert (cx, cy) == (pytest.approx(400.0), pytest.approx(300.0))
    found = FaceDetector().detect(canvas)
    assert len(found) == 1
    # the real detector puts the eyes where the ground truth says, within a few pixels
    assert np.abs(found[0].landmarks[:2] - face.landmarks[:2]).max() < 0.06 * 150
    rotated = paste(np.full((600, 800, 3), 128, np.uint8), astronaut_pool[0], 150.0, 30.0, (400.0, 300.0))
    assert rotated.box[2] - rotated.box[0] > face.box[2] - face.box[0]  # a tilted head needs a wider box


def test_small_benchmark_on_real_faces(utkface_dir: Path) -> None:
    """CI's small version of the benchmark: the current detector against the 0.2.0 one on the same scenes."""
    settings = BenchmarkSettings(scenes=60, seed=11, pool_size=80, timing_repeats=1)
    pool = load_pool(utkface_dir, settings)
    assert len(pool) >= 60
    new, _ = benchmark(FaceDetector().detect, pool, settings)
    old, _ = benchmark(FaceDetector(DetectorConfig.single_scale(score_threshold=0.8)).detect, pool, settings)
    assert new["closeups"]["images"] >= 5
    assert new["closeups"]["exactly_one_box"] == 1.0
    assert new["duplicates_per_face"] <= 0.005
    # Face-free scenes: gravel blurred and enlarged gets boxes from both detectors (see the README); this
    # seed has one such scene among about 10, so the bound is per image over all scenes.
    assert new["false_positives_per_image"] <= 0.5
    for band, row in old["recall_by_size"].items():  # at the same cost at 1080p, no size band gets worse
        assert new["recall_by_size"][band]["recall"] >= row["recall"] - 0.02, band
    assert new["recall"] > old["recall"]
    assert new["precision"] >= old["precision"] - 0.02
    assert set(new["ms_per_image"]) == {"640x480", "1920x1080"}
    assert new["posters"]["images"] == 6 and new["posters"]["front_faces"] >= 20


class _NoPartSuppression(FaceDetector):
    def _keep(self, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, order: list[int]) -> list[int]:
        return list(order)


def test_no_face_in_front_of_a_poster_is_lost_to_part_suppression(utkface_dir: Path) -> None:
    """Issue 32's target: every front face found without part suppression is still found with it."""
    settings = BenchmarkSettings(scenes=1, seed=5, pool_size=80, timing_repeats=1)
    pool = load_pool(utkface_dir, settings)
    ours, everything = FaceDetector(), _NoPartSuppression()
    lost = front = 0
    for index in range(8):
        scene = make_scene(pool, settings.seed, index, kind="poster")
        mine, ref = match_scene(scene, ours.detect(scene.image)), match_scene(scene, everything.detect(scene.image))
        front += sum(not f.backdrop for f in scene.faces)
        lost += sum(r and not m and not f.backdrop for f, m, r in zip(scene.faces, mine.found, ref.found, strict=True))
    assert front >= 30 and lost == 0


def test_evaluate_detection_command_writes_metrics_and_report(utkface_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "det"
    result = CliRunner().invoke(app, ["evaluate-detection", "--dataset", str(utkface_dir), "--scenes", "12",
                                      "--pool", "40", "--seed", "3", "--posters", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "recall" in result.output and "close-ups with one box" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scenes"] == 12 + 2 and metrics["settings"]["seed"] == 3
    assert metrics["posters"]["images"] == 2 and metrics["settings"]["poster_scenes"] == 2
    assert metrics["detector"]["coarse_side"] == 256
    page = (out / "report.html").read_text()
    assert "Recall by face size" in page and ("data:image/jpeg;base64," in page or "No scene had" in page)


def test_evaluate_detection_names_a_missing_dataset(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate-detection", "--dataset", str(tmp_path / "nope"), "--scenes", "2"])
    assert result.exit_code == 2
    assert "nope" in result.output
