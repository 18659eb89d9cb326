"""MORPH reader: a folder of mugshots named ``PPPPPP_NN{M|F}AA.JPG`` (person id, image index, sex, age).

This is the naming of the public MORPH sample in huajh/Age_Estimation_via_fastAAMs (e.g.
``009055_0M54.JPG``: person 009055, first photo, male, 54). The person id becomes ``Record.identity``, so
``data split`` keeps each person's photos in one split; the record key is the bare file name, which is
unique in that collection (the same photo filed in two of its folders is one record). Every image name in
the folder is judged: one that does not follow the pattern is rejected with the reason, not skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from facial_demographics.datasets.errors import DataError, DataNotFoundError
from facial_demographics.datasets.records import ReadResult, Record, Rejected
from facial_demographics.datasets.utkface import IMAGE_SUFFIXES
from facial_demographics.labels import FEMALE, MALE

SOURCE = "morph"
_NAME = re.compile(r"^(?P<person>\d{3,})_(?P<index>\d+)(?P<sex>[MFmf])(?P<age>\d{1,3})\.(?:jpe?g|png)$",
                   re.IGNORECASE)
#: MORPH's adults are 16-77; a name outside this range is a typo, not a person.
AGE_RANGE = (10, 100)


@dataclass(frozen=True)
class MorphName:
    """What a MORPH file name says."""

    person: str
    index: int
    gender: int
    age: int


def parse_morph_name(name: str) -> MorphName:
    """Read person, image index, sex and age from a MORPH file name (no directory part).

    Raises:
        ValueError: the name does not follow ``PPPPPP_NN{M|F}AA.JPG`` or its age is implausible; the
            message says which.
    """
    match = _NAME.match(name)
    if match is None:
        raise ValueError("not a MORPH name (expected PPPPPP_NN{M|F}AA.JPG: person, index, sex, age)")
    age = int(match["age"])
    if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        raise ValueError(f"age {age} outside {AGE_RANGE[0]}..{AGE_RANGE[1]}")
    gender = MALE if match["sex"].upper() == "M" else FEMALE
    return MorphName(match["person"], int(match["index"]), gender, age)


def is_morph_name(name: str) -> bool:
    """True when a file name follows the MORPH pattern."""
    return _NAME.match(name) is not None


def read_morph(path: str | Path) -> ReadResult:
    """Read every image under a folder (recursively) as MORPH-named mugshots.

    Args:
        path: the folder.

    Returns:
        Records (key: file name; identity: person id; source "morph") and the rejected names with the reason.

    Raises:
        DataNotFoundError: the folder does not exist.
        DataError: it is not a folder.
    """
    root = Path(path)
    if not root.exists():
        raise DataNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: a MORPH dataset is a folder of PPPPPP_NN{{M|F}}AA.JPG images")
    result = ReadResult(records=[], rejected=[], source=str(root))
    seen: dict[str, str] = {}
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        rel = file.relative_to(root).as_posix()
        if file.name in seen:
            result.notes.append(Rejected(rel, f"same name as {seen[file.name]}: read once"))
            continue
        try:
            parsed = parse_morph_name(file.name)
        except ValueError as exc:
            result.rejected.append(Rejected(rel, str(exc)))
            continue
        seen[file.name] = rel
        result.records.append(Record(path=str(file), key=file.name, age=float(parsed.age), gender=parsed.gender,
                                     source=SOURCE, identity=parsed.person))
    return result
