"""The aligned-face cache: every record accounted for, resumable, and readable by training."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facial_demographics.alignment import AlignmentConfig
from facial_demographics.cli import app
from facial_demographics.datasets import cache as cache_module
from facial_demographics.datasets.cache import load_cache, prepare_cache, resize_crop
from facial_demographics.datasets.loader import load_dataset
from facial_demographics.imaging import encode_jpeg, read_image


@pytest.fixture()
def small_dataset(tmp_path: Path, astronaut: np.ndarray) -> Path:
    """A UTKFace-style folder: real face crops, a blank image, a truncated and a fake JPEG."""
    root = tmp_path / "utk"
    root.mkdir()
    face = encode_jpeg(astronaut[30:230, 140:320])
    for i in range(7):
        (root / f"{20 + i}_{i % 2}_0_2017011221350090{i}.jpg.chip.jpg").write_bytes(face)
    (root / "40_1_2_20170112213500990.jpg.chip.jpg").write_bytes(encode_jpeg(np.full((200, 200, 3), 90, np.uint8)))
    (root / "50_0_1_20170112213500991.jpg.chip.jpg").write_bytes(face[: len(face) // 2])
    (root / "60_1_3_20170112213500992.jpg.chip.jpg").write_text("not a jpeg")
    return root


def test_prepare_accounts_for_every_record(small_dataset: Path, tmp_path: Path) -> None:
    records = load_dataset(small_dataset).records
    cache = prepare_cache(records, tmp_path / "c", AlignmentConfig(size=48), workers=1)
    assert len(cache.index) == len(records) == 10 and cache.faces.shape == (10, 48, 48, 3)
    status = cache.index.set_index("age")["status"].to_dict()
    assert status[40.0] == "fallback"  # a blank image: no face, whole image used
    assert status[50.0] == "unreadable" and status[60.0] == "unreadable"
    assert sum(s == "ok" for s in status.values()) == 7
    bad = cache.index[cache.index.status == "unreadable"]
    assert all(bad["error"].str.len() > 0)
    assert not cache.faces[bad.index].any()  # unreadable rows stay zero
    ok = cache.index[cache.index.status == "ok"].index
    assert cache.faces[ok].mean() > 20
    assert cache.meta["status_counts"] == {"ok": 7, "fallback": 1, "unreadable": 2}
    assert set(cache.index.columns) >= {"key", "path", "age", "gender", "race", "det_score", "fallback", "lm0x"}


def test_prepare_resumes_without_redoing_finished_chunks(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "CHUNK", 3)
    records = load_dataset(small_dataset).records
    out = tmp_path / "c"
    first = prepare_cache(records, out, AlignmentConfig(size=48), workers=1)
    expected = np.array(first.faces)
    # Simulate an interrupt: the last chunk and the final index never got written.
    parts = sorted((out / "parts").glob("*.parquet"))
    assert len(parts) == 4
    parts[-1].unlink()
    (out / "index.parquet").unlink()
    done: list[int] = []
    resumed = prepare_cache(records, out, AlignmentConfig(size=48), workers=1, progress=done.append)
    assert done == [9, 1]  # 9 images already done, then only the missing chunk's one image
    np.testing.assert_array_equal(np.array(resumed.faces), expected)
    with pytest.raises(ValueError, match="other records or settings"):
        prepare_cache(records, out, AlignmentConfig(size=64), workers=1)


def test_open_refuses_incomplete_cache(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        load_cache(tmp_path)


def test_prepare_command(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-cache"
    result = CliRunner().invoke(app, ["data", "prepare", str(small_dataset), "--size", "40", "--out", str(out),
                                      "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "10 items seen" in result.stdout and "unreadable 2" in result.stdout
    assert load_cache(out).faces.shape == (10, 40, 40, 3)
    shutil.rmtree(out)


def test_prepare_without_alignment_resizes_each_crop(small_dataset: Path, tmp_path: Path) -> None:
    """--no-align: the report's input (UTKFace's own crops resized), in the cache format training reads."""
    records = load_dataset(small_dataset).records
    cache = prepare_cache(records, tmp_path / "raw", AlignmentConfig(size=198), workers=1, align=False)
    assert cache.faces.shape == (10, 198, 198, 3)
    status = cache.index.set_index("age")["status"].to_dict()
    # No detector runs: the blank image is stored like any crop, unreadable files still keep their row.
    assert status[40.0] == "ok" and status[50.0] == "unreadable" and status[60.0] == "unreadable"
    assert cache.index["det_score"].isna().all() and cache.index["lm0x"].isna().all()
    assert cache.meta["aligned"] is False and cache.meta["template"] == "utkface5"
    first = cache.index[cache.index["age"] == 20.0].index[0]
    source = read_image(records[int(first)].path)  # the 180x200 crop, stretched to the square like Keras
    assert source.shape[:2] == (200, 180)
    expected = resize_crop(source, 198)
    np.testing.assert_array_equal(cache.faces[first], expected)
    # Close to the crop it came from: compare at the source's own grid.
    back = resize_crop(np.array(cache.faces[first]), 200)
    assert np.abs(back.astype(int) - resize_crop(source, 200).astype(int)).mean() < 4
    assert (cache.faces[cache.index[cache.index.status == "unreadable"].index] == 0).all()
    # An aligned cache of the same records elsewhere is not mistaken for it, and vice versa.
    with pytest.raises(ValueError, match="other records or settings"):
        prepare_cache(records, tmp_path / "raw", AlignmentConfig(size=198), workers=1)


def test_resize_crop_keeps_a_crop_of_the_right_size(astronaut: np.ndarray) -> None:
    crop = np.ascontiguousarray(astronaut[:198, :198])
    assert resize_crop(crop, 198) is crop
    small = resize_crop(astronaut, 64)
    assert small.shape == (64, 64, 3) and small.dtype == np.uint8


def test_prepare_command_no_align(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "raw-cache"
    result = CliRunner().invoke(app, ["data", "prepare", str(small_dataset), "--size", "50", "--no-align",
                                      "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "ok 8" in result.stdout and "unreadable 2" in result.stdout
    cache = load_cache(out)
    assert cache.faces.shape == (10, 50, 50, 3) and cache.meta["aligned"] is False


def test_training_reads_an_unaligned_cache_unchanged(small_dataset: Path, tmp_path: Path) -> None:
    """The seed recipe trains from a --no-align cache exactly as from an aligned one."""
    from facial_demographics.training.config import config_from_dict, load_config
    from facial_demographics.training.loop import train

    records = load_dataset(small_dataset).records
    cache = prepare_cache(records, tmp_path / "raw", AlignmentConfig(size=40), workers=1, align=False)
    split = tmp_path / "split.csv"
    split.write_text("key,split\n" + "".join(f"{k},{'train' if i % 3 else 'val'}\n"
                                             for i, k in enumerate(cache.index["key"])))
    raw = load_config("seed").to_dict()
    raw["data"].update(cache=str(cache.path), split=str(split), input_size=32)
    raw["model"].update(channels=[4, 8], hidden=8)
    raw["train"].update(epochs=1, batch_size=4, eval_batch_size=4, threads=1)
    raw["rounds"] = []
    result = train(config_from_dict(raw), tmp_path / "run", progress=False, log=lambda _: None)
    assert result.history[-1]["global_step"] == 2  # 6 readable train faces (unreadable rows skipped), batch 4
    assert 0 <= result.history[-1]["val_bucket_acc"] <= 1 and result.last_checkpoint.is_file()
