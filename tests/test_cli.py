"""The command line on real images: every output format, bad files in a folder, annotation, --cropped."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facial_demographics.cli import app
from facial_demographics.imaging import encode_jpeg, encode_png, read_image
from facial_demographics.types import AGE_GROUPS

runner = CliRunner()


@pytest.fixture()
def photo_dir(tmp_path: Path, astronaut: np.ndarray) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "astronaut.jpg").write_bytes(encode_jpeg(astronaut))
    (folder / "flipped.png").write_bytes(encode_png(astronaut[:, ::-1]))
    (folder / "blank.png").write_bytes(encode_png(np.full((80, 120, 3), 200, np.uint8)))
    return folder


@pytest.fixture()
def messy_dir(photo_dir: Path) -> Path:
    good = (photo_dir / "astronaut.jpg").read_bytes()
    (photo_dir / "corrupt.jpg").write_bytes(good[: len(good) // 3])
    (photo_dir / "notes.jpg").write_text("this is a text file with an image extension")
    return photo_dir


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout


def test_jsonl_is_one_line_per_image(photo_dir: Path, tiny_bundle: Path) -> None:
    code, out = _run("analyze", str(photo_dir), "--format", "jsonl", "--model", str(tiny_bundle))
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["path"]).name for r in lines] == ["astronaut.jpg", "blank.png", "flipped.png"]
    assert [len(r["faces"]) for r in lines] == [1, 0, 1]
    assert list(lines[0]) == ["path", "width", "height", "faces", "error"]
    assert list(lines[0]["faces"][0]) == ["box", "score", "landmarks", "age", "age_interval", "age_group",
                                          "gender", "gender_probability"]
    assert lines[0]["error"] is None and lines[0]["width"] == 512


def test_json_and_csv_carry_the_same_fields(photo_dir: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    assert _run("analyze", str(photo_dir), "-f", "json", "-o", str(out_json), "-m", str(tiny_bundle))[0] == 0
    assert _run("analyze", str(photo_dir), "-f", "csv", "-o", str(out_csv), "-m", str(tiny_bundle))[0] == 0
    results = json.loads(out_json.read_text())
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert len(results) == 3 and len(rows) == 3  # one row per face, one for the image without a face
    astro = next(r for r in rows if r["path"].endswith("astronaut.jpg"))
    face = results[0]["faces"][0]
    assert float(astro["age"]) == pytest.approx(face["age"])
    assert json.loads(astro["age_interval"]) == face["age_interval"]
    assert astro["gender"] == face["gender"]


def test_table_output(photo_dir: Path, tiny_bundle: Path) -> None:
    code, out = _run("analyze", str(photo_dir / "astronaut.jpg"), "-m", str(tiny_bundle))
    assert code == 0 and "Faces" in out
    assert any(group in out for group in AGE_GROUPS) and ("male" in out or "female" in out)


def test_bad_files_are_reported_and_the_rest_analysed(messy_dir: Path, tiny_bundle: Path) -> None:
    result = runner.invoke(app, ["analyze", str(messy_dir), "-f", "jsonl", "-m", str(tiny_bundle)])
    assert result.exit_code == 1
    by_name = {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(by_name) == {"astronaut.jpg", "blank.png", "flipped.png", "corrupt.jpg", "notes.jpg"}
    assert len(by_name["astronaut.jpg"]["faces"]) == 1 and len(by_name["flipped.png"]["faces"]) == 1
    assert "truncated" in by_name["corrupt.jpg"]["error"]
    assert "not an image" in by_name["notes.jpg"]["error"]
    assert by_name["notes.jpg"]["faces"] == []
    assert "notes.jpg" in result.stderr


def test_cropped_gives_one_face_per_image(photo_dir: Path, tiny_bundle: Path) -> None:
    code, out = _run("analyze", str(photo_dir), "--cropped", "-f", "jsonl", "-m", str(tiny_bundle))
    assert code == 0
    assert [len(json.loads(line)["faces"]) for line in out.splitlines()] == [1, 1, 1]


def test_annotate_writes_valid_images(photo_dir: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "annotated"
    code, _ = _run("analyze", str(photo_dir), "--annotate", str(target), "-f", "json", "-m", str(tiny_bundle))
    assert code == 0
    files = sorted(target.glob("*.png"))
    assert len(files) == 3
    annotated = read_image(files[0])
    original = read_image(photo_dir / "astronaut.jpg")
    assert annotated.shape == original.shape
    assert np.abs(annotated.astype(int) - original.astype(int)).sum() > 0  # something was drawn
    Image.open(files[0]).verify()


def test_glob_and_missing_inputs(photo_dir: Path, tiny_bundle: Path) -> None:
    code, out = _run("analyze", str(photo_dir / "*.png"), str(photo_dir / "nope.jpg"), "-f", "jsonl",
                     "-m", str(tiny_bundle))
    names = [Path(json.loads(line)["path"]).name for line in out.splitlines()]
    assert code == 1 and names == ["blank.png", "flipped.png", "nope.jpg"]


def test_bad_model_is_a_clear_error(photo_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["analyze", str(photo_dir), "-m", str(tmp_path)])
    assert result.exit_code == 2 and "not a model bundle" in result.stderr


def test_console_script_help_and_version() -> None:
    out = subprocess.run([sys.executable, "-m", "facial_demographics", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("facial-demographics ")
    commands = (["analyze"], ["demo"], ["data", "prepare"], ["data", "stats"], ["data", "split"], ["train"],
                ["export"], ["evaluate"], ["serve"], ["compare-runs"])
    for command in commands:
        res = runner.invoke(app, [*command, "--help"])
        assert res.exit_code == 0 and "Usage" in res.stdout
