"""Where a distributed run's results go, and what an earlier run already wrote there (to resume).

- JSON Lines: one file, the same records as ``analyze --format jsonl`` (written by :class:`ResultWriter`),
  flushed line by line. Resuming reads the file, keeps every complete record and appends the rest;
  a last line cut off by a crash is dropped first (it is redone).
- Parquet: a folder (local or any pyarrow filesystem URI) of ``part-<run>-<n>.parquet`` files with the
  same fields (:data:`PARQUET_SCHEMA`). A part is written under a hidden temporary name and renamed when
  complete, every ``rows_per_part`` rows or ``seconds_per_part`` seconds, so a killed run loses at most
  the part in progress; resuming reads the ``path`` column of every complete part and removes leftovers.

An input counts as done when a record for its path exists, whether it was read or has an ``error``
(a broken file stays broken); ``resume=False`` starts over.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from ..errors import UserError
from ..output import OutputFormat, ResultWriter, check_output
from .sources import is_uri

PART_PREFIX = "part-"


class SinkError(UserError, ValueError):
    """The output cannot be written, or holds something other than an earlier run's results."""


@dataclass(frozen=True)
class Previous:
    """What earlier runs left in the output: the paths done, and their counts for the summary."""

    paths: frozenset[str] = frozenset()
    faces: int = 0
    unreadable: int = 0

    @property
    def images(self) -> int:
        return len(self.paths)


class Sink(Protocol):
    """A destination for ``ImageResult.to_dict()`` records; ``close`` keeps everything written so far."""

    where: str

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


# -- JSON Lines ------------------------------------------------------------------------------------------
def _read_jsonl(path: Path) -> tuple[Previous, int]:
    """The records already in ``path`` and the byte length of its complete lines.

    Raises:
        SinkError: a line other than a cut-off last one is not a result record.
    """
    paths: set[str] = set()
    faces = unreadable = good_bytes = 0
    with open(path, "rb") as stream:
        for number, line in enumerate(stream, 1):
            try:
                record = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("path"), str):
                if stream.read(1):  # not the last line: this file is not (only) our output
                    raise SinkError(f"{path}: line {number} is not an analyze record; move the file away or "
                                    "pass --no-resume to overwrite it")
                break
            paths.add(record["path"])
            faces += len(record.get("faces") or [])
            unreadable += record.get("error") is not None
            good_bytes += len(line)
    return Previous(frozenset(paths), faces, unreadable), good_bytes


class JsonlSink:
    """``analyze --format jsonl`` output: to stdout, a new file, or appended to an earlier run's file."""

    def __init__(self, stream: IO[str], where: str) -> None:
        self.where = where
        self._writer = ResultWriter(OutputFormat.jsonl, stream)

    def write(self, record: dict[str, Any]) -> None:
        self._writer.write(record)

    def close(self) -> None:
        self._writer.close()


def open_jsonl(output: Path | None, resume: bool) -> tuple[JsonlSink, Previous]:
    """Open a JSON Lines output (appending after an earlier run's complete records when resuming).

    Raises:
        SinkError: the file cannot be written, or holds something else (see :func:`_read_jsonl`).
    """
    if output is None:
        return JsonlSink(sys.stdout, "stdout"), Previous()
    try:
        check_output(output)
    except ValueError as exc:
        raise SinkError(str(exc)) from None
    previous, keep = Previous(), 0
    if resume and output.is_file():
        previous, keep = _read_jsonl(output)
    try:
        stream = open(output, "r+" if keep else "w", encoding="utf-8", newline="")
        stream.truncate(keep)  # drops a line cut off by a crash (nothing else is past ``keep``)
        stream.seek(keep)
    except OSError as exc:
        raise SinkError(f"{output}: cannot write here ({exc.strerror or exc})") from None
    return JsonlSink(stream, str(output)), previous


