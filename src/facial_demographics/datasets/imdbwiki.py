"""IMDB-WIKI reader: the ``wiki.mat`` / ``imdb.mat`` metadata of the cropped face images.

The labels are noisy (ages come from a birth date and the photo's year, one face per image is
assumed), so every filter is an option and every item a filter drops is reported with its reason.
Gender codes in the file are the reverse of this project's (1 male, 0 female there).
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from facial_demographics.datasets.errors import DataError
from facial_demographics.datasets.records import ReadResult, Record, Rejected
from facial_demographics.labels import FEMALE, MALE

STRUCT_NAMES = ("wiki", "imdb")
FIELDS = ("dob", "photo_taken", "full_path", "gender", "name", "face_score", "second_face_score")
#: MATLAB's datenum counts from year 0; Python's ordinal from year 1 (366 days later).
MATLAB_DATENUM_OFFSET = 366
_MAX_DATENUM = date.max.toordinal() + MATLAB_DATENUM_OFFSET


def _as_str(cell: Any) -> str:
    """A MATLAB char cell as loadmat gives it (``array(['x'])``, ``array([])``, or already a str)."""
    while isinstance(cell, np.ndarray):
        if cell.size == 0:
            return ""
        cell = cell.flat[0]
    return str(cell).strip()


def birth_date(datenum: float) -> date | None:
    """The date of a MATLAB datenum, or None for a value that is no plausible date."""
    if not math.isfinite(datenum) or datenum <= MATLAB_DATENUM_OFFSET or datenum >= _MAX_DATENUM:
        return None
    return date.fromordinal(int(datenum) - MATLAB_DATENUM_OFFSET)


def age_at_photo(birth: date, photo_year: int) -> int:
    """Age when the photo was taken, assuming it was taken mid-year (the IMDB-WIKI convention)."""
    return photo_year - birth.year - (1 if birth.month >= 7 else 0)


def _struct(mat: dict[str, Any], mat_path: Path) -> tuple[str, Any]:
    """The struct's name ("wiki" or "imdb") and its single element."""
    names = [n for n in STRUCT_NAMES if n in mat]
    if not names:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{mat_path}: no 'wiki' or 'imdb' struct (found {found})")
    struct = mat[names[0]]
    while isinstance(struct, np.ndarray) and struct.dtype.names is None and struct.size == 1:
        struct = struct.flat[0]  # tolerate extra object nesting
    if not isinstance(struct, np.ndarray) or struct.dtype.names is None:
        raise DataError(f"{mat_path}: {names[0]!r} is not a MATLAB struct")
    missing = [f for f in FIELDS if f not in struct.dtype.names]
    if missing:
        raise DataError(f"{mat_path}: struct {names[0]!r} lacks fields {missing}")
    return names[0], struct.flat[0]


def _column(struct: Any, name: str) -> np.ndarray:
    """One struct field as a flat 1-D array (the file stores 1xN row vectors and cells)."""
    return np.asarray(struct[name]).reshape(-1)


def _numbers(struct: Any, name: str) -> list[float]:
    """A numeric field as floats; cells that hold no number become NaN (and are rejected later)."""
    column = _column(struct, name)
    try:
        return [float(v) for v in column.astype(float)]
    except (TypeError, ValueError):
        return [_first_number(v) for v in column]


def _first_number(value: Any) -> float:
    try:
        return float(np.asarray(value, dtype=float).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return math.nan


def read_imdbwiki(
    mat_path: str | Path,
    image_root: str | Path | None = None,
    *,
    min_face_score: float | None = None,
    require_face: bool = True,
    allow_second_face: bool = False,
    age_range: tuple[int, int] = (0, 100),
    require_gender: bool = True,
    check_files: bool = True,
) -> ReadResult:
    """Read IMDB-WIKI metadata; images resolve against ``image_root`` (default: the .mat file's folder).

    Filters, each reported per item: ``require_face`` drops face_score -inf (no face found),
    ``min_face_score`` drops weaker faces, ``allow_second_face=False`` drops images with a second
    face, ``age_range`` (inclusive) drops implausible ages, ``require_gender`` drops unknown gender,
    ``check_files`` drops entries whose image file is missing. ``identity`` is the person's name.
    """
    mat_path = Path(mat_path)
    root = Path(image_root) if image_root is not None else mat_path.parent
    try:
        mat = scipy.io.loadmat(str(mat_path))
    except Exception as exc:  # scipy's parser raises many kinds (IndexError on short junk, ...)
        raise DataError(f"{mat_path}: cannot read MATLAB file: {exc}") from exc
    struct_name, struct = _struct(mat, mat_path)
    paths = [_as_str(v) for v in _column(struct, "full_path")]
    names = [_as_str(v) for v in _column(struct, "name")]
    numbers = {f: _numbers(struct, f) for f in ("dob", "photo_taken", "gender", "face_score",
                                                "second_face_score")}
    n = len(paths)
    lengths = {"full_path": n, "name": len(names), **{f: len(c) for f, c in numbers.items()}}
    if any(v != n for v in lengths.values()):
        raise DataError(f"{mat_path}: fields have different lengths {lengths}")

    result = ReadResult(records=[], rejected=[], source=str(mat_path))
    seen: set[str] = set()
    lo, hi = age_range
    for i in range(n):
        key = paths[i]
        item = key or f"entry {i}"

        def reject(reason: str, item: str = item) -> None:
            result.rejected.append(Rejected(item, reason))

        dob, taken = numbers["dob"][i], numbers["photo_taken"][i]
        face, second = numbers["face_score"][i], numbers["second_face_score"][i]
        gender_code = numbers["gender"][i]
        birth = birth_date(dob)
        if not key:
            reject("missing path: empty full_path")
        elif key in seen:
            reject("duplicate path: listed more than once")
        elif birth is None:
            reject(f"invalid date of birth: datenum {dob!r}")
        elif not math.isfinite(taken):
            reject(f"invalid photo year: {taken!r}")
        elif require_face and (math.isnan(face) or face == -math.inf):
            reject(f"no face: face_score {face}")
        elif min_face_score is not None and not face >= min_face_score:
            reject(f"face score too low: {face:.3f} < {min_face_score}")
        elif not allow_second_face and not math.isnan(second):
            reject(f"second face: second_face_score {second:.3f}")
        elif (age := age_at_photo(birth, int(taken))) < 0:
            reject(f"birth after photo: born {birth.isoformat()}, photo {int(taken)}")
        elif not lo <= age <= hi:
            reject(f"age out of range: {age} not in {lo}..{hi}")
        elif require_gender and gender_code not in (0.0, 1.0):
            reject(f"unknown gender: {gender_code}")
        elif check_files and not (root / key).is_file():
            reject(f"image missing: {root / key}")
        else:
            seen.add(key)
            gender = MALE if gender_code == 1.0 else FEMALE if gender_code == 0.0 else None
            result.records.append(Record(path=str(root / key), key=key, age=float(age), gender=gender,
                                         source=struct_name, identity=names[i] or None))
    return result
