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
from facial_demographics.labels import AGE_GROUPS

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
                                          "gender", "gender_probability", "age_distribution"]
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
    assert [float(astro[k]) for k in ("age_low", "age_high")] == face["age_interval"]
    assert [float(astro[k]) for k in ("x1", "y1", "x2", "y2")] == face["box"]
    assert astro["gender"] == face["gender"]
    p = float(astro["gender_probability"])
    assert float(astro["p_female"]) == pytest.approx(p if face["gender"] == "female" else 1 - p)


def test_csv_is_flat_numbers(photo_dir: Path, tiny_bundle: Path) -> None:
    code, out = _run("analyze", str(photo_dir), "-f", "csv", "-m", str(tiny_bundle))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == ("path,width,height,face,x1,y1,x2,y2,score,age,age_low,age_high,age_group,gender,"
                        "gender_probability,p_female,error")
    rows = list(csv.DictReader(io.StringIO(out)))
    blank = next(r for r in rows if r["path"].endswith("blank.png"))
    assert blank["face"] == "" and blank["x1"] == "" and blank["width"] == "120"
    for row in rows:
        if row["face"]:
            x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
            assert 0 <= x1 < x2 <= float(row["width"]) and 0 <= y1 < y2 <= float(row["height"])
            assert float(row["age_low"]) <= float(row["age"]) <= float(row["age_high"])
            assert row["age_group"] in AGE_GROUPS
    # What `cut -d, -f` sees: the same number of fields on every line, no JSON brackets.
    assert len({line.count(",") for line in lines}) == 1 and "[" not in out


def test_csv_landmarks_flag(photo_dir: Path, tiny_bundle: Path) -> None:
    code, out = _run("analyze", str(photo_dir / "astronaut.jpg"), "-f", "csv", "--landmarks", "-m", str(tiny_bundle))
    assert code == 0
    row = next(csv.DictReader(io.StringIO(out)))
    names = [f"{p}_{a}" for p in ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left") for a in "xy"]
    assert list(row)[-11:] == [*names, "error"]
    xs = [float(row[n]) for n in names[0::2]]
    ys = [float(row[n]) for n in names[1::2]]
    assert all(float(row["x1"]) <= x <= float(row["x2"]) for x in xs)
    assert all(float(row["y1"]) <= y <= float(row["y2"]) for y in ys)
    assert xs[0] < xs[1]  # the eye with the smaller x first


def test_table_output(photo_dir: Path, tiny_bundle: Path) -> None:
    code, out = _run("analyze", str(photo_dir / "astronaut.jpg"), "-m", str(tiny_bundle))
    assert code == 0 and "Faces" in out and "P(gender)" in out
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
    files = sorted(target.iterdir())  # each copy keeps its input's name and format
    assert [f.name for f in files] == ["astronaut.jpg", "blank.png", "flipped.png"]
    annotated = read_image(files[0])
    original = read_image(photo_dir / "astronaut.jpg")
    assert annotated.shape == original.shape
    assert np.abs(annotated.astype(int) - original.astype(int)).sum() > 0  # something was drawn
    Image.open(files[0]).verify()
    assert Image.open(files[0]).format == "JPEG" and Image.open(files[1]).format == "PNG"


def test_glob_expands_and_a_missing_input_is_a_usage_error(photo_dir: Path, tiny_bundle: Path) -> None:
    code, out = _run("analyze", str(photo_dir / "*.png"), "-f", "jsonl", "-m", str(tiny_bundle))
    names = [Path(json.loads(line)["path"]).name for line in out.splitlines()]
    assert code == 0 and names == ["blank.png", "flipped.png"]
    missing = runner.invoke(app, ["analyze", str(photo_dir / "*.png"), str(photo_dir / "nope.jpg"),
                                  "-m", str(tiny_bundle)])
    assert missing.exit_code == 2 and missing.stdout == ""  # told before any work, nothing analysed
    assert missing.stderr.startswith("error: ") and "nope.jpg: no such file or folder" in missing.stderr


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


def test_folder_of_folders_says_use_recursive(photo_dir: Path, tmp_path: Path, tiny_bundle: Path) -> None:
    parent = tmp_path / "albums"
    parent.mkdir()
    (parent / "2024").mkdir()
    (parent / "2024" / "astronaut.jpg").write_bytes((photo_dir / "astronaut.jpg").read_bytes())
    result = runner.invoke(app, ["analyze", str(parent), "-f", "jsonl", "-m", str(tiny_bundle)])
    assert result.exit_code == 2 and "use --recursive" in result.stderr
    result = runner.invoke(app, ["analyze", str(parent), "-r", "-f", "jsonl", "-m", str(tiny_bundle)])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1


def test_skipped_files_are_counted(photo_dir: Path, tiny_bundle: Path) -> None:
    (photo_dir / "notes.txt").write_text("not a photo")
    (photo_dir / "clip.gif").write_bytes(b"GIF89a")
    result = runner.invoke(app, ["analyze", str(photo_dir), "-f", "jsonl", "-m", str(tiny_bundle)])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 3
    assert "analysed 3 images, 2 faces, 0 unreadable, " in result.stderr
    assert "; 2 files skipped (not " in result.stderr


def test_progress_lines_when_stderr_is_not_a_terminal(
    photo_dir: Path, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import facial_demographics.commands._common as common

    monkeypatch.setattr(common, "PROGRESS_EVERY_S", 0.0)  # a line after every window of images instead of every 5 s
    photo = (photo_dir / "astronaut.jpg").read_bytes()
    for i in range(17):  # three windows of 8 images
        (photo_dir / f"copy{i:02d}.jpg").write_bytes(photo)
    result = runner.invoke(app, ["analyze", str(photo_dir), "-f", "jsonl", "--batch-size", "1",
                                 "-m", str(tiny_bundle)])
    assert result.exit_code == 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("analysed ") and "/" in line]
    assert lines == ["analysed 8/20 images (40 %)", "analysed 16/20 images (80 %)"], result.stderr
    assert result.stdout.count("\n") == 20  # progress goes to stderr only


def test_short_help_option() -> None:
    for args in (["-h"], ["analyze", "-h"], ["data", "prepare", "-h"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0 and "Usage" in res.stdout and "--help" in res.stdout, args


def test_data_commands_name_their_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pandas" else real(name, *a))
    result = runner.invoke(app, ["data", "stats", str(tmp_path)])
    assert result.exit_code == 2
    assert "needs the 'data' extra" in result.stderr and "facial-demographics[data]" in result.stderr
