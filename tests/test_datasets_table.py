"""Table reader on generated CSV and Parquet files, with good and bad rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from facial_demographics.datasets.table import BadValue, parse_age, parse_gender, read_table
from facial_demographics.labels import FEMALE, MALE

ROWS = [
    # path, age, gender, identity, camera
    ("img/a.jpg", "31", "male", "p1", "phone"),
    ("img/b.jpg", "4.5", "F", "p1", "dslr"),
    ("img/c.jpg", "70", "1", "", "phone"),
    ("img/d.jpg", "abc", "0", "p2", "phone"),  # bad age
    ("img/e.jpg", "30", "3", "p2", "phone"),  # bad gender
    ("img/f.jpg", "-2", "m", "p3", "phone"),  # negative age
    ("img/missing.jpg", "20", "f", "p3", "phone"),  # no such file
    ("", "20", "f", "p4", "phone"),  # empty path
    ("img/a.jpg", "31", "male", "p1", "phone"),  # repeated
    ("img/g.jpg", "", "female", "p5", ""),  # empty age
]
EXPECTED_REJECT = {
    4: "bad age", 5: "bad gender", 6: "bad age", 7: "image missing", 8: "missing path",
    9: "duplicate path", 10: "missing age",
}


def write_images(root: Path) -> None:
    for name in "abcdefg":
        (root / "img").mkdir(parents=True, exist_ok=True)
        (root / "img" / f"{name}.jpg").write_bytes(b"jpeg")


def frame() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=["path", "age", "gender", "identity", "camera"])


def check(result_path: Path, root: Path | None = None) -> None:
    result = read_table(result_path, root)
    assert result.seen == len(ROWS)
    records = {r.key: r for r in result.records}
    assert list(records) == ["img/a.jpg", "img/b.jpg", "img/c.jpg"]
    a, b, c = records.values()
    base = root or result_path.parent
    assert (a.age, a.gender, a.identity, a.groups, a.path) == (31.0, MALE, "p1", {"camera": "phone"},
                                                              str(base / "img/a.jpg"))
    assert (b.age, b.gender, b.identity) == (4.5, FEMALE, "p1")
    assert (c.gender, c.identity) == (FEMALE, None)
    rejected = [(r.item, r.reason) for r in result.rejected]
    assert len(rejected) == len(EXPECTED_REJECT)
    for (item, reason), (row, expected) in zip(rejected, sorted(EXPECTED_REJECT.items()), strict=True):
        assert item.startswith(f"row {row}") and reason.startswith(expected), (item, reason)


def test_csv(tmp_path: Path) -> None:
    write_images(tmp_path)
    frame().to_csv(tmp_path / "labels.csv", index=False)
    check(tmp_path / "labels.csv")


def test_parquet_with_typed_columns_and_root(tmp_path: Path) -> None:
    write_images(tmp_path / "data")
    df = frame()
    df["age"] = pd.to_numeric(df["age"], errors="coerce")  # typed: bad ages become NaN
    df.loc[3, "age"] = 200.0  # and still get rejected as out of range
    df.to_parquet(tmp_path / "labels.parquet")
    result = read_table(tmp_path / "labels.parquet", tmp_path / "data")
    assert [r.key for r in result.records] == ["img/a.jpg", "img/b.jpg", "img/c.jpg"]
    assert result.records[1].age == 4.5
    reasons = {r.item.split(":")[0]: r.reason for r in result.rejected}
    assert reasons["row 4"].startswith("bad age") and reasons["row 6"].startswith("bad age")
    assert reasons["row 10"].startswith("missing age")
    assert result.seen == len(ROWS)


def test_custom_columns_and_optional_labels(tmp_path: Path) -> None:
    write_images(tmp_path)
    pd.DataFrame({"file": ["img/a.jpg", "img/b.jpg"], "years": [20, 30], "person": ["x", "y"]}).to_csv(
        tmp_path / "t.csv", index=False)
    result = read_table(tmp_path / "t.csv", path_col="file", age_col="years", identity_col="person",
                        require_gender=False)
    assert [(r.age, r.gender, r.identity, r.groups) for r in result.records] == [
        (20.0, None, "x", {}), (30.0, None, "y", {})]
    with pytest.raises(ValueError, match="no column 'gender'"):
        read_table(tmp_path / "t.csv", path_col="file", age_col="years")
    with pytest.raises(ValueError, match="no path column 'path'"):
        read_table(tmp_path / "t.csv")


@pytest.mark.parametrize("value,code", [(0, MALE), (1, FEMALE), (1.0, FEMALE), ("MALE", MALE),
                                        (" Female ", FEMALE), ("m", MALE), ("F", FEMALE), ("", None)])
def test_parse_gender(value: object, code: int | None) -> None:
    assert parse_gender(value) == code


@pytest.mark.parametrize("value", [2, "x", True, "woman", 0.5])
def test_parse_gender_rejects(value: object) -> None:
    with pytest.raises(BadValue, match="bad gender"):
        parse_gender(value)


def test_parse_age() -> None:
    assert parse_age("  ") is None and parse_age(float("nan")) is None
    assert parse_age("33") == 33.0 and parse_age(0) == 0.0
    for bad in ("x", -1, 121, "inf", True):
        with pytest.raises(BadValue, match="bad age"):
            parse_age(bad)


def test_unreadable_table(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"nope")
    with pytest.raises(ValueError, match="x.parquet"):
        read_table(tmp_path / "x.parquet")
    (tmp_path / "x.txt").write_text("path\n")
    with pytest.raises(ValueError, match="not a table"):
        read_table(tmp_path / "x.txt")
