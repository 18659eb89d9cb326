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
from facial_demographics.datasets.cache import load_cache, prepare_cache
from facial_demographics.datasets.loader import load_dataset
from facial_demographics.imaging import encode_jpeg


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
