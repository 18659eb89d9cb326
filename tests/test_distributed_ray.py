"""``analyze --engine ray`` on a real local Ray cluster (``ray.init(num_cpus=2)``, started here): the same
records, errors, exit code and summary as the local engine, JSON Lines and Parquet output, resuming a run
that died part way, inputs from folders, globs, lists of paths and ``file://`` URIs; and, marked slow, the
same answers as the local engine on 2,000 UTKFace photos plus broken files."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from facial_demographics.cli import app, expand_inputs
from facial_demographics.distributed import AnalyzerSpec, ClusterOptions, iter_results, list_inputs
from facial_demographics.distributed.sinks import SinkError, open_sink
from facial_demographics.distributed.sources import IMAGE_SUFFIXES
from facial_demographics.imaging import encode_jpeg
from facial_demographics.pipeline import FaceAnalyzer

from bad_inputs import corpus

runner = CliRunner()
SUMMARY = re.compile(r"^analysed (\d+) images?, (\d+) faces?, (\d+) unreadable, [\d.]+ s")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    # A real local cluster of 2 CPUs; a small object store (the rows are paths and results).
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20, logging_level="ERROR")
    yield ray
    ray.shutdown()


#: The bad-input corpus, less the picture that is only too large for the server (it reads fine here).
BAD = [bad for bad in corpus() if bad.code != "image_too_large"]


def _bad_files(folder: Path) -> list[str]:
    """Write every bad input into ``folder``; their names."""
    for bad in BAD:
        (folder / bad.name).write_bytes(bad.data)
    return [bad.name for bad in BAD]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """A folder of real photos (the astronaut, shifted and cropped so each differs), broken files, a text
    file that is skipped for its extension, and a subfolder."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(10):
        crop = astronaut[i * 8:, i * 5:] if i % 2 else astronaut[:, ::-1][i * 4:]
        (folder / f"photo{i:02d}.jpg").write_bytes(encode_jpeg(np.ascontiguousarray(crop)))
    _bad_files(folder)
    (folder / "notes.txt").write_text("not an image, not analysed")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.jpg").write_bytes(encode_jpeg(astronaut[100:400, 100:400]))
    return folder


def _records(path: Path) -> list[dict[str, Any]]:
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["path"])


