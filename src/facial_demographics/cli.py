"""The ``facial-demographics`` command line. Heavy imports happen inside commands so ``--help`` is instant."""

from __future__ import annotations

import glob
import importlib.util
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from . import __version__
from .output import OutputFormat

if TYPE_CHECKING:
    from .output import ResultWriter
    from .pipeline import FaceAnalyzer

app = typer.Typer(
    help="Find every face in a photo and estimate its age (with an interval) and gender; "
    "train and evaluate your own models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # subcommands inherit it
)
data_app = typer.Typer(help="Dataset tools: statistics, splits and the aligned-face cache.", no_args_is_help=True)
app.add_typer(data_app, name="data")
err = Console(stderr=True, soft_wrap=True)


@contextmanager
def _user_errors(prefix: str = "error:") -> Iterator[None]:
    """Bad user input (missing files, bad values, bad bundles) → a one-line message and exit code 2."""
    try:
        yield
    except (FileNotFoundError, ValueError) as exc:  # BundleError and ConfigError are ValueErrors
        err.print(f"[red]{prefix}[/red] {exc}")
        raise typer.Exit(2) from None

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
ModelOption = Annotated[
    Path | None, typer.Option("--model", "-m", help="Model bundle directory (default: the bundled model).")
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facial-demographics {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """facial-demographics: age and gender for every face in a photo."""


@dataclass
class InputScan:
    """What :func:`expand_inputs` found: the files to analyse and what it left out."""

    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files in scanned folders with other extensions
    nested: list[str] = field(default_factory=list)  # folders with no images but subfolders (no --recursive)


def expand_inputs(items: Iterable[str], recursive: bool) -> InputScan:
    """Files as given, folders scanned for images (sorted), globs expanded.

    Unmatched items are kept so that they are reported as errors rather than silently dropped; files
    named explicitly are kept whatever their extension (the reader decides).

    Args:
        items: file paths, folders or glob patterns, as typed.
        recursive: scan folders (and ``**`` globs) recursively.

    Returns:
        The paths to analyse, the files skipped for their extension, and the folders that only hold
        subfolders (a hint to use ``--recursive``).
    """
    scan = InputScan()
    for item in items:
        path = Path(item)
        if path.is_dir():
            entries = sorted(path.glob("**/*" if recursive else "*"))
            files = [p for p in entries if p.is_file()]
            images = [str(p) for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            scan.paths.extend(images)
            scan.skipped.extend(str(p) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES)
            if not images and not recursive and any(p.is_dir() for p in entries):
                scan.nested.append(item)
        elif any(ch in item for ch in "*?[") and not path.exists():
            matches = sorted(glob.glob(item, recursive=recursive))
            scan.paths.extend(matches if matches else [item])
        else:
            scan.paths.append(item)
    return scan


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

    from .annotate import draw
    from .imaging import ImageError, read_image
    from .output import annotated_name

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
        raise ValueError(f"{directory}: --annotate needs a folder, and this is a file") from None
    except OSError as exc:
        raise ValueError(f"{directory}: cannot create the --annotate folder ({exc.strerror or exc})") from None


#: Seconds between progress lines when stderr is not a terminal (a log file or CI).
PROGRESS_EVERY_S = 5.0


@contextmanager
def _progress(total: int, what: str = "images") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``: a bar with counts on a terminal, else a plain line every few seconds."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=err, transient=True, disable=total < 2) as bar:
            task = bar.add_task(f"Analysing {what}", total=total)
            yield lambda n: bar.advance(task, n)
        return
    done, last = 0, time.monotonic()

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        if time.monotonic() - last >= PROGRESS_EVERY_S and done < total:
            last = time.monotonic()
            err.print(f"analysed {done}/{total} {what} ({100 * done / total:.0f} %)", highlight=False)

    yield advance


@app.command()
def analyze(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.")],
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Scan folders recursively.")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write results here, not stdout.")] = None,
    annotate: Annotated[Path | None, typer.Option("--annotate", help="Write annotated images to DIR.")] = None,
    cropped: Annotated[bool, typer.Option("--cropped", help="Each input is one already-cropped face.")] = False,
    landmarks: Annotated[bool, typer.Option(
        "--landmarks", help="CSV: add the five landmarks as ten columns (right_eye_x ... mouth_left_y).")] = False,
    model: ModelOption = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Faces per model batch.")] = 32,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="ONNX Runtime threads.")] = None,
) -> None:
    """Estimate age and gender for every face in the given images.

    Results are written as each image finishes (jsonl and csv line by line), so Ctrl-C keeps them.
    Exit code 0 when every input was read, 1 when any failed (each failure is reported in the output),
    2 for bad usage (including an unusable -o or model), 130 when interrupted.
    """
    from .output import ResultWriter, check_output, open_output
    from .pipeline import FaceAnalyzer

    scan = expand_inputs(paths, recursive)
    inputs = scan.paths
    for folder in scan.nested:
        err.print(f"[yellow]{folder} holds only folders: use --recursive to analyse the images inside them[/yellow]")
    if not inputs:
        err.print("[red]No images found in the given paths.[/red]")
        raise typer.Exit(2)
    with _user_errors():  # before any work: a bad -o would otherwise lose every result at the end
        check_output(output)
        _prepare_annotate(annotate)
    with _user_errors("Cannot load the model:"):
        analyzer = FaceAnalyzer(model, cropped=cropped, batch_size=batch_size, threads=threads)
        analyzer.warm_up()
    with _user_errors():
        writer = ResultWriter(fmt, open_output(output), landmarks=landmarks)
    where = str(output) if output is not None else "stdout"
    run = _Run(total=len(inputs))
    try:
        _analyze_into(analyzer, inputs, writer, annotate, run)
    except KeyboardInterrupt:
        writer.close()
        err.print(f"interrupted after {run.done} of {run.total} images; results so far in {where}")
        raise typer.Exit(130) from None
    except Exception as exc:
        writer.close()
        err.print(f"[red]failed after {run.done} of {run.total} images ({type(exc).__name__}: {exc}); "
                  f"results so far in {where}[/red]")
        raise
    finally:
        writer.close()
    err.print(f"analysed {run.summary(len(scan.skipped))}", highlight=False)
    if run.unreadable:
        raise typer.Exit(1)


def _analyze_into(
    analyzer: FaceAnalyzer, inputs: list[str], writer: ResultWriter, annotate: Path | None, run: _Run
) -> None:
    """Analyse ``inputs`` in order, writing each result (and annotated copy) as soon as it is ready."""
    with _progress(len(inputs)) as advance:
        for i, result in enumerate(analyzer.iter_analyze(inputs, progress=advance)):
            if annotate is not None and result.ok:
                _annotate_to(annotate, inputs[i], result.faces, i)
            writer.write(result.to_dict())
            run.done += 1
            run.faces += len(result.faces)
            if not result.ok:
                run.unreadable += 1
                err.print(f"[yellow]{result.path}: {result.error}[/yellow]")


SAMPLE_PHOTO = Path(__file__).parent / "samples" / "astronaut.png"


@app.command()
def demo(
    image: Annotated[
        Path | None, typer.Argument(help="A photo (default: a public-domain NASA portrait, scikit-image's astronaut).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the annotated image.")] = Path(
        "out/demo.png"
    ),
    model: ModelOption = None,
) -> None:
    """The main job on the bundled defaults: analyse a real photo and write an annotated copy."""
    from PIL import Image

    from .annotate import draw, label
    from .imaging import ImageError, read_image
    from .pipeline import FaceAnalyzer

    photo = image or SAMPLE_PHOTO
    name = str(image) if image is not None else "astronaut.png (bundled sample)"
    try:
        pixels = read_image(photo, name=name)
    except ImageError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    result = FaceAnalyzer(model).analyze(pixels, name=name)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw(pixels, result.faces)).save(out)
    typer.echo(f"{name}: {len(result.faces)} face(s)")
    for i, face in enumerate(result.faces):
        typer.echo(f"  face {i}: {label(face)}  box={[round(v) for v in face.box]}")
    typer.echo(f"annotated image: {out}")


