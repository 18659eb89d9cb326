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

from rich.console import Console

from .analyzer import VideoAnalyzer, VideoRun
from .output import ANNOTATED, FRAMES, TRACKS, VideoOutputs, prepare_out_dir
from .source import SourceLostError, VideoInfo

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

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line, e.g. ``90 frames (30 analysed), 2 tracks, 61 faces, 9.1 s, 9.9 fps → out/ (...)``."""
        text = (f"{self.frames} frames ({self.analysed} analysed), {self.tracks} track{'s' * (self.tracks != 1)}, "
                f"{self.faces} face{'s' * (self.faces != 1)}, {self.seconds:.1f} s, {self.fps:.1f} fps "
                f"→ {self.out}/ ({', '.join(self.files)})")
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
                  console: Console | None = None) -> VideoReport:
    """Analyse ``source`` into ``out``: ``annotated.mp4`` (unless ``video`` is False), ``frames.jsonl``,
    ``tracks.jsonl``, all streamed.

    Ctrl-C and a source that fails part-way both end the run with everything so far on disk; the report
    says which happened.

    Args:
        source: a video file, a camera index or a stream URL.
        out: the output folder (created when missing).
        settings: the analysis settings (model, every, max_fps, start, end).
        video: write the annotated video.
        console: where progress goes (default stderr).

    Returns:
        The report of the run.

    Raises:
        VideoError: ``out`` cannot be used, or the source cannot be opened or decoded at all.
    """
    console = console or Console(stderr=True)
    prepare_out_dir(out)  # before opening a camera or downloading a stream
    run = settings.run(source)
    outputs: VideoOutputs | None = None
    started = time.perf_counter()
    interrupted, error, faces = False, None, 0
    try:
        outputs = VideoOutputs(out, run.info, video=video)
        faces = _analyse(run, outputs, _expected_frames(run.info, settings.start, settings.end), console)
    except KeyboardInterrupt:
        interrupted = True
    except SourceLostError as exc:
        error = str(exc)
    finally:
        run.close()
        if outputs is not None:
            outputs.close(run.remaining)
    files = ((ANNOTATED,) if video else ()) + (FRAMES, TRACKS)
    return VideoReport(run.info, out, run.frames_seen, run.frames_analysed, faces, len(run.tracks),
                       time.perf_counter() - started, run.damaged, files, interrupted, error)


def _analyse(run: VideoRun, outputs: VideoOutputs, total: int | None, console: Console) -> int:
    faces = 0
    with _progress(total, console) as update:
        for result in run:
            outputs.write(result)
            faces += len(result.faces)
            update(run.frames_seen)
    return faces