def _same(a: Any, b: Any) -> bool:
    """Records equal, numbers within the last printed digit (the engines use different thread counts)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 0.0101
    return bool(a == b)


# -- inputs and outputs, no cluster needed ------------------------------------------------------------
def test_local_inputs_are_listed_as_the_local_engine_lists_them(photos: Path) -> None:
    for items, recursive in (([str(photos)], False), ([str(photos)], True), ([str(photos / "photo0*.jpg")], False),
                             ([str(photos / "**" / "*.jpg")], True), ([str(photos / "nope*.jpg")], False),
                             ([str(photos / "missing.jpg"), str(photos / "notes.txt")], False)):
        ours, theirs = list_inputs(items, recursive), expand_inputs(items, recursive)
        assert (list(ours.paths), list(ours.skipped), list(ours.nested)) == (
            theirs.paths, theirs.skipped, theirs.nested), items


def test_uris_and_lists_of_paths(photos: Path, tmp_path: Path) -> None:
    uri = photos.as_uri()
    folder, local = list_inputs([uri]), expand_inputs([str(photos)], False)
    assert list(folder.paths) == [Path(p).as_uri() for p in local.paths]  # same files, same order
    assert list(folder.skipped) == [Path(p).as_uri() for p in local.skipped]
    assert len(list_inputs([uri], recursive=True).paths) == len(folder.paths) + 1
    assert list_inputs([f"{uri}/photo0*.jpg"]).paths == tuple(f"{uri}/photo{i:02d}.jpg" for i in range(10))
    assert list_inputs([f"{uri}/missing.jpg"]).paths == (f"{uri}/missing.jpg",)  # reported later, not dropped
    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos\n{photos / 'photo01.jpg'}\n\n{uri}/photo02.jpg\n")
    assert list_inputs([], path_lists=[str(listing)]).paths == (str(photos / "photo01.jpg"), f"{uri}/photo02.jpg")


def test_the_local_engine_reads_lists_of_paths_too(photos: Path, tmp_path: Path) -> None:
    listing = tmp_path / "paths.txt"
    listing.write_text(f"{photos / 'photo01.jpg'}\n# a comment\n{photos / 'photo02.jpg'}\n")
    out = tmp_path / "out.jsonl"
    result = _analyze(str(photos / "photo03.jpg"), "--paths-from", str(listing), "-f", "jsonl", "-o", str(out))
    assert result.exit_code == 0
    assert [r["path"] for r in _records(out)] == [str(photos / f"photo0{i}.jpg") for i in (1, 2, 3)]
    missing = _analyze("--paths-from", str(tmp_path / "nope.txt"))
    assert missing.exit_code == 2 and "cannot read this list of paths" in missing.stderr


def test_jsonl_resume_drops_a_cut_last_line_and_refuses_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"path": "a", "faces": [{}], "error": null}\n{"path": "b", "faces": [], "error": "bad"}\n{"pa')
    sink, previous = open_sink(out, "jsonl")
    assert (previous.paths, previous.faces, previous.unreadable) == ({"a", "b"}, 1, 1)
    sink.write({"path": "c", "faces": [], "error": None})
    sink.close()
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == ["a", "b", "c"]
    assert open_sink(out, "jsonl", resume=False)[1].images == 0 and out.read_text() == ""
    out.write_text("hello\n" + '{"path": "a"}\n')
    with pytest.raises(SinkError, match="line 1 is not an analyze record"):
        open_sink(out, "jsonl")
    with pytest.raises(SinkError, match="folder of part files"):
        open_sink(None, "parquet")


# -- on the cluster ---------------------------------------------------------------------------------
def _analyze(*args: str) -> Any:
    return runner.invoke(app, ["analyze", *args], catch_exceptions=False)


def test_ray_engine_writes_what_the_local_engine_writes(cluster: Any, photos: Path, tmp_path: Path) -> None:
    # A missing file typed on the command line is a usage error (exit 2) for both engines; one in a path
    # list is a per-image failure, as if it vanished during the run.
    listed = tmp_path / "list.txt"
    listed.write_text(f"{photos / 'missing.jpg'}\n")
    for engine in ("local", "ray"):
        assert _analyze(str(photos / "missing.jpg"), "--engine", engine, "-f", "jsonl").exit_code == 2
    inputs = [str(photos), "--paths-from", str(listed)]
    local = _analyze(*inputs, "-f", "jsonl", "-o", str(tmp_path / "local.jsonl"))
    ray = _analyze(*inputs, "--engine", "ray", "-f", "jsonl", "-o", str(tmp_path / "ray.jsonl"))
    assert local.exit_code == ray.exit_code == 1  # unreadable inputs, as for the local engine
    expected = _records(tmp_path / "local.jsonl")
    assert _same(_records(tmp_path / "ray.jsonl"), expected)
    assert sum(r["error"] is not None for r in expected) == len([b for b in BAD if b.name.endswith(
        tuple(IMAGE_SUFFIXES))]) + 1  # the folder's bad images (.bin, .heic ... are skipped) and missing.jpg
    assert sum(len(r["faces"]) for r in expected) >= 10
    local_summary = SUMMARY.match(local.stderr.strip().splitlines()[-1])
    ray_summary = SUMMARY.match(ray.stderr.strip().splitlines()[-1])
    assert local_summary and ray_summary and local_summary.groups() == ray_summary.groups()
    skipped = [line.rsplit(" s; ", 1)[1] for line in (local.stderr.strip().splitlines()[-1],
                                                       ray.stderr.strip().splitlines()[-1])]
    assert skipped[0] == skipped[1] == "5 files skipped (not .bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp)"
    for record in expected:  # each unreadable input named with its reason, as the local engine does
        if record["error"]:
            assert f"{record['path']}: {record['error']}" in ray.stderr.replace("\n", "")

    # Parquet: a folder of parts holding the same records.
    pq = pytest.importorskip("pyarrow.parquet")
    assert _analyze(*inputs, "--engine", "ray", "-f", "parquet", "-o", str(tmp_path / "pq")).exit_code == 1
    table = pq.read_table(tmp_path / "pq")
    assert _same(sorted(table.to_pylist(), key=lambda r: r["path"]), expected)


def test_rerun_resumes_a_run_that_died_part_way(cluster: Any, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    first = _analyze(str(photos), "--engine", "ray", "-f", "jsonl", "-o", str(out))
    full = out.read_text().splitlines(keepends=True)
    # As if killed after 6 records, in the middle of writing the 7th.
    out.write_text("".join(full[:6]) + full[6][:40])
    again = _analyze(str(photos), "--engine", "ray", "-f", "jsonl", "-o", str(out))
    assert f"resuming: 6 of {len(full)} inputs already in {out}" in again.stderr
    summary = again.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"analysed {len(full) - 6} images") and "6 images already in" in summary
    assert first.exit_code == again.exit_code == 1  # earlier records' errors still count
    assert sorted(out.read_text().splitlines(keepends=True)) == sorted(full)  # each input once, nothing lost
    # Nothing left: no cluster work at all; --no-resume starts over.
    started = time.perf_counter()
    done = _analyze(str(photos), "--engine", "ray", "-f", "jsonl", "-o", str(out))
    assert done.stderr.strip().splitlines()[-1].startswith("analysed 0 images, 0 faces, 0 unreadable")
    assert time.perf_counter() - started < 30
    assert _analyze(str(photos / "photo0*.jpg"), "--engine", "ray", "--no-resume", "-f", "jsonl",
                    "-o", str(out)).exit_code == 0
    assert len(out.read_text().splitlines()) == 10

    # Parquet parts: a part a killed run left half-written is removed and its inputs redone.
    folder = tmp_path / "pq"
    assert _analyze(str(photos / "photo0*.jpg"), "--engine", "ray", "-f", "parquet", "-o", str(folder)).exit_code == 0
    (folder / ".part-killed-00000.parquet.tmp").write_bytes(b"PAR1 half")
    again = _analyze(str(photos), "--engine", "ray", "-f", "parquet", "-o", str(folder))
    assert "10 images already in" in again.stderr and not list(folder.glob(".*.tmp"))
    assert sorted(p.name for p in folder.iterdir())[0].startswith("part-")


def test_uris_and_path_lists_on_the_cluster(cluster: Any, photos: Path, tmp_path: Path) -> None:
    listing = tmp_path / "paths.txt"
    listing.write_text("\n".join(str(photos / f"photo{i:02d}.jpg") for i in range(3)) + "\n")
    out = tmp_path / "out.jsonl"
    result = _analyze(f"{photos.as_uri()}/photo0[3-5].jpg", f"{photos.as_uri()}/cut.jpg",
                      f"{photos.as_uri()}/nowhere.jpg", "--paths-from", str(listing),
                      "--engine", "ray", "--actors", "1", "--threads", "2", "-f", "jsonl", "-o", str(out))
    assert result.exit_code == 1
    records = {r["path"]: r for r in _records(out)}
    assert len(records) == 8
    assert records[f"{photos.as_uri()}/nowhere.jpg"]["error"] == "no such file"
    assert "truncated" in records[f"{photos.as_uri()}/cut.jpg"]["error"]
    local = FaceAnalyzer().analyze(photos / "photo04.jpg")
    assert _same(records[f"{photos.as_uri()}/photo04.jpg"]["faces"], local.to_dict()["faces"])


def test_bad_usage_exits_2(cluster: Any, photos: Path, tmp_path: Path) -> None:
    for args, says in ((["-f", "csv"], "--format jsonl or --format parquet"),
                       (["-f", "jsonl", "--annotate", str(tmp_path / "a")], "--annotate"),
                       (["-f", "jsonl", "-m", str(tmp_path)], "manifest")):
        result = _analyze(str(photos), "--engine", "ray", *args)
        assert result.exit_code == 2 and says in result.stderr, result.stderr
    result = _analyze(str(tmp_path / "empty*.jpg"), "--engine", "ray", "-f", "jsonl")
    assert result.exit_code == 2 and "no file matches" in result.stderr  # a usage error, as locally
    assert _analyze(str(photos), "-f", "parquet").exit_code == 2  # the local engine writes no Parquet


# -- 2,000 real photos --------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_thousand_utkface_photos_give_the_local_engines_answers(
        cluster: Any, utkface_dir: Path, tmp_path: Path) -> None:
    photos = sorted(str(p) for p in utkface_dir.glob("*.jpg"))[:2000]
    assert len(photos) == 2000
    bad = tmp_path / "bad"
    bad.mkdir()
    paths = photos + [str(bad / name) for name in _bad_files(bad)] + [str(bad / "missing.jpg")]
    started = time.perf_counter()
    local = sorted(FaceAnalyzer(cropped=True).iter_analyze(paths), key=lambda r: str(r.path))
    local_s = time.perf_counter() - started
    started = time.perf_counter()
    ours = sorted(iter_results(paths, AnalyzerSpec(cropped=True), ClusterOptions(actors=2)), key=lambda r: str(r.path))
    ray_s = time.perf_counter() - started
    assert [r.path for r in ours] == [r.path for r in local] == sorted(paths)
    assert [r.error for r in ours] == [r.error for r in local]
    assert sum(r.error is not None for r in ours) == len(paths) - 2000
    assert [len(r.faces) for r in ours] == [len(r.faces) for r in local]
    ages = np.array([f.age for r in ours for f in r.faces])
    local_ages = np.array([f.age for r in local for f in r.faces])
    assert len(ages) == 2000 and np.abs(ages - local_ages).max() <= 1e-5
    gender = np.array([f.gender_probability for r in ours for f in r.faces], dtype=float)
    local_gender = np.array([f.gender_probability for r in local for f in r.faces], dtype=float)
    assert np.abs(gender - local_gender).max() <= 1e-5
    boxes = np.array([f.box for r in ours for f in r.faces])
    assert np.abs(boxes - np.array([f.box for r in local for f in r.faces])).max() <= 1e-3
    print(f"\n{len(paths)} images: local {len(paths) / local_s:.1f} images/s, ray (2 actors x 1 CPU, "
          f"actor start included) {len(paths) / ray_s:.1f} images/s; max |age difference| "
          f"{np.abs(ages - local_ages).max():.2e}")
    shutil.rmtree(bad)
