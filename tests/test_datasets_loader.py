"""Loader: recognising each dataset format from its path, overrides and clear errors."""

from __future__ import annotations

import tarfile
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from facial_demographics.datasets.loader import detect_format, load_dataset

from tests_support import datenum, entry, write_wiki_mat

UTK_NAMES = ["25_0_2_20170116174525125.jpg.chip.jpg", "61_1_20170109142408075.jpg.chip.jpg"]


def utk_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in UTK_NAMES:
        (root / name).write_bytes(b"jpeg")
    return root


def test_utkface_folder_and_archive(tmp_path: Path) -> None:
    folder = utk_folder(tmp_path / "UTKFace")
    assert detect_format(folder) == "utkface"
    assert sorted(r.key for r in load_dataset(folder).records) == sorted(UTK_NAMES)
    archive = tmp_path / "UTKFace.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="UTKFace")
    assert detect_format(archive) == "utkface"
    assert sorted(r.key for r in load_dataset(archive).records) == sorted(UTK_NAMES)


def test_mat_and_tables(tmp_path: Path) -> None:
    mat = write_wiki_mat(tmp_path / "wiki.mat", [entry("01/a.jpg", datenum(date(1980, 1, 1)), 2010)],
                         image_root=tmp_path)
    assert detect_format(mat) == "imdbwiki"
    assert [r.age for r in load_dataset(mat).records] == [30.0]
    assert [r.age for r in load_dataset(mat, age_range=(0, 20)).records] == []  # options reach the reader
    csv = tmp_path / "t.csv"
    csv.write_text("path,age,gender\n01/a.jpg,40,f\n")
    assert detect_format(csv) == "table"
    assert [(r.age, r.gender) for r in load_dataset(csv).records] == [(40.0, 1)]
    parquet = tmp_path / "t.parquet"
    pd.read_csv(csv).to_parquet(parquet)
    assert detect_format(parquet) == "table"
    assert [(r.age, r.gender) for r in load_dataset(parquet).records] == [(40.0, 1)]


def test_format_override(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(b"jpeg")
    with pytest.raises(ValueError, match="plain: no labels.csv in this folder and no UTKFace-style names"):
        load_dataset(folder)
    result = load_dataset(folder, format="utkface")  # forced: the odd name is reported, not dropped
    assert result.seen == 1 and result.rejected[0].item == "photo.jpg"
    labels = tmp_path / "labels.txt"
    labels.write_text("path,age,gender\n")
    with pytest.raises(ValueError, match="labels.txt: unknown dataset format"):
        load_dataset(labels)
    with pytest.raises(ValueError, match="unknown format 'celeba'"):
        load_dataset(folder, format="celeba")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset(tmp_path / "nowhere")
