"""``analyze`` never loses results: -o checked before work, streamed output, Ctrl-C (a real SIGINT to a real
process), an injected crash, safe annotated names, the summary line."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facial_demographics.cli import app
from facial_demographics.imaging import encode_jpeg
from facial_demographics.output import CSV_FIELDS, annotated_name

runner = CliRunner()


@pytest.fixture()
def many_photos(tmp_path: Path, astronaut: np.ndarray) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    data = encode_jpeg(astronaut)
    for i in range(400):
        (folder / f"p{i:04d}.jpg").write_bytes(data)
    return folder


def test_missing_output_folders_are_created(tmp_path: Path, astronaut: np.ndarray, tiny_bundle: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(encode_jpeg(astronaut))
    target = tmp_path / "missing" / "dir" / "out.csv"
    result = runner.invoke(app, ["analyze", str(photo), "-f", "csv", "-o", str(target), "-m", str(tiny_bundle)])
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert list(rows[0]) == CSV_FIELDS and rows[0]["path"] == str(photo) and rows[0]["face"] == "0"
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("analysed 1 image, 1 face, 0 unreadable, ") and summary.endswith(" s")


def test_output_that_is_a_folder_is_refused_before_work(tmp_path: Path, tiny_bundle: Path) -> None:
    started = time.perf_counter()
    (tmp_path / "in.jpg").write_bytes(b"not read: -o is refused first")
    result = runner.invoke(app, ["analyze", str(tmp_path / "in.jpg"), "-o", str(tmp_path), "-m", str(tiny_bundle)])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "is a folder" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_ctrl_c_keeps_every_finished_result(many_photos: Path, tiny_bundle: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    process = subprocess.Popen(
        [sys.executable, "-m", "facial_demographics", "analyze", str(many_photos), "-f", fmt, "-o", str(out),
         "-m", str(tiny_bundle), "--batch-size", "8"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A shell's background job (`pytest ... &`) ignores SIGINT and its children inherit that, and Python
        # only turns SIGINT into KeyboardInterrupt when it starts with the default action: restore it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not out.exists() or out.read_text().count('"path"' if fmt != "csv" else "\n") < 3:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "no results were streamed"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("interrupted after ") and line.endswith(f"of 400 images; results so far in {out}")
    done = int(line.split()[2])
    assert 0 < done < 400
    text = out.read_text()
    if fmt == "jsonl":
        results = [json.loads(x) for x in text.splitlines()]
    elif fmt == "json":
        results = json.loads(text)  # the array was closed on interrupt
    else:
        results = list(csv.DictReader(io.StringIO(text)))
    assert len(results) == done and all(Path(r["path"]).parent == many_photos for r in results)


def test_a_crash_keeps_what_was_written(
    many_photos: Path, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facial_demographics.pipeline import FaceAnalyzer

    original = FaceAnalyzer._finish
    calls = []

    def crash_on_third_batch(self: FaceAnalyzer, staged: list) -> list:  # type: ignore[type-arg]
        calls.append(len(staged))
        if len(calls) == 3:
            raise RuntimeError("injected crash")
        return original(self, staged)

    monkeypatch.setattr(FaceAnalyzer, "_finish", crash_on_third_batch)
    out = tmp_path / "out.json"
    result = runner.invoke(app, ["analyze", str(many_photos), "-f", "json", "-o", str(out), "-m", str(tiny_bundle),
                                 "--batch-size", "8"])
    assert isinstance(result.exception, RuntimeError)
    assert "failed after 16 of 400 images" in result.stderr and str(out) in result.stderr
    results = json.loads(out.read_text())
    assert [Path(r["path"]).name for r in results] == [f"p{i:04d}.jpg" for i in range(16)]


def test_long_file_names_are_annotated_safely(tmp_path: Path, astronaut: np.ndarray, tiny_bundle: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    long_a, long_b = "a" * 247 + ".jpg", "a" * 246 + "b.jpg"  # 251 characters, same first 100
    for name in (long_a, long_b, "short.jpg"):
        (folder / name).write_bytes(encode_jpeg(astronaut))
    out = tmp_path / "annotated"
    result = runner.invoke(app, ["analyze", str(folder), "--annotate", str(out), "-f", "jsonl",
                                 "-m", str(tiny_bundle)])
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 3 and max(len(n.encode()) for n in names) < 130
    assert "short.jpg" in names and all(n.endswith(".jpg") for n in names)
    assert annotated_name(str(folder / long_a), set()) != annotated_name(str(folder / long_b), set())


def test_ctrl_c_waits_until_a_result_is_written_and_counted(tmp_path: Path) -> None:
    from facial_demographics.output import OutputFormat, ResultWriter, ctrl_c_deferred

    steps: list[str] = []
    # Python's own Ctrl-C handler, whatever an earlier test left, and signals raised in this thread: os.kill
    # delivers when the OS gets round to it, which under load was once after the block had ended (the full
    # suite beside a training run; never in isolation), and then nothing is left to defer.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with ctrl_c_deferred():
                signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of writing...
                steps.append("counted")  # ...still lets the block finish
            steps.append("after the block")  # never reached: the interrupt comes as the block ends
        assert steps == ["counted"]
        with open(tmp_path / "out.jsonl", "w", encoding="utf-8") as stream:
            writer = ResultWriter(OutputFormat.jsonl, stream)
            with pytest.raises(KeyboardInterrupt):
                with ctrl_c_deferred():  # nested, as analyze uses it: the outer block decides
                    signal.raise_signal(signal.SIGINT)
                    writer.write({"path": "a.jpg", "faces": []})
                    steps.append("written")
            writer.close()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert steps[-1] == "written" and writer.count == 1
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8").count('"path"') == 1
