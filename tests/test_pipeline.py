"""The Python API end to end on real images (untrained model: structure, not accuracy)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from facial_demographics import FaceAnalyzer
from facial_demographics.imaging import encode_jpeg
from facial_demographics.labels import AGE_GROUPS


@pytest.fixture(scope="module")
def analyzer(tiny_bundle: Path) -> FaceAnalyzer:
    return FaceAnalyzer(tiny_bundle, batch_size=4)


def test_astronaut(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    result = analyzer.analyze(astronaut, name="astronaut")
    assert result.ok and result.path == "astronaut"
    assert (result.width, result.height) == (512, 512)
    (face,) = result.faces
    assert face.age_interval[0] <= face.age <= face.age_interval[1]
    assert face.age_group in AGE_GROUPS
    assert face.gender in ("female", "male")
    assert 0.5 <= (face.gender_probability or 0) <= 1.0
    record = result.to_dict()
    assert set(record) == {"path", "width", "height", "faces", "error"}
    assert set(record["faces"][0]) == {"box", "score", "landmarks", "age", "age_interval", "age_group",
                                       "gender", "gender_probability", "age_distribution"}
    dist = record["faces"][0]["age_distribution"]  # what population summaries read: it matches the face
    mean = sum((dist["start"] + k) * p for k, p in enumerate(dist["p"])) / sum(dist["p"])
    assert abs(mean - record["faces"][0]["age"]) < 3


def test_batch_goes_on_past_bad_items(analyzer: FaceAnalyzer, astronaut: np.ndarray, tmp_path: Path) -> None:
    good = tmp_path / "a.jpg"
    good.write_bytes(encode_jpeg(astronaut))
    (tmp_path / "text.jpg").write_text("not an image")
    sources = [str(good), str(tmp_path / "text.jpg"), str(tmp_path / "missing.png"), astronaut,
               np.zeros((50, 50, 3), np.uint8)] * 3
    results = analyzer.analyze_batch(sources)
    assert len(results) == len(sources)
    assert [len(r.faces) for r in results[:5]] == [1, 0, 0, 1, 0]
    assert "not an image" in (results[1].error or "")
    assert results[2].error and results[4].error is None
    # Same image, same answer regardless of batch position.
    assert results[0].faces[0].age == pytest.approx(results[5].faces[0].age, abs=1e-4)


def test_batched_equals_single(tiny_bundle: Path, astronaut: np.ndarray) -> None:
    single = FaceAnalyzer(tiny_bundle, batch_size=1).analyze(astronaut).faces[0]
    batched = FaceAnalyzer(tiny_bundle, batch_size=64).analyze_batch([astronaut] * 5)[3].faces[0]
    assert single.age == pytest.approx(batched.age, abs=1e-4)


def test_cropped_mode_yields_one_face(tiny_bundle: Path, astronaut: np.ndarray) -> None:
    analyzer = FaceAnalyzer(tiny_bundle, cropped=True)
    noise = np.random.default_rng(0).integers(0, 256, (120, 100, 3), dtype=np.uint8)
    results = analyzer.analyze_batch([astronaut[40:200, 150:300], noise])
    assert [len(r.faces) for r in results] == [1, 1]
    assert not results[0].faces[0].fallback and results[1].faces[0].fallback


def test_thread_safe(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    expected = analyzer.analyze(astronaut).faces[0].age
    ages: list[float] = []

    def work() -> None:
        for _ in range(3):
            ages.append(analyzer.analyze(astronaut).faces[0].age)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ages) == 12 and all(a == pytest.approx(expected, abs=1e-4) for a in ages)


HEAVY = ("torch", "pandas", "scipy", "matplotlib", "pyarrow")


def test_inference_imports_none_of_the_heavy_extras(tmp_path: Path, astronaut: np.ndarray) -> None:
    """analyze (with annotation and CSV), demo, the server's app and its /docs run on the slim install: no torch,
    pandas, scipy, matplotlib or pyarrow is even imported (they belong to the data and train extras)."""
    import subprocess
    import sys

    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(encode_jpeg(astronaut))
    code = f"""
import sys
from typer.testing import CliRunner
from facial_demographics.cli import app
res = CliRunner().invoke(app, ["analyze", {str(photo)!r}, "-f", "csv", "--annotate", {str(tmp_path / "ann")!r}])
assert res.exit_code == 0, res.output
res = CliRunner().invoke(app, ["demo", "--out", {str(tmp_path / "demo.png")!r}])
assert res.exit_code == 0 and "astronaut.png (bundled sample): 1 face(s)" in res.output, res.output
from starlette.testclient import TestClient
from facial_demographics.server import ServerSettings, create_app
with TestClient(create_app(ServerSettings())) as client:
    with open({str(photo)!r}, "rb") as fh:
        assert client.post("/v1/analyze?annotate=true", files={{"file": fh}}).status_code == 200
    assert client.get("/docs").status_code == 200
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
