"""The command line's edges, as a new user meets them: usage errors told before any work and in one form
(``error: ...``), a table that keeps long paths, annotated copies that keep their name and format, the
``--min-face``/``--min-score`` filters (CLI and Python API), and examples at the end of every ``--help``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.main import get_command
from typer.testing import CliRunner

from facial_demographics.cli import app
from facial_demographics.errors import InvalidValueError
from facial_demographics.filters import FaceFilter, face_size
from facial_demographics.imaging import encode_jpeg, encode_png
from facial_demographics.pipeline import FaceAnalyzer
from facial_demographics.types import Detection

runner = CliRunner()


@pytest.fixture()
def photo(tmp_path: Path, astronaut: np.ndarray) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "astronaut.jpg"
    path.write_bytes(encode_jpeg(astronaut))
    return path


def _fails_with(args: list[str], *needles: str) -> str:
    """Run ``args``; assert a usage error (exit 2) in the one form, with nothing on stdout."""
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.stdout == "" and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr
    return res.stderr


def test_no_inputs_gives_a_usage_hint() -> None:
    _fails_with(["analyze"], "facial-demographics analyze photos/", "--help")


def test_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    _fails_with(["analyze", str(tmp_path / "nope")], "nope: no such file or folder")
    _fails_with(["analyze", str(tmp_path / "*.jpg")], "no file matches")


def test_a_video_points_to_the_video_command(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 64)
    _fails_with(["analyze", str(clip)], f"facial-demographics video {clip}")


def test_parquet_is_offered_only_with_ray(photo: Path) -> None:
    help_text = re.sub(r"[\s│]+", " ", runner.invoke(app, ["analyze", "--help"]).stdout)
    assert "table|json|jsonl|csv" in help_text and "parquet too, with --engine ray" in help_text
    _fails_with(["analyze", str(photo), "-f", "parquet"], "--engine ray only", "-f jsonl")


def test_output_under_a_regular_file_names_the_file(photo: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fails_with(["analyze", str(photo), "-o", str(blocker / "out.jsonl")], f"{blocker} is a file, not a folder")


def test_a_bad_model_reads_like_every_other_error(photo: Path, tmp_path: Path) -> None:
    _fails_with(["analyze", str(photo), "-m", str(tmp_path)], "error: cannot load the model: ")


def test_a_missing_extra_reads_like_every_other_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    _fails_with(["analyze", "x.jpg", "--engine", "ray"], "the 'distributed' extra", "pip install")


def test_the_summary_line_counts_in_the_singular(photo: Path, tiny_bundle: Path) -> None:
    res = runner.invoke(app, ["analyze", str(photo), "-f", "jsonl", "-m", str(tiny_bundle)])
    assert res.exit_code == 0 and "analysed 1 image, " in res.stderr


def test_table_keeps_long_paths_and_shows_notes_only_when_needed(tmp_path: Path, astronaut: np.ndarray,
                                                                  tiny_bundle: Path) -> None:
    deep = tmp_path / ("a_folder_with_a_rather_long_name_" * 3) / "and_another_one_below_it"
    deep.mkdir(parents=True)
    (deep / "astronaut_in_a_long_file_name.jpg").write_bytes(encode_jpeg(astronaut))
    res = runner.invoke(app, ["analyze", str(deep), "-m", str(tiny_bundle)])
    assert res.exit_code == 0
    first_column = "".join(line.split("│")[1].strip() for line in res.stdout.splitlines() if line.count("│") > 2)
    assert str(deep / "astronaut_in_a_long_file_name.jpg") in first_column  # wrapped over lines, never cut
    assert "note" not in res.stdout and "…" not in res.stdout
    (deep / "blank.png").write_bytes(encode_png(np.full((80, 120, 3), 200, np.uint8)))
    res = runner.invoke(app, ["analyze", str(deep), "-m", str(tiny_bundle)])
    assert "note" in res.stdout and "no face" in res.stdout


def test_annotate_keeps_name_and_format(tmp_path: Path, astronaut: np.ndarray, tiny_bundle: Path) -> None:
    folder = tmp_path / "in"
    (folder / "b").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(encode_jpeg(astronaut))
    (folder / "b" / "a.jpg").write_bytes(encode_jpeg(astronaut))  # the same name twice: both kept
    out = tmp_path / "annotated"
    res = runner.invoke(app, ["analyze", str(folder), "-r", "--annotate", str(out), "-f", "jsonl",
                              "-m", str(tiny_bundle)])
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a~2.jpg"]
    original = (folder / "a.jpg").stat().st_size
    assert Image.open(out / "a.jpg").format == "JPEG" and (out / "a.jpg").stat().st_size < 2 * original


def test_annotate_refuses_the_inputs_own_folder(photo: Path, tiny_bundle: Path) -> None:
    _fails_with(["analyze", str(photo), "--annotate", str(photo.parent), "-m", str(tiny_bundle)],
                "would overwrite")


def test_min_face_and_min_score_drop_faces_in_the_cli(photo: Path) -> None:
    def faces(*options: str) -> int:
        res = runner.invoke(app, ["analyze", str(photo), "-f", "jsonl", *options])
        assert res.exit_code == 0, res.stderr
        return len(json.loads(res.stdout)["faces"])

    assert faces() == 1
    assert faces("--min-face", "40", "--min-score", "0.9") == 1  # the astronaut's face is ~90 px, score ~1
    assert faces("--min-face", "400") == 0
    _fails_with_bad = runner.invoke(app, ["analyze", str(photo), "--min-score", "1.5"])
    assert _fails_with_bad.exit_code == 2


def test_min_face_and_min_score_in_the_python_api(astronaut: np.ndarray) -> None:
    with FaceAnalyzer() as analyzer:
        assert len(analyzer.analyze(astronaut).faces) == 1
    with FaceAnalyzer(min_face=400) as analyzer:
        assert analyzer.analyze(astronaut).faces == []
    with pytest.raises(InvalidValueError, match="cropped"):
        FaceAnalyzer(cropped=True, min_face=20)


def test_face_filter_rule() -> None:
    det = Detection(box=(10.0, 10.0, 50.0, 90.0), score=0.8, landmarks=np.zeros((5, 2)))
    assert face_size(det.box) == 40
    assert FaceFilter(min_face=40, min_score=0.8).keep(det)
    assert not FaceFilter(min_face=41).keep(det) and not FaceFilter(min_score=0.81).keep(det)
    assert not FaceFilter().active and FaceFilter().apply([det]) == [det]
    for bad in ({"min_face": -1}, {"min_score": 1.1}):
        with pytest.raises(InvalidValueError):
            FaceFilter(**bad)


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer vendors its own click)
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def test_every_commands_help_ends_with_examples() -> None:
    commands = _commands(get_command(app))
    assert len(commands) >= 15
    for command in commands:
        res = runner.invoke(app, [*command, "--help"])
        assert res.exit_code == 0, command
        tail = res.stdout.rstrip().split("Examples:")
        assert len(tail) == 2 and "facial-demographics " + " ".join(command) in tail[1], command


def test_data_commands_say_what_a_labels_table_holds(tmp_path: Path) -> None:
    help_text = re.sub(r"[\s│]+", " ", runner.invoke(app, ["data", "prepare", "--help"]).stdout)
    assert "path,age,gender" in help_text and "0/1, male/female or m/f" in help_text
    (tmp_path / "x.jpg").write_bytes(b"not labelled")
    err = _fails_with(["data", "stats", str(tmp_path)], "labels.csv", "path,age,gender", "--format")
    assert "format=" not in err


def test_an_input_gone_before_its_annotated_copy_is_reported_and_the_run_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--annotate and --unique read each analysed image once more (once for both); when that fails, the
    item and the reason are printed and nothing is raised."""
    from facial_demographics.commands.analyze import _reread

    photo = tmp_path / "here.png"
    photo.write_bytes(encode_png(np.full((40, 60, 3), 90, np.uint8)))
    assert _reread(str(photo)).shape == (40, 60, 3)
    assert _reread(str(tmp_path / "gone.jpg")) is None
    printed = capsys.readouterr()
    assert "gone.jpg: could not be read again for --annotate/--unique" in printed.err + printed.out
