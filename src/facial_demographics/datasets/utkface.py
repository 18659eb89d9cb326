"""UTKFace reader: a folder of ``age_gender_race_datetime.jpg[.chip.jpg]`` files or the distributed tar.gz.

Labels live only in the file names, and a few real names are malformed (a missing race field, a
datetime glued to ``jpg``), so every name goes through :func:`parse_name`, which returns what it could
read and what was wrong. A name is *rejected* when its age or gender cannot be trusted; it is *kept
with a note* when only the race or the datetime is missing or odd (age and gender are still sound).
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType

from facial_demographics.datasets.errors import DataError, DataNotFoundError
from facial_demographics.datasets.records import RACE_LABELS, ReadResult, Record, Rejected
from facial_demographics.labels import FEMALE, MALE

SOURCE = "utkface"
#: Separator between an archive path and a member name in ``Record.path``.
ARCHIVE_SEP = "::"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
MAX_AGE = 120
_DATETIME = re.compile(r"^\d{8,}$")  # yyyymmddHHMMSS + milliseconds, not always zero-padded
_INT = re.compile(r"^\d+$")


@dataclass(frozen=True)
class ParsedName:
    """What a UTKFace file name says; ``problems`` lists everything odd about it.

    ``usable`` is False when age or gender is missing or invalid (the name is rejected);
    a usable name may still carry problems (missing race, odd datetime, extra fields).
    """

    age: int | None
    gender: int | None
    race: int | None
    taken: str | None
    problems: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return self.age is not None and self.gender is not None


@dataclass
class UTKFaceResult(ReadResult):
    """A ReadResult plus ``notes``: names that were used although partly malformed, with what was wrong."""

    notes: list[Rejected] = field(default_factory=list)


def _stem(name: str) -> str:
    """Strip the image suffixes (``.jpg.chip.jpg``, ``.jpg``, ...) to leave the label fields."""
    stem = name
    while True:
        lower = stem.lower()
        for suffix in (".chip.jpg", *IMAGE_SUFFIXES):
            if lower.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        else:
            return stem


def parse_name(name: str) -> ParsedName:
    """Read age, gender, race and datetime from a UTKFace file name (no directory part)."""
    fields = _stem(name).split("_")
    problems: list[str] = []

    age: int | None = None
    raw_age = fields[0]
    if not _INT.match(raw_age):
        problems.append(f"age not a number: {raw_age!r}")
    elif not 0 <= int(raw_age) <= MAX_AGE:
        problems.append(f"age out of range 0..{MAX_AGE}: {raw_age}")
    else:
        age = int(raw_age)

    gender: int | None = None
    if len(fields) < 2 or fields[1] == "":
        problems.append("gender missing")
    elif fields[1] not in ("0", "1"):
        problems.append(f"gender not 0/1: {fields[1]!r}")
    else:
        gender = MALE if fields[1] == "0" else FEMALE

    race: int | None = None
    taken: str | None = None
    rest = fields[2:]
    # A long digit run in the race position is a datetime whose race field went missing.
    if rest and len(rest[0]) > 1 and _INT.match(rest[0]):
        problems.append("race missing")
        taken, rest = rest[0], rest[1:]
    else:
        if not rest:
            problems.append("race missing")
        elif not (_INT.match(rest[0]) and int(rest[0]) < len(RACE_LABELS)):
            problems.append(f"race not 0..{len(RACE_LABELS) - 1}: {rest[0]!r}")
        else:
            race = int(rest[0])
        rest = rest[1:]
        if rest:
            taken, rest = rest[0], rest[1:]
    if taken is None:
        problems.append("datetime missing")
    elif not _DATETIME.match(taken):
        problems.append(f"datetime malformed: {taken!r}")
    if rest:
        problems.append(f"extra fields: {'_'.join(rest)!r}")
    return ParsedName(age, gender, race, taken, tuple(problems))


def is_utkface_name(name: str) -> bool:
    """True when a file name looks like a UTKFace image with usable age and gender."""
    return name.lower().endswith(IMAGE_SUFFIXES) and parse_name(name).usable


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _judge(key: str, path: str, size: int) -> Record | Rejected | tuple[Record, Rejected]:
    """Turn one file into a record, a rejection, or a record plus a note on its odd name."""
    name = PurePosixPath(key).name
    if not name.lower().endswith(IMAGE_SUFFIXES):
        return Rejected(key, f"not an image file: suffix {PurePosixPath(name).suffix or '(none)'!r}")
    if size == 0:
        return Rejected(key, "empty file: 0 bytes")
    parsed = parse_name(name)
    if parsed.age is None or parsed.gender is None:
        return Rejected(key, "; ".join(parsed.problems))
    groups = {} if parsed.race is None else {"race": RACE_LABELS[parsed.race]}
    record = Record(path=path, key=key, age=float(parsed.age), gender=parsed.gender,
                    groups=groups, source=SOURCE)
    if parsed.problems:
        return record, Rejected(key, "; ".join(parsed.problems))
    return record


def _collect(items: Iterator[tuple[str, str, int]], source: str) -> UTKFaceResult:
    result = UTKFaceResult(records=[], rejected=[], source=source)
    for key, path, size in items:
        judged = _judge(key, path, size)
        if isinstance(judged, Record):
            result.records.append(judged)
        elif isinstance(judged, Rejected):
            result.rejected.append(judged)
        else:
            result.records.append(judged[0])
            result.notes.append(judged[1])
    return result


def _folder_items(root: Path) -> Iterator[tuple[str, str, int]]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        yield p.relative_to(root).as_posix(), str(p), p.stat().st_size


def _archive_items(archive: Path) -> Iterator[tuple[str, str, int]]:
    """Members in archive order (reading them back in that order is one pass over the gzip stream).

    Keys drop a single top-level folder shared by every member (``UTKFace/``), so they match the keys
    of the extracted folder and one split file serves both.
    """
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
    parts = [PurePosixPath(m.name).parts for m in members]
    tops = {p[0] for p in parts if len(p) > 1}
    strip = 1 if len(tops) == 1 and all(len(p) > 1 for p in parts) else 0
    for m, p in zip(members, parts, strict=True):
        yield "/".join(p[strip:]), f"{archive}{ARCHIVE_SEP}{m.name}", m.size


def read_utkface(path: str | Path) -> UTKFaceResult:
    """Read a UTKFace folder (searched recursively) or archive; keys are paths relative to its root.

    Partly malformed names that were still used are listed in ``notes`` (they also count as records).
    """
    root = Path(path)
    if root.is_dir():
        return _collect(_folder_items(root), str(root))
    if root.is_file() and is_archive(root):
        try:
            return _collect(_archive_items(root), str(root))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{root}: cannot read UTKFace archive: {exc}") from exc
    if not root.exists():
        raise DataNotFoundError(f"{root}: no such UTKFace folder or archive")
    raise DataError(f"{root}: not a UTKFace folder or .tar.gz archive")


def split_archive_path(record_path: str) -> tuple[str, str] | None:
    """``"a.tar.gz::m.jpg"`` -> ``("a.tar.gz", "m.jpg")``; None for a plain file path."""
    archive, sep, member = record_path.partition(ARCHIVE_SEP)
    if sep and member and is_archive(archive):
        return archive, member
    return None


class MemberReader:
    """Reads record paths (plain files or ``archive::member``), keeping archives open between reads.

    Use it as a context manager when reading many archive members: reading them in archive order
    (the order :func:`read_utkface` returns) decompresses the archive once.
    """

    def __init__(self) -> None:
        self._open: dict[str, tarfile.TarFile] = {}

    def read(self, record_path: str) -> bytes:
        split = split_archive_path(record_path)
        if split is None:
            return Path(record_path).read_bytes()
        archive, member = split
        tar = self._open.get(archive)
        if tar is None:
            tar = self._open[archive] = tarfile.open(archive)
        try:
            handle = tar.extractfile(member)
        except KeyError:
            raise FileNotFoundError(f"{record_path}: no member {member!r} in {archive}") from None
        if handle is None:
            raise FileNotFoundError(f"{record_path}: member {member!r} is not a regular file")
        with handle:
            return handle.read()

    def close(self) -> None:
        for tar in self._open.values():
            tar.close()
        self._open.clear()

    def __enter__(self) -> MemberReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_bytes(record_path: str) -> bytes:
    """The bytes of one record's image, whether a plain path or ``archive.tar.gz::member``."""
    with MemberReader() as reader:
        return reader.read(record_path)
