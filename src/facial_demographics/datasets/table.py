"""Table reader: any dataset described by a CSV or Parquet file with one row per image.

Only the path column is required to exist; age and gender columns are read when present. Every
other column is kept as a group label (a string), so fairness slices need no extra code.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import pandas as pd

from facial_demographics.datasets.errors import DataError
from facial_demographics.datasets.formats import GENDER_VALUES
from facial_demographics.datasets.records import ReadResult, Record, Rejected
from facial_demographics.datasets.utkface import MAX_AGE
from facial_demographics.labels import FEMALE, MALE

SOURCE = "table"
_GENDER_WORDS = {"0": MALE, "1": FEMALE, "male": MALE, "m": MALE, "female": FEMALE, "f": FEMALE}
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


class BadValue(ValueError):
    """A cell that cannot be used; the message is the rejection reason."""


def _blank(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip() == ""
    return value is None or (isinstance(value, numbers.Real) and math.isnan(float(value)))


def parse_age(value: Any) -> float | None:
    """An age in years (0..120, fractions allowed) or None when the cell is empty."""
    if _blank(value):
        return None
    if isinstance(value, bool):
        raise BadValue(f"bad age: {value!r} is not a number")
    try:
        age = float(value)
    except (TypeError, ValueError):
        raise BadValue(f"bad age: {value!r} is not a number") from None
    if not 0 <= age <= MAX_AGE:  # also false for NaN
        raise BadValue(f"bad age: {value!r} not in 0..{MAX_AGE}")
    return age


def parse_gender(value: Any) -> int | None:
    """0/1 (this project's codes: 0 male, 1 female) or male/female/m/f, any case; None when empty."""
    if _blank(value):
        return None
    code: int | None = None
    if isinstance(value, str):
        code = _GENDER_WORDS.get(value.strip().lower())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        code = {0.0: MALE, 1.0: FEMALE}.get(float(value))
    if code is None:
        raise BadValue(f"bad gender: {value!r} (expected {GENDER_VALUES})")
    return code


def _load(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # Strings everywhere: every value is validated here, not guessed by pandas.
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read table: {exc}") from exc
    raise DataError(f"{path}: not a table (expected .csv or .parquet)")


def _group_value(value: Any) -> str | None:
    if _blank(value):
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        return str(int(float(value)))
    return str(value)


def read_table(
    path: str | Path,
    root: str | Path | None = None,
    *,
    path_col: str = "path",
    age_col: str = "age",
    gender_col: str = "gender",
    identity_col: str = "identity",
    require_age: bool = True,
    require_gender: bool = True,
    check_files: bool = True,
) -> ReadResult:
    """Read a CSV/Parquet table; relative image paths resolve against ``root`` (default: its folder).

    Rows are numbered from 1 (the first data row). A row is rejected when its path is empty, repeated
    or (with ``check_files``) missing on disk, or a value is bad; an empty age or gender is rejected
    only when required (otherwise it is unknown). ``age_col``/``gender_col`` may be absent from the
    table, which makes those labels unknown for every row.
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    frame = _load(path)
    if path_col not in frame.columns:
        raise DataError(f"{path}: no path column {path_col!r} (columns: {list(frame.columns)})")
    for col, required in ((age_col, require_age), (gender_col, require_gender)):
        if required and col not in frame.columns:
            raise DataError(f"{path}: no column {col!r} (columns: {list(frame.columns)}); "
                             f"name it with the column option or do not require it")
    label_cols = {path_col, age_col, gender_col, identity_col}
    group_cols = [str(c) for c in frame.columns if c not in label_cols]

    result = ReadResult(records=[], rejected=[], source=str(path))
    seen: set[str] = set()
    for number, row in enumerate(frame.to_dict("records"), start=1):
        raw_path = row[path_col]
        key = "" if _blank(raw_path) else str(raw_path).strip().replace("\\", "/")
        item = f"row {number}: {key}" if key else f"row {number}"
        try:
            if not key:
                raise BadValue("missing path: empty path cell")
            if key in seen:
                raise BadValue("duplicate path: listed in an earlier row")
            age = parse_age(row.get(age_col))
            gender = parse_gender(row.get(gender_col))
            if require_age and age is None:
                raise BadValue("missing age: empty cell")
            if require_gender and gender is None:
                raise BadValue("missing gender: empty cell")
            file = Path(key) if Path(key).is_absolute() else base / key
            if check_files and not file.is_file():
                raise BadValue(f"image missing: {file}")
        except BadValue as exc:
            result.rejected.append(Rejected(item, str(exc)))
            continue
        seen.add(key)
        identity = _group_value(row.get(identity_col))
        groups = {c: v for c in group_cols if (v := _group_value(row[c])) is not None}
        result.records.append(Record(path=str(file), key=key, age=age, gender=gender, groups=groups,
                                     source=SOURCE, identity=identity))
    return result
