"""What every command shares: the stderr console, exit codes for expected failures, progress, extras."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import UserError
from ..progress import Advance
from ..runtime import DEVICES

err = Console(stderr=True, soft_wrap=True)

ModelOption = Annotated[str | None, typer.Option(
    "--model", "-m", metavar="NAME|PATH",
    help="default | fast | fp32 | seed (see 'facial-demographics models'), or a model bundle directory.")]
BandsOption = Annotated[str | None, typer.Option(
    "--bands", metavar="EDGES|PRESET",
    help="Age bands of the population summary: first ages of each band after the first (default "
         "13,18,25,35,45,55,65 = 0-12 ... 65+), or a preset: audience, report (the 25-year buckets), life-stage.")]
MinFaceOption = Annotated[float, typer.Option(
    "--min-face", metavar="PX", min=0,
    help="Ignore faces smaller than PX pixels (the shorter side of the face's box), e.g. 40 for faces in the "
         "background of a crowd.")]
MinScoreOption = Annotated[float, typer.Option(
    "--min-score", metavar="S", min=0.0, max=1.0,
    help="Ignore faces the detector scored below S (0..1; it already drops those below 0.6), e.g. 0.9 "
         "to keep only clear faces.")]
IntervalOption = Annotated[float, typer.Option(
    "--interval", min=0.5, max=0.999, help="Probability of the summary's intervals.")]


class Device(str, Enum):
    """``--device`` values (runtime.DEVICES)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


assert tuple(d.value for d in Device) == DEVICES
DeviceOption = Annotated[Device, typer.Option(
    "--device", envvar="FD_DEVICE",
    help="Where the networks run: auto = a CUDA GPU when onnxruntime-gpu and a GPU are present, else the CPU.")]

#: Exit codes: 1 = some inputs failed (reported per item), 2 = bad usage or an expected failure, 130 = Ctrl-C.
EXIT_FAILED_ITEMS, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def error_line(message: str) -> None:
    """Print one failure in the CLI's one form, ``error: <message>`` (the message is not markup)."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)  # "[gpu]" in a message is not markup


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: <message>`` and exit (2, bad usage, unless told otherwise).

    Raises:
        typer.Exit: always.
    """
    error_line(message)
    raise typer.Exit(code)


@contextmanager
def user_errors(context: str = "") -> Iterator[None]:
    """Expected failures (a :class:`UserError`, or a path that does not exist) → ``error: ...`` and exit 2.

    Anything else is a bug in this program and keeps its traceback.

    Args:
        context: what was being done, put before the message (``"cannot load the model"`` gives
            ``error: cannot load the model: <message>``).
    """
    try:
        yield
    except (UserError, FileNotFoundError) as exc:
        what = context.strip().rstrip(":")
        what = what[:1].lower() + what[1:]  # callers may write "Cannot ...": the line reads "error: cannot ..."
        fail(f"{what}: {exc}" if what and what.lower() != "error" else str(exc))


#: Seconds between progress lines when stderr is not a terminal (a log file or CI).
PROGRESS_EVERY_S = 5.0


@contextmanager
def progress_bar(description: str, total: int, line: str = "{description}: {done}/{total} ({pct:.0f} %)",
                 ) -> Iterator[Advance]:
    """A :data:`~facial_demographics.progress.ProgressFactory`: a bar with counts on a terminal, else a
    plain line (``line``, formatted with description, done, total and pct) every few seconds."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=err, transient=True, disable=total < 2) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)
        return
    done, last = 0, time.monotonic()

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        if time.monotonic() - last >= PROGRESS_EVERY_S and done < total:
            last = time.monotonic()
            pct = 100 * done / max(total, 1)
            err.print(line.format(description=description, done=done, total=total, pct=pct), highlight=False)

    yield advance


_DATA_MODULES = ("pandas", "pyarrow", "scipy", "matplotlib", "skimage")
_EXTRAS = {"data": _DATA_MODULES, "train": ("torch", "kornia", "onnx", *_DATA_MODULES),  # train pulls in data
           "quantize": ("onnx", *_DATA_MODULES), "serve": ("fastapi", "uvicorn", "multipart"),
           "distributed": ("ray",), "video": ("av", "trackers"),
           "teacher": ("dlib", "face_recognition_models", *_DATA_MODULES)}


def need_extra(extra: str) -> None:
    """Exit with an install line when an extra's packages are missing (checked without importing them)."""
    missing = [m for m in _EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        torch = "torch==2.13.0 " if extra == "train" else ""
        fail(f"this command needs the '{extra}' extra ({', '.join(missing)} not installed): "
             f"pip install {torch}'facial-demographics[{extra}]'")
