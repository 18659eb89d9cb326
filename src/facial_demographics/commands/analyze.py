"""``analyze`` and ``demo``: the main job on the command line."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from ..inputs import IMAGE_SUFFIXES, expand_inputs, named_input_problems
from ..output import OutputError, OutputFormat, ctrl_c_deferred, make_folder
from ._common import (
    EXIT_FAILED_ITEMS,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    BandsOption,
    Device,
    DeviceOption,
    IntervalOption,
    MinFaceOption,
    MinScoreOption,
    ModelOption,
    err,
    error_line,
    fail,
    need_extra,
    progress_bar,
    user_errors,
)

if TYPE_CHECKING:
    from ..inputs import InputScan
    from ..output import ResultWriter
    from ..pipeline import FaceAnalyzer
    from ..population.identity import Describer
    from ..population.records import ResultSet

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


def _reread(path: str) -> Any:
    """The pixels of one analysed input for --annotate and --unique (read once for both); an image that
    cannot be read again is reported and None returned, and the run goes on."""
    from ..imaging import ImageError, read_image

    try:
        return read_image(path)
    except (ImageError, OSError) as exc:
        error_line(f"{path}: could not be read again for --annotate/--unique ({exc})")
        return None


def _annotate_to(directory: Path, path: str, pixels: Any, faces: list[Any], taken: set[str]) -> None:
    """Write the annotated copy of one input under its own name and format; a failure is reported and the
    run goes on."""
    from ..annotate import draw
    from ..output import annotated_name, save_like

    target = directory / annotated_name(path, taken)
    try:
        save_like(draw(pixels, faces), target)
    except OSError as exc:
        error_line(f"{path}: annotated copy not written to {target} ({exc})")


def _prepare_annotate(directory: Path | None, inputs: list[str]) -> None:
    """Create the --annotate folder before any work; refuse one that holds the inputs (the copies keep the
    inputs' names, so they would overwrite the originals).

    Raises:
        OutputError: the folder is a file, cannot be created, or holds the inputs.
    """
    if directory is None:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{directory}: --annotate needs a folder, and this is a file") from None
    except OSError as exc:
        raise OutputError(f"{directory}: cannot create the --annotate folder ({exc.strerror or exc})") from None
    here = directory.resolve()
    if any(Path(path).resolve().parent == here for path in inputs):
        raise OutputError(f"{directory}: --annotate would overwrite the photos in it (the copies keep their "
                          "names); choose another folder")


class Engine(str, Enum):
    local = "local"
    ray = "ray"


def analyze(
    paths: Annotated[list[str] | None, typer.Argument(
        help="Image files, folders or glob patterns (--engine ray: also object-store URIs).")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Scan folders recursively.")] = False,
    fmt: Annotated[OutputFormat, typer.Option(
        "--format", "-f", metavar="table|json|jsonl|csv", show_choices=False,
        help="Output format (parquet too, with --engine ray).")] = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write results here, not stdout.")] = None,
    annotate: Annotated[Path | None, typer.Option(
        "--annotate", metavar="DIR", help="Also write each photo with its faces drawn to DIR (same name and "
        "format as the input).")] = None,
    cropped: Annotated[bool, typer.Option("--cropped", help="Each input is one already-cropped face.")] = False,
    min_face: MinFaceOption = 0,
    min_score: MinScoreOption = 0.0,
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
    summary: Annotated[Path | None, typer.Option(
        "--summary", metavar="DIR", help="Also write the population summary (summary.json, summary.csv, "
        "pyramid.png, report.html) of all the faces to DIR, as 'summarize' would.")] = None,
    bands: BandsOption = None,
    interval: IntervalOption = 0.9,
    unique: Annotated[bool, typer.Option(
        "--unique", help="Describe each face (dlib's face descriptor, the 'video' extra) into the results, so the "
        "summary counts each person once across the photos.")] = False,
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
        if summary is not None or unique:
            fail("--summary and --unique are not available with --engine ray: run 'summarize' on its jsonl")
        _analyze_on_ray(paths or [], paths_from or [], output, fmt, recursive, annotate, model, cropped, batch_size,
                        threads, address, actors, resume, min_face, min_score)
    if fmt is OutputFormat.parquet:
        fail("--format parquet is written by --engine ray only; use -f jsonl or -f csv here")
    inputs = _local_inputs(paths or [], paths_from or [], recursive)
    with user_errors():  # before any work: a bad -o, --summary or --bands would otherwise lose the run's end
        check_output(output)
        _prepare_annotate(annotate, inputs.paths)
        collected = _prepare_summary(summary, bands)
        describer = _prepare_unique(unique)
    with user_errors("cannot load the model"):
        analyzer = FaceAnalyzer(model, cropped=cropped, batch_size=batch_size, threads=threads, device=device.value,
                                min_face=min_face, min_score=min_score)
        analyzer.warm_up()
    with user_errors():
        writer = ResultWriter(fmt, open_output(output), landmarks=landmarks)
    run = _Run(total=len(inputs.paths))
    try:
        _run_to_end(analyzer, inputs.paths, writer, annotate, run, str(output) if output is not None else "stdout",
                    collected, describer)
    finally:  # an interrupted run still summarises what it finished
        if summary is not None and collected is not None and run.done:
            from .summarize import summarize_results

            with user_errors():
                summarize_results(collected, summary, analyzer.model.bundle, bands, interval,
                                  title=f"Population summary of {run.done} analysed images", unique=unique)
    err.print(f"analysed {run.summary(len(inputs.skipped))}", highlight=False)
    if run.unreadable:
        raise typer.Exit(EXIT_FAILED_ITEMS)


#: What ``analyze`` without inputs says (the examples are those of ``--help``).
USAGE_HINT = ("give image files, folders or glob patterns, e.g. 'facial-demographics analyze photos/' "
              "(see 'facial-demographics analyze --help')")


def _local_inputs(paths: list[str], paths_from: list[str], recursive: bool) -> InputScan:
    """The images to analyse; a usage error (exit 2) for no inputs, or a typed path that is missing or a video.

    Paths read from --paths-from lists are not checked up front: a few missing files in a long list are
    per-image failures, as they would be if they vanished during the run.
    """
    if not paths and not paths_from:
        fail(USAGE_HINT)
    problems = named_input_problems(paths, recursive)
    for problem in problems:
        error_line(problem)
    if problems:
        raise typer.Exit(EXIT_USAGE)
    with user_errors():
        from ..distributed.sources import read_path_list

        listed = [line for source in paths_from for line in read_path_list(source)]
    scan = expand_inputs([*paths, *listed], recursive)
    for folder in scan.nested:
        err.print(f"[yellow]note:[/yellow] {escape(folder)} holds only folders: use --recursive to analyse the "
                  "images inside them", highlight=False)
    if not scan.paths:
        fail("no images found in the given paths (looked for " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")")
    return scan


def _prepare_summary(out: Path | None, bands: str | None) -> ResultSet | None:
    """Check --bands and the --summary folder before any work; the collector of the run's faces."""
    if out is None:
        return None
    from ..population import AgeBands
    from ..population.records import ResultSet

    AgeBands.parse(bands)
    make_folder(out, "--summary")
    return ResultSet()


def _prepare_unique(unique: bool) -> Describer | None:
    """The face describer for --unique, loaded before any work (a missing dlib fails here, exit 2)."""
    if not unique:
        return None
    from ..population.identity import Describer

    return Describer()


def _describe(describer: Describer, pixels: Any, record: dict[str, Any]) -> None:
    """Add each face's descriptor to its record."""
    if not record["faces"]:
        return
    vectors = describer.describe(pixels, [f["landmarks"] for f in record["faces"]])
    for face, vector in zip(record["faces"], vectors, strict=True):
        face["descriptor"] = vector


def _run_to_end(analyzer: FaceAnalyzer, inputs: list[str], writer: ResultWriter, annotate: Path | None,
                run: _Run, where: str, collected: ResultSet | None = None, describer: Describer | None = None,
                ) -> None:
    """Analyse everything; on Ctrl-C or a crash, say how far it got (the results so far are on disk)."""
    try:
        _analyze_into(analyzer, inputs, writer, annotate, run, collected, describer)
    except KeyboardInterrupt:
        writer.close()
        err.print(f"interrupted after {run.done} of {run.total} images; results so far in {where}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        writer.close()
        error_line(f"failed after {run.done} of {run.total} images ({type(exc).__name__}: {exc}); "
                   f"results so far in {where}")
        raise
    finally:
        writer.close()


def _analyze_into(
    analyzer: FaceAnalyzer, inputs: list[str], writer: ResultWriter, annotate: Path | None, run: _Run,
    collected: ResultSet | None = None, describer: Describer | None = None,
) -> None:
    """Analyse ``inputs`` in order, writing each result (and annotated copy) as soon as it is ready;
    ``collected`` gathers the faces for --summary, ``describer`` adds descriptors for --unique."""
    taken: set[str] = set()  # annotated copies' names so far: two inputs called a.jpg must not collide
    with progress_bar("Analysing images", len(inputs), line="analysed {done}/{total} images ({pct:.0f} %)") as adv:
        for i, result in enumerate(analyzer.iter_analyze(inputs, progress=adv)):
            record = result.to_dict()
            # The analyser does not keep the pixels (a batch of large photos would stay in memory), so
            # --annotate and --unique read the image again, once for both.
            pixels = _reread(inputs[i]) if result.ok and (annotate is not None or describer is not None) else None
            if annotate is not None and pixels is not None:
                _annotate_to(annotate, inputs[i], pixels, result.faces, taken)
            if describer is not None and pixels is not None:
                _describe(describer, pixels, record)
            # Written, collected for --summary and counted together: after Ctrl-C all three agree.
            with ctrl_c_deferred():
                writer.write(record)
                if collected is not None:
                    collected.add_image(record)
                run.done += 1
                run.faces += len(result.faces)
                run.unreadable += not result.ok
            if not result.ok:
                error_line(f"{result.path}: {result.error}")


def _analyze_on_ray(paths: list[str], paths_from: list[str], output: Path | None, fmt: OutputFormat,
                    recursive: bool, annotate: Path | None, model: str | None, cropped: bool, batch_size: int,
                    threads: int | None, address: str | None, actors: int | None, resume: bool,
                    min_face: float = 0.0, min_score: float = 0.0) -> None:
    """``analyze --engine ray``: always exits (the body is commands/analyze_ray.py)."""
    need_extra("distributed")
    from .analyze_ray import RayCommand, analyze_ray_command, ray_spec

    if annotate is not None:
        fail("--annotate is not available with --engine ray")
    from ..distributed.sources import is_uri

    # Typed local paths are checked up front as for the local engine (object-store URIs are listed later).
    problems = named_input_problems([p for p in paths if not is_uri(p)], recursive)
    for problem in problems:
        error_line(problem)
    if problems:
        raise typer.Exit(EXIT_USAGE)
    with user_errors():
        code = analyze_ray_command(paths, paths_from, output, fmt.value, recursive,
                                   ray_spec(model, cropped, batch_size, threads, min_face, min_score),
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
        fail(str(exc), EXIT_FAILED_ITEMS)
    with user_errors("cannot load the model"):
        analyzer = FaceAnalyzer(model, device=device.value)
        analyzer.warm_up()
    result = analyzer.analyze(pixels, name=name)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw(pixels, result.faces)).save(out)
    typer.echo(f"{name}: {len(result.faces)} face(s)")
    for i, face in enumerate(result.faces):
        typer.echo(f"  face {i}: {label(face)}  box={[round(v) for v in face.box]}")
    typer.echo(f"annotated image: {out}")
