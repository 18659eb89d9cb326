"""``evaluate-detection --annotations``: the four annotation formats, their ignore conventions, bad files,
and the command's figures against an independent count, on small photos and files made here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facial_demographics.cli import app
from facial_demographics.detection import FaceDetector
from facial_demographics.evaluation.annotations import AnnotationError, read_annotations
from facial_demographics.evaluation.detection_eval import PHOTO_BANDS, run_photo_benchmark
from facial_demographics.evaluation.detection_metrics import iou

Box = tuple[float, float, float, float]
#: The face box inside the astronaut head crop ``astronaut[20:260, 130:330]``, as the detector draws it.
HEAD_FACE = (47.0, 38.0, 140.0, 160.0)


def _head_photo(astronaut: np.ndarray, size: tuple[int, int], heads: list[tuple[int, int, float]]
                ) -> tuple[np.ndarray, list[Box]]:
    """A grey photo with the astronaut's head pasted at (x, y, scale); returns it and the face boxes."""
    canvas = np.full((size[1], size[0], 3), 120, np.uint8)
    boxes = []
    for x, y, s in heads:
        patch = cv2.resize(astronaut[20:260, 130:330], None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        canvas[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
        boxes.append((HEAD_FACE[0] * s + x, HEAD_FACE[1] * s + y, HEAD_FACE[2] * s + x, HEAD_FACE[3] * s + y))
    return canvas, boxes


@pytest.fixture(scope="module")
def photos(astronaut: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    """Three photos and their faces as (box, ignore): 3 faces; none; 1 face, 1 ignored box, 1 face it misses."""
    folder = tmp_path_factory.mktemp("photos")
    one, boxes_one = _head_photo(astronaut, (640, 480), [(40, 60, 1.0), (360, 200, 0.5), (520, 40, 0.25)])
    three, boxes_three = _head_photo(astronaut, (640, 480), [(100, 100, 0.8)])
    Image.fromarray(one).save(folder / "one.png")
    Image.fromarray(np.full((240, 320, 3), 120, np.uint8)).save(folder / "empty.png")
    Image.fromarray(three).save(folder / "three.png")
    faces = {
        "one.png": [(b, False) for b in boxes_one],
        "empty.png": [],
        "three.png": [(boxes_three[0], False), ((400.0, 300.0, 440.0, 340.0), True), ((500.0, 50.0, 540.0, 90.0),
                                                                                      False)],
    }
    return folder, faces


# -- writers for each format ----------------------------------------------------------------------------
def _write_voc(folder: Path, faces: dict[str, list]) -> Path:
    out = folder / "voc"
    out.mkdir(exist_ok=True)
    for name, boxes in faces.items():
        objects = "".join(
            f"<object><name>face</name><difficult>{int(ign)}</difficult><bndbox><xmin>{b[0] + 1}</xmin>"
            f"<ymin>{b[1] + 1}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for b, ign in boxes)
        person = "<object><name>person</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>" \
                 "</bndbox></object>"  # not a face: left out
        (out / f"{Path(name).stem}.xml").write_text(
            f"<annotation><filename>{name}</filename>{person}{objects}</annotation>", encoding="utf-8")
    return out


def _write_imglab(folder: Path, faces: dict[str, list]) -> Path:
    images = "".join(
        f"<image file='{name}'>" + "".join(
            f"<box top='{b[1]}' left='{b[0]}' width='{b[2] - b[0]}' height='{b[3] - b[1]}'"
            f"{' ignore=' + repr('1') if ign else ''}/>" for b, ign in boxes) + "</image>"
        for name, boxes in faces.items())
    path = folder / "faces.xml"
    path.write_text(f"<?xml version='1.0'?><dataset><name>t</name><images>{images}</images></dataset>",
                    encoding="utf-8")
    return path


def _write_coco(folder: Path, faces: dict[str, list]) -> Path:
    images, anns = [], []
    for i, (name, boxes) in enumerate(faces.items()):
        images.append({"id": i + 10, "file_name": name})
        for b, ign in boxes:
            anns.append({"id": len(anns), "image_id": i + 10, "category_id": 1, "iscrowd": int(ign),
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
        anns.append({"id": len(anns), "image_id": i + 10, "category_id": 2, "iscrowd": 0, "bbox": [0, 0, 5, 5]})
    path = folder / "faces.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "face"}, {"id": 2, "name": "car"}]}))
    return path


def _write_wider(folder: Path, faces: dict[str, list]) -> Path:
    lines = []
    for name, boxes in faces.items():
        lines += [name, str(len(boxes))]
        lines += [f"{b[0]} {b[1]} {b[2] - b[0]} {b[3] - b[1]} 0 0 0 {int(ign)} 0 0" for b, ign in boxes]
        if not boxes:
            lines.append("0 0 0 0 0 0 0 0 0 0")
    path = folder / "wider_face_val_bbx_gt.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


WRITERS = {"voc": _write_voc, "imglab": _write_imglab, "coco": _write_coco, "wider": _write_wider}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_each_format_reads_the_same_boxes_and_ignore_flags(fmt: str, photos: tuple[Path, dict[str, list]],
                                                           tmp_path: Path) -> None:
    folder, faces = photos
    ann = read_annotations(WRITERS[fmt](tmp_path, faces))
    assert ann.format == fmt
    got = {im.file: [(b.box, b.ignore) for b in im.boxes] for im in ann.images}
    assert set(got) == set(faces)
    for name, boxes in faces.items():
        assert len(got[name]) == len(boxes), name
        for (box, ign), (want, want_ign) in zip(got[name], boxes, strict=True):
            np.testing.assert_allclose(box, want, atol=1e-6)
            assert ign == want_ign
    assert ann.faces == 5


def _independent_recall(folder: Path, faces: dict[str, list], threshold: float) -> tuple[int, int]:
    """Found and counted faces, counted here without the benchmark's code: a face is found when some box
    overlaps it at ``threshold`` (the faces are far apart, so no box can serve two)."""
    detector = FaceDetector()
    found = counted = 0
    for name, boxes in faces.items():
        detections = detector.detect(np.asarray(Image.open(folder / name).convert("RGB")))
        for box, ign in boxes:
            if not ign:
                counted += 1
                found += any(iou(d.box, box) >= threshold for d in detections)
    return found, counted


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_command_reports_what_an_independent_count_finds(fmt: str, photos: tuple[Path, dict[str, list]],
                                                         tmp_path: Path) -> None:
    folder, faces = photos
    path = WRITERS[fmt](tmp_path, faces)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["evaluate-detection", "--annotations", str(path), "--images", str(folder),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 photos, 5 faces" in result.output
    m = json.loads((out / "metrics.json").read_text())
    for threshold in (0.5, 0.3):
        found, counted = _independent_recall(folder, faces, threshold)
        assert (m[f"iou_{threshold}"]["found"], m["faces"]) == (found, counted)
    assert m["iou_0.3"]["found"] == 4 and m["iou_0.3"]["recall"] == pytest.approx(0.8)  # the blank box is missed
    assert (m["ignored_faces"], m["face_free_images"]) == (1, 1)
    assert m["iou_0.5"]["false_positives"] == 0 and m["iou_0.5"]["duplicates_per_face"] == 0.0
    assert [row["faces"] for row in m["recall_by_size"].values()] == [0, 2, 2, 1]  # 27, 40; 53, 85; 107 px
    assert list(m["recall_by_size"]) == [b[0] for b in PHOTO_BANDS]
    assert m["ms_per_image"]["mean"] > 0 and m["annotations"][0]["format"] == fmt
    page = (out / "report.html").read_text()
    assert "Recall by face size" in page and "three.png" in page and "data:image/jpeg;base64," in page


def test_several_annotation_files_add_up(photos: tuple[Path, dict[str, list]], tmp_path: Path) -> None:
    folder, faces = photos
    first = _write_imglab(tmp_path, {"one.png": faces["one.png"]})
    second = _write_coco(tmp_path, {"three.png": faces["three.png"]})
    m = run_photo_benchmark([first, second], folder, tmp_path / "out")
    assert (m["images"], m["faces"]) == (2, 5)
    assert [a["format"] for a in m["annotations"]] == ["imglab", "coco"]


def test_photos_default_to_the_annotation_files_folder(photos: tuple[Path, dict[str, list]]) -> None:
    folder, faces = photos
    path = _write_imglab(folder, faces)  # beside the photos, as dlib's examples/faces are
    m = run_photo_benchmark([path], None, folder / "out")
    assert m["images"] == 3


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("bad.xml", "<dataset><images><image file='a.png'><box top='x' left='1' width='2' height='2'/></image>"
                "</images></dataset>", "numeric 'top'"),
    ("bad.xml", "<dataset><images>", "not readable XML"),
    ("other.xml", "<svg/>", "neither dlib's <dataset> nor VOC's <annotation>"),
    ("bad.json", "{\"images\": []}", "not COCO json"),
    ("bad.json", "{\"images\": [{\"id\": 1, \"file_name\": \"a.png\"}], \"annotations\": "
                 "[{\"image_id\": 2, \"bbox\": [0, 0, 1, 1]}]}", "refers to no image"),
    ("bad.txt", "a.png\n2\n1 2 3 4 0 0 0 0 0 0\n", "expected 'x y w h"),
    ("bad.txt", "a.png\ntwo\n", "expected the face count"),
    ("bad.xml", "<dataset><images><image file='a.png'><box top='5' left='5' width='-3' height='2'/></image>"
                "</images></dataset>", "empty or reversed"),
    ("bad.csv", "x", "unknown annotation format"),
])
def test_bad_annotation_files_name_the_file_and_reason(tmp_path: Path, name: str, text: str, reason: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(AnnotationError, match=reason) as info:
        read_annotations(path)
    assert str(path) in str(info.value)


def test_command_errors_are_one_line_and_exit_2(photos: tuple[Path, dict[str, list]], tmp_path: Path) -> None:
    folder, faces = photos
    runner = CliRunner()
    missing = _write_imglab(tmp_path, {"gone.png": faces["one.png"]})
    result = runner.invoke(app, ["evaluate-detection", "--annotations", str(missing), "--images", str(folder)])
    assert result.exit_code == 2 and "gone.png" in result.output and "not found" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["evaluate-detection", "--annotations", str(tmp_path / "nope.xml")])
    assert result.exit_code == 2 and "nope.xml" in result.output
    result = runner.invoke(app, ["evaluate-detection"])
    assert result.exit_code == 2 and "--dataset" in result.output and "--annotations" in result.output
    voc_empty = tmp_path / "empty_voc"
    voc_empty.mkdir()
    result = runner.invoke(app, ["evaluate-detection", "--annotations", str(voc_empty)])
    assert result.exit_code == 2 and "no .xml files" in result.output


def _dlib_faces() -> Path:
    """dlib's examples/faces (9 PASCAL VOC photos, Boost licence; not in this repository): $FD_DLIB_FACES."""
    path = Path(os.environ.get("FD_DLIB_FACES", "/nonexistent"))
    if not (path / "training.xml").is_file():
        pytest.skip("dlib's examples/faces not found (set FD_DLIB_FACES to that folder)")
    return path


def test_dlib_examples_match_an_independent_count(tmp_path: Path) -> None:
    """The issue's check: on dlib's training.xml and testing.xml (43 faces) the command's recall is the
    count made here with a regular expression and the detector alone."""
    import re

    folder = _dlib_faces()
    faces: dict[str, list] = {}
    for xml in ("training.xml", "testing.xml"):
        for name, body in re.findall(r"<image file='([^']+)'[^>]*>(.*?)</image>", (folder / xml).read_text(), re.S):
            faces[name] = [((float(left), float(top), float(left) + float(w), float(top) + float(h)), False)
                           for top, left, w, h in re.findall(
                               r"top='(\d+)' left='(\d+)' width='(\d+)' height='(\d+)'", body)]
    assert sum(len(v) for v in faces.values()) == 43
    m = run_photo_benchmark([folder / "training.xml", folder / "testing.xml"], None, tmp_path)
    assert m["faces"] == 43
    for threshold in (0.5, 0.3):
        found, counted = _independent_recall(folder, faces, threshold)
        assert (m[f"iou_{threshold}"]["found"], m["faces"]) == (found, counted)
