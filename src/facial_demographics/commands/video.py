"""``video``: tracked faces through a video file, a camera or a stream (body in ``video/command.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    EXIT_FAILED_ITEMS,
    EXIT_INTERRUPTED,
    BandsOption,
    IntervalOption,
    ModelOption,
    err,
    need_extra,
    user_errors,
)


def video(
    source: Annotated[str, typer.Argument(help="A video file, a camera index (0, 1, ...) or a stream URL.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Folder for annotated.mp4, frames.jsonl, tracks.jsonl and the people's summary.")],
    every: Annotated[int, typer.Option("--every", min=1, help="Analyse every Nth frame; track in between.")] = 1,
    start: Annotated[float, typer.Option("--start", min=0.0, help="Start at this second.")] = 0.0,
    end: Annotated[float | None, typer.Option("--end", min=0.0, help="Stop after this second.")] = None,
    max_fps: Annotated[float | None, typer.Option(
        "--max-fps", min=0.01, help="Analyse at most this many frames per second of video.")] = None,
    no_video: Annotated[bool, typer.Option("--no-video", help="Skip annotated.mp4 (faster).")] = False,
    lost_after: Annotated[float, typer.Option(
        "--lost-after", min=0.01, help="Seconds a face may go unseen and keep its track.")] = 2.0,
    bands: BandsOption = None,
    interval: IntervalOption = 0.9,
    no_reid: Annotated[bool, typer.Option(
        "--no-reid", help="Count every track as a person (no face descriptors; a person who leaves for "
                          "longer than --lost-after and comes back counts twice).")] = False,
    model: ModelOption = None,
) -> None:
    """Track every face through a video, give each person one stable age and gender, and summarise the
    people seen (a person who leaves and comes back is recognised by face and counted once).

    Writes as it goes, so Ctrl-C or a camera that stops keeps what was done, the summary of the people
    seen so far included. Exit code 0 when the whole input was read, 1 when the source failed part-way,
    2 for bad usage or an unreadable input, 130 when interrupted.
    """
    need_extra("video")
    from ..pipeline import FaceAnalyzer
    from ..population import AgeBands
    from ..video import VideoAnalyzer
    from ..video.command import video_command

    with user_errors():
        age_bands = AgeBands.parse(bands)  # a typo fails before the model loads
    with user_errors("Cannot load the model:"):
        analyzer = FaceAnalyzer(model)
        analyzer.warm_up()
    with user_errors():
        settings = VideoAnalyzer(analyzer, every=every, max_fps=max_fps, start=start, end=end,
                                 lost_after=lost_after, reid=not no_reid)
        report = video_command(source, out, settings, video=not no_video, console=err, bands=age_bands,
                               interval=interval)
    if report.interrupted:
        err.print(f"interrupted: {report.summary()}", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.error:
        err.print(f"[red]{report.error}[/red]; kept what was read: {report.summary()}", highlight=False)
        raise typer.Exit(EXIT_FAILED_ITEMS)
    err.print(f"analysed {report.summary()}", highlight=False)
