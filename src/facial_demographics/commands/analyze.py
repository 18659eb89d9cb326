"""``analyze`` and ``demo``: the main job on the command line."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..inputs import IMAGE_SUFFIXES, expand_inputs
from ..output import OutputError, OutputFormat
from ._common import (
    EXIT_FAILED_ITEMS,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Device,
    DeviceOption,
    ModelOption,
    err,
    need_extra,
    progress_bar,
    user_errors,
)

if TYPE_CHECKING:
    from ..output import ResultWriter
    from ..pipeline import FaceAnalyzer

SAMPLE_PHOTO = Path(__file__).parent.parent / "samples" / "astronaut.png"


@dataclass
class _Run:
    """Progress of one ``analyze`` run, for the summary and the interruption message."""

    total: int
    done: int = 0
    faces: int = 0
    unreadable: int = 0
    started: float = field(default_factory=time.perf_counter)

    def summary(self, skipped: int = 0) -> str:
        """E.g. ``3 images, 2 faces, 0 unreadable, 1.2 s; 1 file skipped (not .bmp, ...)``."""
        text = (f"{self.done} image{'s' * (self.done != 1)}, {self.faces} face{'s' * (self.faces != 1)}, "
                f"{self.unreadable} unreadable, {time.perf_counter() - self.started:.1f} s")
        if skipped:
            text += f"; {skipped} file{'s' * (skipped != 1)} skipped (not {', '.join(sorted(IMAGE_SUFFIXES))})"
        return text


def _annotate_to(directory: Path, path: str, faces: list[Any], index: int) -> None:
    """Write the annotated copy of one input; a failure is reported and the run goes on."""
    from PIL import Image

    from ..annotate import draw
    from ..imaging import ImageError, read_image
    from ..output import annotated_name

    target = directory / annotated_name(index, path)
    try:
        Image.fromarray(draw(read_image(path), faces)).save(target)
    except (ImageError, OSError) as exc:
        err.print(f"[yellow]{path}: annotated copy not written to {target} ({exc})[/yellow]")


def _prepare_annotate(directory: Path | None) -> None:
    if directory is None:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{directory}: --annotate needs a folder, and this is a file") from None
    except OSError as exc:
        raise OutputError(f"{directory}: cannot create the --annotate folder ({exc.strerror or exc})") from None


class Engine(str, Enum):
    local = "local"
    ray = "ray"


def analyze(
    paths: Annotated[list[str] | None, typer.Argument(
        help="Image files, folders or glob patterns (--engine ray: also object-store URIs).")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Scan folders recursively.")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write results here, not stdout.")] = None,
    annotate: Annotated[Path | None, typer.Option("--annotate", help="Write annotated images to DIR.")] = None,
    cropped: Annotated[bool, typer.Option("--cropped", help="Each input is one already-cropped face.")] = False,
    landmarks: Annotated[bool, typer.Option(
        "--landmarks", help="CSV: add the five landmarks as ten columns (right_eye_x ... mouth_left_y).")] = False,
    model: ModelOption = None,
    # 16, not 32: the same CPU time and about 45 MiB less peak memory (README, "Speed and footprint").
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Faces per model batch.")] = 16,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="ONNX Runtime threads (--engine ray: CPUs per actor, default 1).")] = None,
    device: DeviceOption = Device.auto,
    paths_from: Annotated[list[str] | None, typer.Option(
        "--paths-from", help="A text file (or URI) naming one input per line; repeatable.")] = None,
    engine: Annotated[Engine, typer.Option("--engine", help="local, or ray: a Ray cluster (Ray Data).")] = Engine.local,
    address: Annotated[str | None, typer.Option(
        "--address", help="--engine ray: the cluster (auto, HOST:PORT); default: a new local Ray instance.")] = None,
    actors: Annotated[int | None, typer.Option(
        "--actors", min=1, help="--engine ray: analyser actors (default: the cluster's CPUs / --threads).")] = None,
    resume: Annotated[bool, typer.Option(
        help="--engine ray: skip inputs whose results -o already holds (--no-resume starts over).")] = True,
) -> None:
    """Estimate age and gender for every face in the given images.

    Results are written as each image finishes (jsonl and csv line by line), so Ctrl-C keeps them.
    Exit code 0 when every input was read, 1 when any failed (each failure is reported in the output),
    2 for bad usage (including an unusable -o or model), 130 when interrupted.
    With --engine ray (the 'distributed' extra) the images are analysed on a Ray cluster and written as
    --format jsonl or parquet (a folder); re-running the same command resumes where it stopped.
    """
    from ..output import ResultWriter, check_output, open_output
    from ..pipeline import FaceAnalyzer

    if engine is Engine.ray:
        _analyze_on_ray(paths or [], paths_from or [], output, fmt, recursive, annotate, model, cropped, batch_size,
                        threads, address, actors, resume)
    if fmt is OutputFormat.parquet:
        err.print("[red]--format parquet is written by --engine ray only[/red]")
        raise typer.Exit(EXIT_USAGE)
    with user_errors():
        from ..distributed.sources import read_path_list

        paths = [*(paths or []), *(line for source in paths_from or [] for line in read_path_list(source))]
    scan = expand_inputs(paths, recursive)
    for folder in scan.nested:
        err.print(f"[yellow]{folder} holds only folders: use --recursive to analyse the images inside them[/yellow]")
    if not scan.paths:
        err.print("[red]No images found in the given paths.[/red]")
        raise typer.Exit(EXIT_USAGE)
    with user_errors():  # before any work: a bad -o would otherwise lose every result at the end
        check_output(output)
        _prepare_annotate(annotate)
    with user_errors("Cannot load the model:"):
        analyzer = FaceAnalyzer(model, cropped=cropped, batch_size=batch_size, threads=threads, device=device.value)
        analyzer.warm_up()
    with user_errors():
        writer = ResultWriter(fmt, open_output(output), landmarks=landmarks)
    run = _Run(total=len(scan.paths))
    _run_to_end(analyzer, scan.paths, writer, annotate, run, str(output) if output is not None else "stdout")
    err.print(f"analysed {run.summary(len(scan.skipped))}", highlight=False)
    if run.unreadable:
        raise typer.Exit(EXIT_FAILED_ITEMS)


def _run_to_end(analyzer: FaceAnalyzer, inputs: list[str], writer: ResultWriter, annotate: Path | None,
                run: _Run, where: str) -> None:
    """Analyse everything; on Ctrl-C or a crash, say how far it got (the results so far are on disk)."""
    try:
        _analyze_into(analyzer, inputs, writer, annotate, run)
    except KeyboardInterrupt:
        writer.close()
        err.print(f"interrupted after {run.done} of {run.total} images; results so far in {where}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        writer.close()
        err.print(f"[red]failed after {run.done} of {run.total} images ({type(exc).__name__}: {exc}); "
                  f"results so far in {where}[/red]")
        raise
    finally:
        writer.close()


def _analyze_into(
    analyzer: FaceAnalyzer, inputs: list[str], writer: ResultWriter, annotate: Path | None, run: _Run
) -> None:
    """Analyse ``inputs`` in order, writing each result (and annotated copy) as soon as it is ready."""
    with progress_bar("Analysing images", len(inputs), line="analysed {done}/{total} images ({pct:.0f} %)") as adv:
        for i, result in enumerate(analyzer.iter_analyze(inputs, progress=adv)):
            if annotate is not None and result.ok:
                _annotate_to(annotate, inputs[i], result.faces, i)
            writer.write(result.to_dict())
            run.done += 1
            run.faces += len(result.faces)
            if not result.ok:
                run.unreadable += 1
                err.print(f"[yellow]{result.path}: {result.error}[/yellow]")


def _analyze_on_ray(paths: list[str], paths_from: list[str], output: Path | None, fmt: OutputFormat,
                    recursive: bool, annotate: Path | None, model: str | None, cropped: bool, batch_size: int,
                    threads: int | None, address: str | None, actors: int | None, resume: bool) -> None:
    """``analyze --engine ray``: always exits (the body is commands/analyze_ray.py)."""
    need_extra("distributed")
    from .analyze_ray import RayCommand, analyze_ray_command, ray_spec

    if annotate is not None:
        err.print("[red]--annotate is not available with --engine ray[/red]")
        raise typer.Exit(EXIT_USAGE)
    with user_errors():
        code = analyze_ray_command(paths, paths_from, output, fmt.value, recursive,
                                   ray_spec(model, cropped, batch_size, threads),
                                   RayCommand(address, actors, threads or 1, resume), err)
    raise typer.Exit(code)


def demo(
    image: Annotated[
        Path | None, typer.Argument(help="A photo (default: a public-domain NASA portrait, scikit-image's astronaut).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the annotated image.")] = Path(
        "out/demo.png"
    ),
    model: ModelOption = None,
    device: DeviceOption = Device.auto,
) -> None:
    """The main job on the bundled defaults: analyse a real photo and write an annotated copy."""
    from PIL import Image

    from ..annotate import draw, label
    from ..imaging import ImageError, read_image
    from ..pipeline import FaceAnalyzer

    photo = image or SAMPLE_PHOTO
    name = str(image) if image is not None else "astronaut.png (bundled sample)"
    try:
        pixels = read_image(photo, name=name)
    except ImageError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_FAILED_ITEMS) from exc
    with user_errors("Cannot load the model:"):
        analyzer = FaceAnalyzer(model, device=device.value)
        analyzer.warm_up()
    result = analyzer.analyze(pixels, name=name)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw(pixels, result.faces)).save(out)
    typer.echo(f"{name}: {len(result.faces)} face(s)")
    for i, face in enumerate(result.faces):
        typer.echo(f"  face {i}: {label(face)}  box={[round(v) for v in face.box]}")
    typer.echo(f"annotated image: {out}")