@data_app.command("prepare")
def data_prepare(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder, archive, .mat or table.")],
    size: Annotated[int, typer.Option("--size", min=16, help="Aligned face size in pixels.")] = 112,
    out: Annotated[Path | None, typer.Option("--out", help="Cache directory (default cache/<name>-<size>).")] = None,
    margin: Annotated[float, typer.Option("--margin", help="Alignment margin (see alignment).")] = 0.0,
    template: Annotated[str, typer.Option("--template", help="Alignment template.")] = "utkface5",
    fmt: Annotated[str | None, typer.Option("--format", help="utkface | imdbwiki | table")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Processes (default: all cores).")] = None,
) -> None:
    """Detect and align every image once into a memory-mappable cache (resumable)."""
    _need_extra("data")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from .alignment import AlignmentConfig
    from .datasets.cache import prepare_cache
    from .datasets.loader import load_dataset

    read = load_dataset(dataset, fmt)
    for rej in read.rejected:
        err.print(f"[yellow]rejected {rej.item}: {rej.reason}[/yellow]")
    target = out or Path("cache") / f"{dataset.name.split('.')[0]}-{size}"
    cfg = AlignmentConfig(size=size, margin=margin, template=template)
    started = time.perf_counter()
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err) as progress:
        task = progress.add_task("Aligning faces", total=len(read.records))
        cache = prepare_cache(read.records, target, cfg, workers=workers, dataset=str(dataset),
                              progress=lambda n: progress.advance(task, n))
    counts = cache.meta["status_counts"]
    elapsed = time.perf_counter() - started
    typer.echo(f"{dataset}: {read.seen} items seen = {len(read.records)} records + {len(read.rejected)} rejected")
    typer.echo(f"cache {target}: {len(cache.index)} faces " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    typer.echo(f"{elapsed:.0f} s, {len(read.records) / max(elapsed, 1e-9):.0f} images/s (resumed work not counted)")
    for _, row in cache.index[cache.index["status"] == "unreadable"].iterrows():
        err.print(f"[yellow]unreadable {row['path']}: {row['error']}[/yellow]")


@data_app.command("stats")
def data_stats(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder, archive, .mat or table.")],
    out: Annotated[Path | None, typer.Option("--out", help="Write stats.json and a PNG histogram here.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="utkface | imdbwiki | table")] = None,
) -> None:
    """Counts, rejected items, age histogram, gender and race balance."""
    _need_extra("data")
    from .datasets.stats import stats_command

    stats_command(dataset, out, fmt)


@data_app.command("split")
def data_split(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder, archive, .mat or table.")],
    out: Annotated[Path, typer.Option("--out", help="Split CSV to write (key,split).")],
    val: Annotated[float, typer.Option("--val", help="Validation share.")] = 0.1,
    test: Annotated[float, typer.Option("--test", help="Test share.")] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 42,
    fmt: Annotated[str | None, typer.Option("--format", help="utkface | imdbwiki | table")] = None,
) -> None:
    """Write a deterministic train/val/test split, stratified by age band and gender."""
    _need_extra("data")
    from .datasets.splits import split_command

    split_command(dataset, out, val, test, seed, fmt)


@app.command()
def evaluate(
    dataset: Annotated[Path, typer.Option("--dataset", help="Labelled dataset: UTKFace folder or .tar.gz, "
                                          "IMDB-WIKI .mat, or a .csv/.parquet table.")],
    model: ModelOption = None,
    split: Annotated[str, typer.Option("--split", help="train | val | test")] = "test",
    split_file: Annotated[Path | None, typer.Option(
        "--split-file", help="key,split CSV (default: splits/<format>.csv when present, else all records).")] = None,
    cropped: Annotated[bool, typer.Option("--cropped", help="Each image is one cropped face (UTKFace).")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for predictions.csv, metrics.json, report.html.")] = Path(
        "out/evaluation"),
    compare: Annotated[list[Path] | None, typer.Option(
        "--compare", help="Another bundle to evaluate on the same images (repeat for more).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="A seeded random sample of N images.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="utkface | imdbwiki | table")] = None,
) -> None:
    """Evaluate a model on a labelled split: accuracy, fairness and trust, in a self-contained report."""
    _need_extra("data")
    from .evaluation.evaluate import evaluate_command

    with _user_errors():
        evaluate_command(dataset, model, split, split_file, cropped, out, limit, fmt, compare, console=err)


@app.command("evaluate-detection")
def evaluate_detection(
    dataset: Annotated[Path, typer.Option("--dataset", help="UTKFace folder or archive: the faces to paste.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and report.html.")] = Path(
        "out/detection"),
    scenes: Annotated[int, typer.Option("--scenes", min=1, help="How many scenes to generate.")] = 400,
    seed: Annotated[int, typer.Option("--seed", help="Scene seed: the same seed gives the same scenes.")] = 0,
    pool: Annotated[int, typer.Option("--pool", min=1, help="Development faces to sample from.")] = 300,
    split_file: Annotated[Path | None, typer.Option(
        "--split-file", help="key,split CSV; faces come from its train split (default splits/utkface.csv).")] = None,
    score_threshold: Annotated[float | None, typer.Option(
        "--score-threshold", min=0.0, max=1.0, help="Detector score threshold (default: the detector's).")] = None,
    pixel_budget: Annotated[int | None, typer.Option(
        "--pixel-budget", min=1024, help="Pixels of the main detection pass (more: smaller faces, slower).")] = None,
    single_scale: Annotated[bool, typer.Option(
        "--single-scale", help="The 0.2.0 detector: one pass at 960 px at most, for comparison.")] = False,
) -> None:
    """Measure the face detector on generated scenes: recall by face size, duplicates, false faces, time."""
    _need_extra("data")
    from .detection import DetectorConfig
    from .evaluation.detection_eval import BenchmarkSettings, evaluate_detection_command, summary_line

    with _user_errors():
        overrides: dict[str, Any] = {k: v for k, v in (("score_threshold", score_threshold),
                                                         ("pixel_budget", pixel_budget)) if v is not None}
        config = DetectorConfig.single_scale(**overrides) if single_scale else DetectorConfig(**overrides)
        settings = BenchmarkSettings(scenes=scenes, seed=seed, pool_size=pool)
        m = evaluate_detection_command(dataset, out, settings, config, split_file, console=err)
    typer.echo(f"{summary_line(m)} → {out}")


@app.command()
def robustness(
    model: Annotated[list[Path] | None, typer.Option(
        "--model", "-m", help="Model bundle (repeat to compare; default: the bundled model).")] = None,
    cache: Annotated[Path, typer.Option("--cache", help="Aligned-face cache at the model's input size.")] = Path(
        "cache/utkface-112"),
    split_file: Annotated[Path, typer.Option("--split-file", help="key,split CSV.")] = Path("splits/utkface.csv"),
    split: Annotated[str, typer.Option("--split", help="train | val | test")] = "val",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="A seeded random sample of N faces.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write robustness.json and robustness.png here.")] = None,
) -> None:
    """How far ages and genders move under JPEG, blur, low resolution, sharpening and noise."""
    _need_extra("data")
    from .evaluation.robustness import robustness_command

    with _user_errors():
        robustness_command(model or [None], cache, split_file, split, limit, out, console=err)


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind; other than loopback exposes the server.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes (each loads the model).")] = 1,
    model: ModelOption = None,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body, in MB.")] = 10,
    max_pixels: Annotated[int, typer.Option(min=1, help="Largest image, in pixels.")] = 50_000_000,
    api_key: Annotated[
        str | None, typer.Option(envvar="FD_API_KEY", help="Require this key (X-API-Key or Bearer) on /v1/*.")
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="Allow this browser origin (repeatable); off by default."),
    ] = None,
    request_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds for an upload, and for its analysis.")
    ] = 30.0,
    max_queue: Annotated[int, typer.Option(min=1, help="Images waiting for the model before 503.")] = 64,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch across requests.")] = 16,
    request_memory_mb: Annotated[int | None, typer.Option(
        min=1, help="Memory one request's upload and decoded images may use (default 768).")] = None,
    server_memory_mb: Annotated[int | None, typer.Option(
        min=1, help="Memory all requests' uploads and decoded images may use together (default 1024).")] = None,
    limit_concurrency: Annotated[int | None, typer.Option(
        min=1, help="Connections before uvicorn answers 503 (default 128).")] = None,
) -> None:
    """Serve the web page (/) and the REST API (/v1/analyze, /v1/model, /healthz, /docs)."""
    try:
        from .server import serve_command
    except ImportError as exc:
        err.print(f"The server needs the 'serve' extra: pip install 'facial-demographics[serve]' ({exc})",
                  style="red", markup=False)
        raise typer.Exit(2) from exc
    with _user_errors("Cannot start the server:"):
        serve_command(
            host=host,
            port=port,
            workers=workers,
            model=model,
            max_upload_mb=max_upload_mb,
            max_pixels=max_pixels,
            api_key=api_key,
            cors_origins=cors_origin,
            request_timeout=request_timeout,
            max_queue=max_queue,
            batch_size=batch_size,
            **_given(request_memory_bytes=None if request_memory_mb is None else request_memory_mb * 2**20,
                     server_memory_bytes=None if server_memory_mb is None else server_memory_mb * 2**20,
                     limit_concurrency=limit_concurrency),
        )


