"""Writers for ``analyze`` results that put each image on disk as soon as it is analysed.

jsonl and csv write and flush one image at a time; json writes an array element by element and closes
it in :meth:`ResultWriter.close`; the table is rendered at close. ``close`` runs on success, on Ctrl-C
and on a crash alike, so whatever was finished is kept and the file is well formed.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from .errors import UserError


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"  # --engine ray only: a folder of Parquet parts (distributed/sinks.py)


class OutputError(UserError, ValueError):
    """The ``-o`` target cannot be written (a folder, or a place we may not create files)."""


#: Flat CSV columns, one row per face (one row with empty face columns for an image without faces or
#: with an error): plain numbers that spreadsheets and ``cut`` read, never JSON inside a cell.
CSV_FIELDS = ["path", "width", "height", "face", "x1", "y1", "x2", "y2", "score", "age", "age_low", "age_high",
              "age_group", "gender", "gender_probability", "p_female", "error"]
#: With --landmarks: the five landmarks (as in ``Detection``), x and y each, inserted before ``error``.
LANDMARK_FIELDS = [f"{point}_{axis}" for point in ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")
                   for axis in ("x", "y")]
#: Longest part of an input's name kept in an annotated file's name (bytes of UTF-8): far below the
#: 255-byte limit of common file systems, leaving room for the index, hash and suffix.
_NAME_BYTES = 100


def csv_fields(landmarks: bool = False) -> list[str]:
    return CSV_FIELDS[:-1] + LANDMARK_FIELDS + CSV_FIELDS[-1:] if landmarks else list(CSV_FIELDS)


def csv_rows(result: dict[str, Any], landmarks: bool = False) -> list[dict[str, Any]]:
    """Flat CSV rows (see :data:`CSV_FIELDS`) for one ``ImageResult.to_dict()``."""
    from .types import p_female

    base = {"path": result["path"], "width": result["width"], "height": result["height"], "error": result["error"]}
    rows = []
    for i, face in enumerate(result["faces"]):
        x1, y1, x2, y2 = face["box"]
        low, high = face["age_interval"]
        row = {**base, "face": i, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "score": face["score"], "age": face["age"],
               "age_low": low, "age_high": high, "age_group": face["age_group"], "gender": face["gender"],
               "gender_probability": face["gender_probability"]}
        pf = p_female(face["gender"], face["gender_probability"])
        row["p_female"] = None if pf is None else round(pf, 4)
        if landmarks:
            row.update(zip(LANDMARK_FIELDS, (v for point in face["landmarks"] for v in point), strict=True))
        rows.append(row)
    return rows or [base]


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing parent of ``path`` when it is a file (so no folder can be made under it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def make_folder(path: Path, option: str, error: type[Exception] = OutputError) -> None:
    """Create the output folder ``path`` (and its parents) before any work.

    Args:
        path: the folder.
        option: how the user named it, for the message (``--summary``, ``--out``).
        error: the exception class to raise (a ``UserError`` subclass).

    Raises:
        error: ``path`` is a file, or cannot be created.
    """
    if path.exists() and not path.is_dir():
        raise error(f"{path}: {option} needs a folder, and this is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"{path}: cannot create the {option} folder ({exc.strerror or exc})") from None


def check_output(output: Path | None) -> None:
    """Make sure ``output`` can be written, before any work: create missing parent folders.

    Args:
        output: the file to write, or None for stdout.

    Raises:
        OutputError: ``output`` is a folder, a file stands where one of its folders should be, or its
            folder cannot be created or written to.
    """
    if output is None:
        return
    if output.is_dir():
        raise OutputError(f"{output}: is a folder; give a file name, e.g. {output / 'results.jsonl'}")
    blocker = _file_in_the_way(output)
    if blocker is not None:
        raise OutputError(f"{output}: {blocker} is a file, not a folder; choose another path for -o")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{output}: cannot create its folder ({exc.strerror or exc})") from None
    if not os.access(output.parent, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise OutputError(f"{output}: not writable")


def open_output(output: Path | None) -> IO[str]:
    """Open ``output`` (checked by :func:`check_output`) for writing; stdout when None.

    Raises:
        OutputError: the file cannot be opened.
    """
    if output is None:
        return sys.stdout
    check_output(output)
    try:
        return open(output, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise OutputError(f"{output}: cannot write here ({exc.strerror or exc})") from None


@contextlib.contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back until the block ends, then deliver it (KeyboardInterrupt); blocks may nest.

    Python raises KeyboardInterrupt between any two bytecodes, also inside a flush that the signal cut
    short: a result could be on disk but not counted, and "interrupted after N" would miss it (seen under
    load). A handler swapped in for the block, not a signal mask: the OS may hand a process's SIGINT to any
    thread (ONNX Runtime's, say), but Python runs handlers in the main thread. Elsewhere the block runs as
    it is (signal handlers can only be set from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            signal.raise_signal(signal.SIGINT)  # to the restored handler: KeyboardInterrupt, or an outer block


class ResultWriter:
    """Writes results in one format to one stream; ``close`` is idempotent and always leaves valid output."""

    def __init__(self, fmt: OutputFormat, stream: IO[str], landmarks: bool = False) -> None:
        self.fmt = fmt
        self.stream = stream
        self.landmarks = landmarks
        self.count = 0
        self._closed = False
        self._table: list[dict[str, Any]] = []
        self._csv: csv.DictWriter[str] | None = None
        if fmt is OutputFormat.csv:
            self._csv = csv.DictWriter(stream, fieldnames=csv_fields(landmarks))
            self._csv.writeheader()
        elif fmt is OutputFormat.json:
            stream.write("[")
        stream.flush()

    def write(self, result: dict[str, Any]) -> None:
        """Add one image's result (``ImageResult.to_dict()``) and flush it to the stream. A result is written
        and counted, or neither: Ctrl-C waits until both are done (see :func:`ctrl_c_deferred`)."""
        with ctrl_c_deferred():
            self._write(result)
            self.count += 1
            self.stream.flush()

    def _write(self, result: dict[str, Any]) -> None:
        if self.fmt is OutputFormat.table:
            self._table.append(result)
        elif self.fmt is OutputFormat.jsonl:
            self.stream.write(json.dumps(result, ensure_ascii=False) + "\n")
        elif self.fmt is OutputFormat.json:
            body = json.dumps(result, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            self.stream.write(("," if self.count else "") + "\n  " + body)
        else:
            assert self._csv is not None
            self._csv.writerows(csv_rows(result, self.landmarks))

    def close(self) -> None:
        """Finish the output (closing bracket, rendered table) and close the file (never stdout)."""
        if self._closed:
            return
        self._closed = True
        if self.fmt is OutputFormat.json:
            self.stream.write("\n]\n" if self.count else "]\n")
        elif self.fmt is OutputFormat.table:
            _print_table(self._table, self.stream)
        self.stream.flush()
        if self.stream is not sys.stdout:
            self.stream.close()


def _print_table(results: list[dict[str, Any]], stream: IO[str]) -> None:
    """One row per face; an image without faces gets one row saying why. Long paths wrap, never cut, and
    the ``note`` column appears only when some image has no face or failed."""
    from rich.table import Table

    notes = any(r["error"] or not r["faces"] for r in results)
    table = Table(title="Faces")
    table.add_column("image", overflow="fold")
    for col in ("#", "age", "interval", "group", "gender", "P(gender)", "score"):
        table.add_column(col, no_wrap=True)
    if notes:
        table.add_column("note")
    for r in results:
        if not r["faces"]:
            table.add_row(r["path"], "-", "", "", "", "", "", "", r["error"] or "no face")
        for i, f in enumerate(r["faces"]):
            p = "" if f["gender_probability"] is None else f"{100 * f['gender_probability']:.0f} %"
            cells = [r["path"], str(i), f"{f['age']:.1f}", f"{f['age_interval'][0]:.0f}–{f['age_interval'][1]:.0f}",
                     f["age_group"], str(f["gender"] or "-"), p, f"{f['score']:.2f}"]
            table.add_row(*cells, *([""] if notes else []))
    console = Console(file=stream, width=200) if stream is not sys.stdout else Console()
    console.print(table)


#: Formats Pillow writes, by extension: an annotated copy keeps its input's name and format.
_WRITABLE = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
             ".tiff": "TIFF"}


def annotated_name(path: str, taken: set[str]) -> str:
    """The annotated copy's file name: the input's own name (and so its format), made unique in one run.

    Two inputs with the same name from different folders get ``name~2.jpg`` and so on; an input whose
    extension Pillow cannot write (or has none) gets ``.png`` appended. A name cut to a safe length keeps a
    short hash of the full path, so two long names that share a prefix stay distinct.

    Args:
        path: the input as named in the results.
        taken: names already given in this run; the returned name is added to it.

    Returns:
        A file name (no folder).
    """
    name = Path(path).name or "image"
    stem, suffix = (name[: -len(Path(name).suffix)], Path(name).suffix) if Path(name).suffix else (name, "")
    if suffix.lower() not in _WRITABLE:
        stem, suffix = name, ".png"
    raw = stem.encode("utf-8", "surrogateescape")
    if len(raw) > _NAME_BYTES:
        digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        stem = raw[:_NAME_BYTES].decode("utf-8", "ignore") + "~" + digest
    candidate, n = stem + suffix, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}~{n}{suffix}"
    taken.add(candidate)
    return candidate


def save_like(pixels: Any, target: Path) -> None:
    """Save an RGB array as ``target``'s format (by extension); JPEG and WebP at quality 90, so an annotated
    photo is about the size of its original, not a PNG several times larger.

    Raises:
        OSError: the file cannot be written.
    """
    from PIL import Image

    fmt = _WRITABLE.get(target.suffix.lower(), "PNG")
    options = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(pixels).save(target, format=fmt, **options)
