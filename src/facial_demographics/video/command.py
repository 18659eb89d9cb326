"""``facial-demographics video``: analyse a video file, camera or stream into a folder.

The command body lives here; ``cli.py`` only parses options and turns the returned
:class:`VideoReport` into a summary line and an exit code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from .analyzer import VideoAnalyzer, VideoRun
from .output import ANNOTATED, FRAMES, TRACKS, VideoOutputs, prepare_out_dir, write_people
from .people import PersonSummary, describe_people
from .source import SourceLostError, VideoInfo

if TYPE_CHECKING:
    from ..population import AgeBands

#: Seconds between progress lines when stderr is not a terminal (a log file or CI).
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class VideoReport:
    """How a run went: counts, speed, where the output is, and why it stopped early (if it did)."""

    info: VideoInfo
    out: Path
    frames: int  # decoded frames in the chosen range
    analysed: int
    faces: int  # faces reported in analysed frames
    tracks: int
    seconds: float
    damaged: int  # packets skipped because they could not be decoded
    files: tuple[str, ...]
    interrupted: bool = False
    error: str | None = None  # the source failed part-way (camera unplugged, stream cut)
    people: tuple[PersonSummary, ...] = ()
    reid_seconds: float = 0.0  # spent on re-identification (frame crops, dlib descriptors)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line, e.g. ``90 frames (30 analysed), 3 people: 2 male, 1 female (4 tracks, 161 face
        detections), 9.1 s, 9.9 fps → out/ (...)``; people are counted by each one's majority gender."""
        detections = f"{self.faces} face detection{'s' * (self.faces != 1)}"
        frames = f"{self.frames} frame{'s' * (self.frames != 1)}"
        text = (f"{frames} ({self.analysed} analysed), {describe_people(self.people)} "
                f"({self.tracks} track{'s' * (self.tracks != 1)}, {detections}), {self.seconds:.1f} s, "
                f"{self.fps:.1f} fps → {self.out}/ ({', '.join(self.files)})")
        if self.damaged:
            text += f"; {self.damaged} damaged packet{'s' * (self.damaged != 1)} skipped"
        return text


def _expected_frames(info: VideoInfo, start: float, end: float | None) -> int | None:
    """Frames the chosen range should hold, for the progress bar; None when unknown (cameras, streams)."""
    if info.live:
        return None
    if start == 0 and end is None:
        return info.frames
    if info.fps is None or info.duration is None:
        return None
    return max(0, round((min(end if end is not None else info.duration, info.duration) - start) * info.fps))


@contextmanager
def _progress(total: int | None, console: Console) -> Iterator[Callable[[int], None]]:
    """Yield ``update(frames_done)``: a bar with frames and fps on a terminal, else a line every few s."""
    started = time.perf_counter()

    def rate(done: int) -> float:
        elapsed = time.perf_counter() - started
        return done / elapsed if elapsed > 0 else 0.0

    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TextColumn("frames, {task.fields[fps]:.1f} fps"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("Analysing video", total=total, fps=0.0)
            yield lambda done: bar.update(task, completed=done, fps=rate(done))
        return
    last = time.monotonic()

    def update(done: int) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            of = f"/{total}" if total else ""
            console.print(f"analysed {done}{of} frames, {rate(done):.1f} fps", highlight=False)

    yield update


def video_command(source: str, out: Path, settings: VideoAnalyzer, *, video: bool = True,
                  console: Console | None = None, bands: AgeBands | str | None = None,
                  interval: float | None = None) -> VideoReport:
    """Analyse ``source`` into ``out``: ``annotated.mp4`` (unless ``video`` is False), ``frames.jsonl``,
    ``tracks.jsonl``, all streamed, and at the end the people: ``summary.json``, ``summary.csv``,
    ``pyramid.png``, ``report.html``, ``people_over_time.csv`` and ``people_over_time.png``.

    Ctrl-C and a source that fails part-way both end the run with everything so far on disk, the summary
    of the people seen included; the report says which happened.

    Args:
        source: a video file, a camera index or a stream URL.
        out: the output folder (created when missing).
        settings: the analysis settings (model, every, max_fps, start, end, re-identification).
        video: write the annotated video.
        console: where progress and notes go (default stderr).
        bands: the summary's age bands, or their ``--bands`` text (default: the audience brackets).
        interval: central probability of the summary's intervals (default 0.9).

    Returns:
        The report of the run.

    Raises:
        VideoError: ``out`` cannot be used, or the source cannot be opened or decoded at all.
        InvalidValueError: bad ``bands`` or ``interval`` (checked before the source is opened).
    """
    from ..errors import InvalidValueError
    from ..population import DEFAULT_INTERVAL, AgeBands

    console = console or Console(stderr=True)
    bands = bands if isinstance(bands, AgeBands) else AgeBands.parse(bands)
    if interval is not None and not 0 < interval < 1:
        raise InvalidValueError(f"interval must be in (0, 1), got {interval}")
    prepare_out_dir(out)  # before opening a camera or downloading a stream
    run = settings.run(source)
    for note in run.notes:
        console.print(note, style="yellow", markup=False)
    outputs: VideoOutputs | None = None
    started = time.perf_counter()
    interrupted, error = False, None
    try:
        outputs = VideoOutputs(out, run.info, video=video)
        _analyse(run, outputs, _expected_frames(run.info, settings.start, settings.end), console)
    except KeyboardInterrupt:
        interrupted = True
    except SourceLostError as exc:
        error = str(exc)
    finally:
        run.close()
        if outputs is not None:
            outputs.close(run.remaining)
    files: tuple[str, ...] = ((ANNOTATED,) if video else ()) + (FRAMES, TRACKS)
    if outputs is not None:  # what was seen is summarised on Ctrl-C and a lost source too
        written = write_people(out, run, bands, DEFAULT_INTERVAL if interval is None else interval)
        files += tuple(p.name for p in written)
    return VideoReport(run.info, out, run.frames_seen, run.frames_analysed, run.faces_found, len(run.tracks),
                       time.perf_counter() - started, run.damaged, files, interrupted, error, tuple(run.people),
                       run.reid.seconds if run.reid is not None else 0.0)


def _analyse(run: VideoRun, outputs: VideoOutputs, total: int | None, console: Console) -> None:
    with _progress(total, console) as update:
        for result in run:
            outputs.write(result)
            update(run.frames_seen)
