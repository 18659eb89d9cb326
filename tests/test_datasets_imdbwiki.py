"""IMDB-WIKI reader on .mat files written in the real nested struct layout."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from facial_demographics.datasets.imdbwiki import age_at_photo, birth_date, read_imdbwiki
from facial_demographics.labels import FEMALE, MALE

from tests_support import datenum, entry, matlab_cell, write_wiki_mat


def test_writer_produces_the_real_layout(tmp_path: Path) -> None:
    mat_path = write_wiki_mat(tmp_path / "wiki.mat", [entry("17/a.jpg", 723671.0, 2009),
                                                       entry("18/b.jpg", 723671.0, 2010, name="")])
    wiki = scipy.io.loadmat(str(mat_path))["wiki"]
    assert wiki.shape == (1, 1) and wiki.dtype.names is not None  # a 1x1 struct array
    struct = wiki[0, 0]
    for field in ("dob", "photo_taken", "gender", "face_score", "second_face_score", "full_path", "name"):
        assert struct[field].shape == (1, 2), field
    first_path = struct["full_path"][0][0]
    assert isinstance(first_path, np.ndarray) and first_path.dtype.kind == "U" and first_path[0] == "17/a.jpg"
    assert struct["name"][0][1].size == 0  # an empty MATLAB string
    assert struct["face_location"][0][0].shape == (1, 4)
    assert wiki[0, 0]["dob"][0][0] == 723671.0  # the access path used on the real file


def test_datenum_and_mid_year_rule() -> None:
    assert birth_date(datenum(date(1981, 6, 30))) == date(1981, 6, 30)
    assert age_at_photo(date(1981, 6, 30), 2009) == 28  # birthday before July: already had it
    assert age_at_photo(date(1981, 7, 1), 2009) == 27  # July or later: not yet
    for odd in (math.nan, math.inf, -math.inf, 0.0, 366.0, -5.0, 1e12):
        assert birth_date(odd) is None


CASES = [
    ("june", entry("01/june.jpg", datenum(date(1981, 6, 15)), 2009, gender=1.0, name="June Person")),
    ("july", entry("01/july.jpg", datenum(date(1981, 7, 1)), 2009, gender=0.0, name="July Person")),
    ("nan-gender", entry("02/nan.jpg", datenum(date(1970, 1, 1)), 2000, gender=math.nan)),
    ("no-face", entry("03/noface.jpg", datenum(date(1970, 1, 1)), 2000, face=-math.inf)),
    ("second-face", entry("04/second.jpg", datenum(date(1970, 1, 1)), 2000, second=1.7)),
    ("born-after", entry("05/after.jpg", datenum(date(2012, 3, 1)), 2009)),
    ("nan-dob", entry("06/nandob.jpg", math.nan, 2009)),
    ("tiny-dob", entry("06/tiny.jpg", 12.0, 2009)),
    ("huge-dob", entry("06/huge.jpg", 1e12, 2009)),
    ("too-old", entry("07/old.jpg", datenum(date(1890, 1, 1)), 2000)),
    ("weak-face", entry("08/weak.jpg", datenum(date(1970, 1, 1)), 2000, face=1.2)),
    ("no-name", entry("09/noname.jpg", datenum(date(1980, 2, 2)), 2010, name="")),
]
EXPECTED_REASON = {
    "nan-gender": "unknown gender",
    "no-face": "no face",
    "second-face": "second face",
    "born-after": "birth after photo",
    "nan-dob": "invalid date of birth",
    "tiny-dob": "invalid date of birth",
    "huge-dob": "invalid date of birth",
    "too-old": "age out of range",
}


@pytest.fixture
def wiki(tmp_path: Path) -> Path:
    return write_wiki_mat(tmp_path / "wiki.mat", [e for _, e in CASES], image_root=tmp_path)


def test_default_filters(wiki: Path) -> None:
    result = read_imdbwiki(wiki)
    paths = {label: e["full_path"] for label, e in CASES}
    assert result.seen == len(CASES)
    records = {r.key: r for r in result.records}
    assert set(records) == {paths[k] for k in ("june", "july", "weak-face", "no-name")}
    june, july = records[paths["june"]], records[paths["july"]]
    assert (june.age, june.gender, june.identity) == (28.0, MALE, "June Person")  # wiki 1 = male
    assert (july.age, july.gender, july.identity) == (27.0, FEMALE, "July Person")  # wiki 0 = female
    assert records[paths["no-name"]].identity is None
    assert june.path == str(wiki.parent / paths["june"]) and june.source == "wiki"
    rejected = {r.item: r.reason for r in result.rejected}
    assert set(rejected) == {paths[k] for k in EXPECTED_REASON}
    for label, reason in EXPECTED_REASON.items():
        assert rejected[paths[label]].startswith(reason), rejected[paths[label]]


def test_filters_are_options(wiki: Path) -> None:
    result = read_imdbwiki(wiki, min_face_score=2.0, allow_second_face=True, require_gender=False,
                           age_range=(0, 120))
    keys = {r.key: r for r in result.records}
    assert "04/second.jpg" in keys and keys["02/nan.jpg"].gender is None
    assert keys["07/old.jpg"].age == 110.0
    rejected = {r.item: r.reason for r in result.rejected}
    assert rejected["08/weak.jpg"].startswith("face score too low")
    assert result.seen == len(CASES)


def test_missing_images_are_rejected(tmp_path: Path) -> None:
    mat = write_wiki_mat(tmp_path / "wiki.mat", [e for _, e in CASES[:2]], image_root=tmp_path / "imgs")
    result = read_imdbwiki(mat)  # default root is the .mat's folder, where the images are not
    assert not result.records and all(r.reason.startswith("image missing") for r in result.rejected)
    assert len(read_imdbwiki(mat, tmp_path / "imgs").records) == 2
    assert len(read_imdbwiki(mat, check_files=False).records) == 2


def test_imdb_struct_and_duplicates(tmp_path: Path) -> None:
    same = entry("01/x.jpg", datenum(date(1980, 1, 1)), 2010)
    mat = write_wiki_mat(tmp_path / "imdb.mat", [same, same], struct="imdb", image_root=tmp_path)
    result = read_imdbwiki(mat)
    assert [r.key for r in result.records] == ["01/x.jpg"] and result.records[0].source == "imdb"
    assert [r.reason for r in result.rejected] == ["duplicate path: listed more than once"]


def test_bad_files(tmp_path: Path) -> None:
    scipy.io.savemat(str(tmp_path / "other.mat"), {"celeba": {"x": np.zeros(3)}})
    with pytest.raises(ValueError, match="no 'wiki' or 'imdb' struct"):
        read_imdbwiki(tmp_path / "other.mat")
    scipy.io.savemat(str(tmp_path / "partial.mat"), {"wiki": {"dob": np.zeros(3)}})
    with pytest.raises(ValueError, match="lacks fields"):
        read_imdbwiki(tmp_path / "partial.mat")
    (tmp_path / "junk.mat").write_bytes(b"definitely not MATLAB")
    with pytest.raises(ValueError, match="junk.mat"):
        read_imdbwiki(tmp_path / "junk.mat")


def test_numbers_stored_as_cells(tmp_path: Path) -> None:
    """A hand-edited file may hold dob as a cell with an empty entry: that entry is rejected, not fatal."""
    entries = [entry("01/a.jpg", 0.0, 2009), entry("01/b.jpg", 0.0, 2009)]
    mat_path = write_wiki_mat(tmp_path / "wiki.mat", entries, image_root=tmp_path)
    mat = scipy.io.loadmat(str(mat_path))
    dob = matlab_cell([np.array([[datenum(date(1980, 3, 3))]]), np.zeros((0, 0))])
    mat["wiki"][0, 0]["dob"] = dob.reshape(1, 2)
    scipy.io.savemat(str(mat_path), {"wiki": mat["wiki"]})
    result = read_imdbwiki(mat_path)
    assert [(r.key, r.age) for r in result.records] == [("01/a.jpg", 29.0)]
    assert [r.reason for r in result.rejected] == ["invalid date of birth: datenum nan"]