def _given(**values: Any) -> dict[str, Any]:
    """Only the options the user gave, so ServerSettings stays the one place for their defaults."""
    return {k: v for k, v in values.items() if v is not None}



_DATA_MODULES = ("pandas", "pyarrow", "scipy", "matplotlib", "skimage")
_EXTRAS = {"data": _DATA_MODULES, "train": ("torch", "kornia", "onnx", *_DATA_MODULES),  # train pulls in data
           "video": ("av", "trackers")}


def _need_extra(extra: str) -> None:
    """Exit with an install line when an extra's packages are missing (checked without importing them)."""
    missing = [m for m in _EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        torch = "torch==2.13.0 " if extra == "train" else ""
        err.print(f"This command needs the '{extra}' extra ({', '.join(missing)} not installed): "
                  f"pip install {torch}'facial-demographics[{extra}]'", style="red", markup=False)
        raise typer.Exit(2)


@app.command()
def video(
    source: Annotated[str, typer.Argument(help="A video file, a camera index (0, 1, ...) or a stream URL.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for annotated.mp4, frames.jsonl, tracks.jsonl.")],
    every: Annotated[int, typer.Option("--every", min=1, help="Analyse every Nth frame; track in between.")] = 1,
    start: Annotated[float, typer.Option("--start", min=0.0, help="Start at this second.")] = 0.0,
    end: Annotated[float | None, typer.Option("--end", min=0.0, help="Stop after this second.")] = None,
    max_fps: Annotated[float | None, typer.Option(
        "--max-fps", min=0.01, help="Analyse at most this many frames per second of video.")] = None,
    no_video: Annotated[bool, typer.Option("--no-video", help="Skip annotated.mp4 (faster).")] = False,
    lost_after: Annotated[float, typer.Option(
        "--lost-after", min=0.01, help="Seconds a face may go unseen and keep its track.")] = 2.0,
    model: ModelOption = None,
) -> None:
    """Track every face through a video and give each person one stable age and gender.

    Writes as it goes, so Ctrl-C or a camera that stops keeps what was done. Exit code 0 when the whole
    input was read, 1 when the source failed part-way, 2 for bad usage or an unreadable input, 130 when
    interrupted.
    """
    _need_extra("video")
    from .pipeline import FaceAnalyzer
    from .video import VideoAnalyzer
    from .video.command import video_command

    with _user_errors("Cannot load the model:"):
        analyzer = FaceAnalyzer(model)
        analyzer.warm_up()
    with _user_errors():
        settings = VideoAnalyzer(analyzer, every=every, max_fps=max_fps, start=start, end=end,
                                 lost_after=lost_after)
        report = video_command(source, out, settings, video=not no_video, console=err)
    if report.interrupted:
        err.print(f"interrupted: {report.summary()}", highlight=False)
        raise typer.Exit(130)
    if report.error:
        err.print(f"[red]{report.error}[/red]; kept what was read: {report.summary()}", highlight=False)
        raise typer.Exit(1)
    err.print(f"analysed {report.summary()}", highlight=False)


@app.command()
def train(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Run config (TOML path, or a packaged name: default, seed, seed_wiki, tiny).")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue from a last.pt checkpoint.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Override the initial learning rate.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Override the number of epochs.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default runs/<config name>).")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Override the aligned-face cache.")] = None,
    split: Annotated[Path | None, typer.Option("--split", help="Override the split CSV.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after N steps.")] = None,
) -> None:
    """Train a model from a TOML config: checkpoints every epoch, metrics CSV/JSON, learning curves."""
    _need_extra("train")
    from .training import train_command

    with _user_errors():
        train_command(config, resume=resume, lr=lr, epochs=epochs, out=out, cache=cache, split=split,
                      max_steps=max_steps)