# -- Parquet -----------------------------------------------------------------------------------------------
def parquet_schema() -> Any:
    """The Arrow schema of a Parquet part: ``ImageResult.to_dict()``'s fields and types."""
    import pyarrow as pa

    point = pa.list_(pa.float64())
    face = pa.struct([("box", point), ("score", pa.float64()), ("landmarks", pa.list_(point)),
                      ("age", pa.float64()), ("age_interval", point), ("age_group", pa.string()),
                      ("gender", pa.string()), ("gender_probability", pa.float64()),
                      # what `summarize` reads: the per-year age distribution from its first age
                      ("age_distribution", pa.struct([("start", pa.int64()), ("p", point)]))])
    return pa.schema([("path", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
                      ("faces", pa.list_(face)), ("error", pa.string())])


def _folder(output: str | Path) -> tuple[Any, str]:
    from pyarrow import fs

    text = str(output)
    if is_uri(text):
        try:
            return fs.FileSystem.from_uri(text)
        except (ValueError, OSError) as exc:
            raise SinkError(f"{text}: pyarrow cannot open this location ({exc})") from None
    return fs.LocalFileSystem(), os.path.abspath(text)


class ParquetSink:
    """A folder of Parquet parts, each complete on disk before it gets its final name."""

    def __init__(self, filesystem: Any, folder: str, where: str, rows_per_part: int = 5000,
                 seconds_per_part: float = 60.0) -> None:
        self.where = where
        self._fs, self._folder = filesystem, folder.rstrip("/")
        self._run = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        self._rows: list[dict[str, Any]] = []
        self._parts = 0
        self._limit, self._every = rows_per_part, seconds_per_part
        self._since = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        self._rows.append(record)
        if len(self._rows) >= self._limit or time.monotonic() - self._since >= self._every:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._since = time.monotonic()
        if not self._rows:
            return
        name = f"{PART_PREFIX}{self._run}-{self._parts:05d}.parquet"
        tmp, final = f"{self._folder}/.{name}.tmp", f"{self._folder}/{name}"
        with self._fs.open_output_stream(tmp) as stream:
            pq.write_table(pa.Table.from_pylist(self._rows, schema=parquet_schema()), stream)
        self._fs.move(tmp, final)
        self._rows, self._parts = [], self._parts + 1

    def close(self) -> None:
        self._flush()


def _read_parts(filesystem: Any, folder: str, resume: bool) -> Previous:
    """Earlier parts' counts (resume) or their removal (start over); leftover temporary parts removed."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from pyarrow import fs

    paths: set[str] = set()
    faces = unreadable = 0
    for entry in filesystem.get_file_info(fs.FileSelector(folder)):
        if entry.type != fs.FileType.File:
            continue
        if entry.base_name.startswith(f".{PART_PREFIX}") and entry.base_name.endswith(".tmp"):
            filesystem.delete_file(entry.path)  # a part a killed run did not finish: its inputs are redone
        elif entry.base_name.startswith(PART_PREFIX) and entry.base_name.endswith(".parquet"):
            if not resume:
                filesystem.delete_file(entry.path)
                continue
            with filesystem.open_input_file(entry.path) as stream:
                table = pq.read_table(stream, columns=["path", "faces", "error"])
            paths.update(table["path"].to_pylist())
            faces += int(pc.sum(pc.list_value_length(table["faces"])).as_py() or 0)
            unreadable += len(table) - table["error"].null_count
    return Previous(frozenset(paths), faces, unreadable)


def open_parquet(output: str | Path | None, resume: bool, rows_per_part: int = 5000) -> tuple[ParquetSink, Previous]:
    """Open a Parquet output folder (created if missing).

    Raises:
        SinkError: no folder given, the name is a file, or the folder cannot be created or read.
    """
    from pyarrow import fs

    if output is None:
        raise SinkError("--format parquet writes a folder of part files: give it with -o/--output")
    filesystem, folder = _folder(output)
    try:
        if filesystem.get_file_info(folder).type == fs.FileType.File:
            raise SinkError(f"{output}: is a file; Parquet output is a folder of part files")
        filesystem.create_dir(folder, recursive=True)
        previous = _read_parts(filesystem, folder, resume)
    except OSError as exc:
        raise SinkError(f"{output}: cannot use this folder ({exc})") from None
    return ParquetSink(filesystem, folder, str(output), rows_per_part), previous


def open_sink(output: str | Path | None, fmt: str, resume: bool = True) -> tuple[Sink, Previous]:
    """The sink for ``fmt`` ("jsonl" or "parquet") and what earlier runs wrote there.

    Raises:
        SinkError: an unsupported format, or an output that cannot be used (see the openers).
    """
    if fmt == "jsonl":
        if output is not None and is_uri(str(output)):
            raise SinkError(f"{output}: JSON Lines output is a local file (object stores cannot append); "
                            "use --format parquet for a URI")
        return open_jsonl(None if output is None else Path(output), resume)
    if fmt == "parquet":
        return open_parquet(output, resume)
    raise SinkError(f"--engine ray writes --format jsonl or --format parquet, not {fmt}")
