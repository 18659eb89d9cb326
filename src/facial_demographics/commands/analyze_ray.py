"""The body of ``analyze --engine ray``: messages, progress and exit codes around :func:`analyze_on_ray`.

It prints what the local engine prints (per-image error lines, progress with counts, the summary line)
and returns the same exit codes: 0 when every input was read, 1 when any could not be (in this run or
an earlier one whose records the output holds), 2 for bad usage, 130 when interrupted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ..distributed.actor import AnalyzerSpec, build_analyzer, spec_for
from ..distributed.engine import ClusterOptions, RunReport, analyze_on_ray
from ..distributed.sinks import Previous
from ..distributed.sources import InputList
from ..errors import UserError
from ..inputs import IMAGE_SUFFIXES
from ..types import ImageResult
from ._common import progress_bar


@dataclass(frozen=True)
class RayCommand:
    """The options of ``analyze --engine ray`` that are not the local engine's."""

    address: str | None = None
    actors: int | None = None
    threads: int = 1
    resume: bool = True


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'s' * (n != 1)}"


def summary_line(report: RunReport) -> str:
    """``analysed 3 images, 2 faces, 0 unreadable, 1.2 s`` (the local engine's words), plus what was
    skipped for its extension and what earlier runs had already written."""
    text = (f"analysed {_plural(report.analysed, 'image')}, {_plural(report.faces, 'face')}, "
            f"{report.unreadable} unreadable, {report.seconds:.1f} s")
    skipped = len(report.inputs.skipped)
    if skipped:
        text += f"; {_plural(skipped, 'file')} skipped (not {', '.join(sorted(IMAGE_SUFFIXES))})"
    done = report.previous
    if done.images:
        text += (f"; {_plural(done.images, 'image')} already in {report.where} ({_plural(done.faces, 'face')}, "
                 f"{done.unreadable} unreadable), not redone")
    return text


def analyze_ray_command(paths: Sequence[str], path_lists: Sequence[str], output: Path | None, fmt: str,
                        recursive: bool, spec: AnalyzerSpec, ray: RayCommand, console: Console) -> int:
    """Run ``analyze --engine ray`` and return its exit code (messages go to ``console``, stderr).

    Raises:
        UserError: bad inputs, output, model or cluster, before any image is analysed (the CLI: exit 2).
    """
    build_analyzer(spec).warm_up()  # a bad bundle stops here with the local engine's message
    counts = {"done": 0, "todo": 0}
    where = str(output) if output is not None else "stdout"

    bar = ExitStack()  # the local engine's progress bar, entered once the number of inputs is known
    step: list[Callable[[int], None]] = []

    def advance(n: int) -> None:
        if step:
            step[0](n)

    def start(total: int) -> None:
        step.append(bar.enter_context(progress_bar("Analysing images on Ray", total,
                                                 line="analysed {done}/{total} images ({pct:.0f} %)")))

    def on_result(result: ImageResult) -> None:
        counts["done"] += 1
        advance(1)
        if not result.ok:
            console.print(f"[yellow]{result.path}: {result.error}[/yellow]")

    with bar:
        def on_start(inputs: InputList, todo: int, previous: Previous) -> None:
            for folder in inputs.nested:
                console.print(f"[yellow]{folder} holds only folders: use --recursive to analyse the images "
                              "inside them[/yellow]")
            if not inputs.paths:
                raise NoInputs("no images found in the given paths")
            if previous.images:
                console.print(f"resuming: {previous.images:,} of {len(inputs.paths):,} inputs already in {where}",
                              highlight=False)
            counts["todo"] = todo
            start(todo)

        try:
            report = analyze_on_ray(
                paths, None if output is None else str(output), fmt, recursive=recursive, path_lists=path_lists,
                resume=ray.resume, spec=spec, options=ClusterOptions(address=ray.address, actors=ray.actors),
                on_start=on_start, on_result=on_result)
        except NoInputs as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            return 2
        except KeyboardInterrupt:
            console.print(f"interrupted after {counts['done']} of {counts['todo']} images; results so far in "
                          f"{where}")
            return 130
        except UserError:
            raise
        except Exception as exc:
            console.print(f"[red]error:[/red] failed after {counts['done']} of {counts['todo']} images "
                          f"({type(exc).__name__}: {escape(str(exc))}); results so far in {where}", highlight=False)
            raise
    console.print(summary_line(report), highlight=False)
    return 1 if report.all_unreadable else 0


class NoInputs(UserError, ValueError):
    """Nothing to analyse in the given paths."""


def ray_spec(model: str | None, cropped: bool, batch_size: int, threads: int | None, min_face: float = 0.0,
             min_score: float = 0.0) -> AnalyzerSpec:
    """The actors' analyser from ``analyze``'s options (``--threads``: CPUs per actor, default 1)."""
    return spec_for(model, cropped=cropped, batch_size=batch_size, threads=threads or 1, min_face=min_face,
                    min_score=min_score)