@app.command()
def export(
    ckpt: Annotated[Path, typer.Argument(help="A training checkpoint (best.pt or last.pt).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write.")],
    cache: Annotated[Path | None, typer.Option(
        "--cache", help="Aligned-face cache: faces for the parity check and interval calibration.")] = None,
    split: Annotated[Path, typer.Option(
        "--split", help="Split CSV whose val part calibrates the age interval.")] = Path("splits/utkface.csv"),
    calibrate: Annotated[bool, typer.Option(
        help="Fit the age-interval temperature on the validation split (needs --cache).")] = True,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset.")] = 17,
) -> None:
    """Export a checkpoint to an ONNX model bundle and check it against torch on real faces."""
    _need_extra("train")
    from .training import export_command

    with _user_errors():
        bundle = export_command(ckpt, out, cache=cache, opset=opset)
        if calibrate and cache is not None:
            from .training.calibrate import calibrate_bundle

            cal = calibrate_bundle(bundle, cache, split)
            typer.echo(f"age interval calibrated on {cal.faces} validation faces: temperature {cal.temperature:g}, "
                       f"coverage {cal.coverage_before:.3f} -> {cal.coverage_after:.3f}")


@app.command("compare-runs")
def compare_runs(
    runs: Annotated[list[Path], typer.Argument(help="Training run directories (each with metrics.json).")],
    out: Annotated[Path | None, typer.Option("--out", help="Write comparison.csv/.md/.png here.")] = None,
) -> None:
    """Compare training runs at their best validation epoch (table, markdown and an overlay plot)."""
    _need_extra("data")
    from .training.compare import compare_command

    with _user_errors():
        compare_command(runs, out)
