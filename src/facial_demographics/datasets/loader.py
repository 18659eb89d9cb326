"""One entry point for every dataset: pick the reader from the path, or from ``format``."""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from facial_demographics.datasets.errors import DataError, DataNotFoundError
from facial_demographics.datasets.formats import FORMATS, LABELS_FILE, LABELS_HELP
from facial_demographics.datasets.imdbwiki import read_imdbwiki
from facial_demographics.datasets.morph import is_morph_name, read_morph
from facial_demographics.datasets.records import ReadResult
from facial_demographics.datasets.table import TABLE_SUFFIXES, read_table
from facial_demographics.datasets.utkface import is_archive, is_utkface_name, read_utkface

#: How many file names are enough to recognise a UTKFace folder or archive.
_SNIFF = 200

_READERS: dict[str, Callable[..., ReadResult]] = {
    "utkface": read_utkface,
    "morph": read_morph,
    "imdbwiki": read_imdbwiki,
    "table": read_table,
}


def _has_utkface_names(names: Iterable[str]) -> bool:
    """True when at least one of the first few image names carries UTKFace labels."""
    return any(is_utkface_name(Path(n).name) for n in islice(names, _SNIFF))


def _archive_names(path: Path) -> Iterable[str]:
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile():
                    yield member.name
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read archive: {exc}") from exc


def _unknown_folder(path: Path) -> DataError:
    return DataError(f"{path}: no {LABELS_FILE} in this folder and no UTKFace-style names "
                     f"(age_gender_race_datetime.jpg) or MORPH-style names (PPPPPP_NN{{M|F}}AA.JPG). "
                     f"For your own photos write {path / LABELS_FILE}: {LABELS_HELP}. "
                     f"Or pass --format, one of {', '.join(FORMATS)}")


def detect_format(path: str | Path) -> str:
    """The reader a dataset path needs.

    Args:
        path: a UTKFace folder or archive, a folder of MORPH-named mugshots, a folder holding ``labels.csv``,
            an IMDB-WIKI ``.mat``, or a ``.csv``/``.parquet`` table.

    Returns:
        One of :data:`FORMATS`.

    Raises:
        DataNotFoundError: the path does not exist.
        DataError: the format cannot be told; the message says what a labels table holds.
    """
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"{path}: no such dataset file or folder")
    suffix = path.suffix.lower()
    if path.is_file() and suffix == ".mat":
        return "imdbwiki"
    if path.is_file() and suffix in TABLE_SUFFIXES:
        return "table"
    if path.is_dir():
        if (path / LABELS_FILE).is_file():
            return "table"
        names = list(islice((p.name for p in path.rglob("*") if p.is_file()), _SNIFF))
        if _has_utkface_names(names):
            return "utkface"
        if any(is_morph_name(n) for n in names):
            return "morph"
        raise _unknown_folder(path)
    if is_archive(path):
        if _has_utkface_names(_archive_names(path)):
            return "utkface"
        raise DataError(f"{path}: archive holds no UTKFace-style names (age_gender_race_datetime.jpg)")
    raise DataError(f"{path}: unknown dataset format; expected a UTKFace folder or .tar.gz, an IMDB-WIKI .mat, "
                    f"or {LABELS_HELP} (or a folder holding it as {LABELS_FILE}); or pass --format, one of "
                    f"{', '.join(FORMATS)}")


def load_dataset(path: str | Path, format: str | None = None, **options: Any) -> ReadResult:
    """Read any supported dataset; ``options`` go to the reader (see each reader's keywords).

    Args:
        path: what :func:`detect_format` accepts; a folder read as a table is read through its ``labels.csv``.
        format: one of :data:`FORMATS`, or None to detect it.

    Raises:
        DataNotFoundError, DataError: the dataset cannot be found or read.
    """
    if format is None:
        format = detect_format(path)
    reader = _READERS.get(format)
    if reader is None:
        raise DataError(f"{path}: unknown format {format!r} (expected one of {', '.join(FORMATS)})")
    if format == "table" and Path(path).is_dir():
        if not (Path(path) / LABELS_FILE).is_file():
            raise _unknown_folder(Path(path))
        path = Path(path) / LABELS_FILE
    return reader(path, **options)


def load_datasets(paths: Sequence[str | Path], format: str | None = None) -> list[ReadResult]:
    """Read several datasets for one cache or one run, each with :func:`load_dataset`.

    Raises:
        DataNotFoundError, DataError: a dataset cannot be read, or two of them share a record key (a
            split file could not tell their faces apart); the message names both datasets and the key.
    """
    reads = [load_dataset(p, format) for p in paths]
    owner: dict[str, str | Path] = {}
    for path, read in zip(paths, reads, strict=True):
        for record in read.records:
            if record.key in owner:
                raise DataError(f"{path}: record key {record.key!r} is also in {owner[record.key]}; "
                                "datasets read together need distinct keys")
            owner[record.key] = path
    return reads
