"""The Python API as a new user meets it: PIL images, OpenCV's BGR arrays, JSON out, short reprs."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from facial_demographics import FaceAnalyzer
from facial_demographics.imaging import encode_jpeg, read_image


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


def _plain_json_types(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json_types(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_pil_image_gives_the_same_faces_as_the_array(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    from_array = analyzer.analyze(astronaut)
    from_pil = analyzer.analyze(Image.fromarray(astronaut))
    assert len(from_pil.faces) == len(from_array.faces) == 1
    assert from_pil.faces[0].to_dict() == from_array.faces[0].to_dict()
    assert from_pil.path == "<image 0>" and (from_pil.width, from_pil.height) == (512, 512)


def test_pil_image_any_mode_and_exif_orientation(astronaut: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to show
    buffer = io.BytesIO()
    Image.fromarray(astronaut[:, :400]).save(buffer, "JPEG", exif=exif)
    opened = Image.open(io.BytesIO(buffer.getvalue()))
    assert read_image(opened).shape == (400, 512, 3)
    assert np.array_equal(read_image(opened), read_image(buffer.getvalue()))
    grey = Image.fromarray(astronaut).convert("L")
    assert read_image(grey).shape == (512, 512, 3)


def test_bgr_arrays_from_opencv(analyzer: FaceAnalyzer, astronaut: np.ndarray, tmp_path: Path) -> None:
    import cv2

    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    bgr = cv2.imread(str(path))  # what an OpenCV user holds
    assert np.array_equal(read_image(bgr, channels="bgr"), astronaut)
    assert np.array_equal(read_image(bgr[..., ::-1]), astronaut)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    assert np.array_equal(read_image(bgra, channels="bgr"), astronaut)
    rgb_result = analyzer.analyze(astronaut)
    assert analyzer.analyze(bgr, channels="bgr").faces[0].to_dict() == rgb_result.faces[0].to_dict()
    batch = analyzer.analyze_batch([bgr, str(path)], channels="bgr")  # files keep their own order
    assert [r.faces[0].to_dict() for r in batch] == [rgb_result.faces[0].to_dict()] * 2


def test_bad_channels_is_refused(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError, match="channels"):
        analyzer.analyze(astronaut, channels="gbr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels"):
        analyzer.analyze_batch([astronaut], channels="RGB")  # type: ignore[arg-type]


def test_to_dict_and_to_json(analyzer: FaceAnalyzer, astronaut: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "astronaut.jpg"
    path.write_bytes(encode_jpeg(astronaut))
    result = analyzer.analyze(path)
    data = result.to_dict()
    assert _plain_json_types(data)
    assert json.loads(json.dumps(data)) == data
    assert json.loads(result.to_json()) == data
    assert "\n" not in result.to_json() and "\n" in result.to_json(indent=2)
    face = result.faces[0]
    assert face.p_female == pytest.approx(
        face.gender_probability if face.gender == "female" else 1 - face.gender_probability)


def test_short_reprs(analyzer: FaceAnalyzer, astronaut: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "astronaut.jpg"
    path.write_bytes(encode_jpeg(astronaut))
    result = analyzer.analyze(path)
    assert repr(result) == f"ImageResult({str(path)!r}, 512x512, 1 face)"
    face = result.faces[0]
    text = repr(face)
    assert text.startswith(f"Face(age {face.age:.1f} (") and face.gender in text and "box=(" in text
    assert len(text) < 90 and "landmarks" not in text
    bad = analyzer.analyze(b"not an image")
    assert repr(bad).startswith("ImageResult('<bytes 0>', error='not an image")
