"""UTKFace reader on generated folders and archives: good, malformed and non-image names."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from facial_demographics.datasets.utkface import (
    MemberReader,
    parse_name,
    read_bytes,
    read_utkface,
    split_archive_path,
)
from facial_demographics.labels import FEMALE, MALE

GOOD = {
    "25_0_2_20170116174525125.jpg.chip.jpg": (25.0, MALE, "Asian"),
    "1_1_0_20161219140623097.jpg.chip.jpg": (1.0, FEMALE, "White"),
    "116_1_3_20170120134921760.jpg": (116.0, FEMALE, "Indian"),
}
# Used, but with a note: age and gender are sound.
PARTLY = {
    "39_1_20170116174525125.jpg.chip.jpg": "race missing",
    "55_0_0_20170116232725357jpg.chip.jpg": "datetime malformed",
    "30_0_1_20170116174525125_extra.jpg": "extra fields",
    "30_1_9_20170116174525125.jpg": "race not 0..4",
}
BAD = {
    "40_3_0_20170116174525125.jpg.chip.jpg": "gender not 0/1",
    "abc_0_0_20170116174525125.jpg.chip.jpg": "age not a number",
    "130_0_0_20170116174525125.jpg.chip.jpg": "age out of range",
    "25_x_0_20170116174525125.jpg": "gender not 0/1",
    "25.jpg": "gender missing",
}


def make_folder(root: Path) -> dict[str, bytes]:
    """Write every test name (plus a nested one, a text file and an empty image); return key -> bytes."""
    files: dict[str, bytes] = {}
    for i, name in enumerate([*GOOD, *PARTLY, *BAD]):
        files[name] = f"jpeg {i}".encode()
    files["sub/20_1_4_20170116174525125.jpg.chip.jpg"] = b"nested"
    files["notes.txt"] = b"not an image"
    files["33_0_1_20170116174525125.jpg.chip.jpg"] = b""  # empty file
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


def test_parse_name_good_fields() -> None:
    parsed = parse_name("25_0_2_20170116174525125.jpg.chip.jpg")
    assert (parsed.age, parsed.gender, parsed.race, parsed.taken) == (25, MALE, 2, "20170116174525125")
    assert parsed.problems == () and parsed.usable


def test_parse_name_missing_race_keeps_age_gender_and_datetime() -> None:
    parsed = parse_name("61_1_20170109142408075.jpg.chip.jpg")
    assert (parsed.age, parsed.gender, parsed.race, parsed.taken) == (61, FEMALE, None, "20170109142408075")
    assert parsed.problems == ("race missing",) and parsed.usable


@pytest.mark.parametrize("name,problem", [(n, p) for n, p in BAD.items()])
def test_parse_name_unusable(name: str, problem: str) -> None:
    parsed = parse_name(name)
    assert not parsed.usable
    assert any(p.startswith(problem) for p in parsed.problems), parsed.problems


@pytest.mark.parametrize("name,problem", [(n, p) for n, p in PARTLY.items()])
def test_parse_name_partly_malformed(name: str, problem: str) -> None:
    parsed = parse_name(name)
    assert parsed.usable
    assert any(p.startswith(problem) for p in parsed.problems), parsed.problems


def test_parse_name_missing_datetime_is_noted() -> None:
    parsed = parse_name("25_0_1.jpg")
    assert (parsed.race, parsed.taken) == (1, None)
    assert parsed.problems == ("datetime missing",)


def test_folder_accounts_for_every_file(tmp_path: Path) -> None:
    files = make_folder(tmp_path)
    result = read_utkface(tmp_path)
    assert result.seen == len(files)
    used = {r.key for r in result.records}
    rejected = {r.item: r.reason for r in result.rejected}
    assert used | set(rejected) == set(files) and not used & set(rejected)
    assert used == {*GOOD, *PARTLY, "sub/20_1_4_20170116174525125.jpg.chip.jpg"}
    for name, problem in BAD.items():
        assert problem in rejected[name]
    assert rejected["notes.txt"].startswith("not an image file")
    assert rejected["33_0_1_20170116174525125.jpg.chip.jpg"].startswith("empty file")
    notes = {n.item: n.reason for n in result.notes}
    assert set(notes) == set(PARTLY)
    for name, problem in PARTLY.items():
        assert problem in notes[name]


def test_folder_record_fields(tmp_path: Path) -> None:
    make_folder(tmp_path)
    records = {r.key: r for r in read_utkface(tmp_path).records}
    for name, (age, gender, race) in GOOD.items():
        record = records[name]
        assert (record.age, record.gender, record.groups, record.source) == (age, gender, {"race": race},
                                                                              "utkface")
        assert Path(record.path) == tmp_path / name
        assert read_bytes(record.path) == (tmp_path / name).read_bytes()
    assert records["39_1_20170116174525125.jpg.chip.jpg"].groups == {}
    nested = records["sub/20_1_4_20170116174525125.jpg.chip.jpg"]
    assert nested.groups == {"race": "Others"} and nested.age == 20.0


def _make_archive(folder: Path, archive: Path, top: str | None) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                rel = p.relative_to(folder).as_posix()
                tar.add(p, arcname=f"{top}/{rel}" if top else rel)


@pytest.mark.parametrize("top", ["UTKFace", None])
def test_archive_matches_folder(tmp_path: Path, top: str | None) -> None:
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    files = make_folder(folder)
    archive = tmp_path / "UTKFace.tar.gz"
    _make_archive(folder, archive, top)

    from_folder, from_archive = read_utkface(folder), read_utkface(archive)
    assert from_archive.seen == len(files)
    # Keys match the extracted folder's, so one split file serves both forms.
    assert sorted(r.key for r in from_archive.records) == sorted(r.key for r in from_folder.records)
    assert sorted((r.item, r.reason) for r in from_archive.rejected) == sorted(
        (r.item, r.reason) for r in from_folder.rejected)
    assert sorted(n.item for n in from_archive.notes) == sorted(n.item for n in from_folder.notes)

    with MemberReader() as reader:
        for record in from_archive.records:
            archive_part, member = split_archive_path(record.path) or ("", "")
            assert archive_part == str(archive) and member.endswith(record.key)
            assert reader.read(record.path) == files[record.key]
    first = from_archive.records[0]
    assert read_bytes(first.path) == files[first.key]


def test_archive_member_missing_names_archive(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    make_folder(folder)
    archive = tmp_path / "a.tar.gz"
    _make_archive(folder, archive, None)
    with pytest.raises(FileNotFoundError, match="no member 'nope.jpg'"):
        read_bytes(f"{archive}::nope.jpg")


def test_split_archive_path_plain() -> None:
    assert split_archive_path("/data/x.jpg") is None
    assert split_archive_path("/d/a.tar.gz::UTKFace/x.jpg") == ("/d/a.tar.gz", "UTKFace/x.jpg")


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        read_utkface(tmp_path / "nothing-here")
    text = tmp_path / "x.txt"
    text.write_text("hi")
    with pytest.raises(ValueError, match="x.txt"):
        read_utkface(text)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a gzip stream at all")
    with pytest.raises(ValueError, match="broken.tar.gz"):
        read_utkface(broken)
