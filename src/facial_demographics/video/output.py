"""What ``facial-demographics video`` writes: ``annotated.mp4``, ``frames.jsonl``, ``tracks.jsonl`` as it
goes, and the people at the end.

Everything is streamed: each analysed frame's line is flushed when it is written, each track's line when
the track ends, and the video is fragmented MP4 (H.264), which stays playable up to its last fragment
even when the run is killed. ``close`` finishes all three on success, Ctrl-C and errors alike. Then
:func:`write_people` writes the population summary over people (``summary.json``, ``summary.csv``,
``pyramid.png``, ``report.html`` with dwell times and people over time) and ``people_over_time.csv``/``.png``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import cv2
import numpy as np

from .people import PeopleOverTime, PersonSummary
from .results import FrameResult, TrackSummary
from .source import VideoError, VideoInfo
from .tracking import draw_faces

if TYPE_CHECKING:
    from ..population import AgeBands
    from .analyzer import VideoRun

ANNOTATED, FRAMES, TRACKS = "annotated.mp4", "frames.jsonl", "tracks.jsonl"
PEOPLE_CSV, PEOPLE_PNG = "people_over_time.csv", "people_over_time.png"
#: What write_people adds (population.report writes the first four).
PEOPLE_FILES = ("summary.json", "summary.csv", "pyramid.png", "report.html", PEOPLE_CSV, PEOPLE_PNG)
#: Output timestamps in 1/90,000 s (MPEG's clock): fine enough to keep a variable frame rate exactly.
_TIME_BASE = Fraction(1, 90_000)


class AnnotatedVideoWriter:
    """H.264 in fragmented MP4, one output frame per input frame at the input's times.

    Raises:
        VideoError: the file cannot be created.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float | None) -> None:
        import av

        # yuv420p needs even sides: an odd last row or column is dropped.
        self.width, self.height = max(2, width - width % 2), max(2, height - height % 2)
        rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(30)
        try:
            # Fragments at every keyframe (2 s apart): a killed run leaves a playable file.
            self.container = av.open(str(path), "w", format="mp4",
                                     options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(f"{path}: cannot write the annotated video ({exc})") from None
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.codec_context.time_base = _TIME_BASE
        self.stream.options = {"preset": "veryfast", "crf": "23", "g": str(max(1, round(2 * float(rate))))}
        # No B-frames: they make the muxer shift every timestamp (fragmented MP4 has no edit list to undo
        # it), and each frame must show at its input time.
        self.stream.codec_context.max_b_frames = 0
        self.frames = 0
        self._last_pts = -1
        self._closed = False

    def write(self, image: np.ndarray, time: float) -> None:
        """Encode one RGB frame shown at ``time`` seconds."""
        import av

        if image.shape[0] < self.height or image.shape[1] < self.width:  # a source that changed size
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: self.height, : self.width]), format="rgb24")
        pts = max(int(round(time / _TIME_BASE)), self._last_pts + 1)  # strictly increasing for the muxer
        frame.pts, frame.time_base = pts, _TIME_BASE
        self._last_pts = pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()


class JsonLines:
    """A JSON Lines file written and flushed one record at a time."""

    def __init__(self, path: Path) -> None:
        try:
            self.stream: IO[str] = open(path, "w", encoding="utf-8")
        except OSError as exc:
            raise VideoError(f"{path}: cannot write here ({exc.strerror or exc})") from None
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()
        self.count += 1

    def close(self) -> None:
        self.stream.close()


def prepare_out_dir(out: Path) -> None:
    """Create ``out`` (and its parents) before any work.

    Raises:
        VideoError: ``out`` is a file or cannot be created.
    """
    from ..output import make_folder

    make_folder(out, "--out", VideoError)


class VideoOutputs:
    """The three outputs of one run in folder ``out``; :meth:`close` always leaves them complete.

    Args:
        out: the output folder (created when missing).
        info: the source, for the video's size and rate.
        video: write ``annotated.mp4`` (``--no-video`` turns it off).
    """

    def __init__(self, out: Path, info: VideoInfo, video: bool = True) -> None:
        prepare_out_dir(out)
        self.out = out
        self.frames = JsonLines(out / FRAMES)
        self.tracks = JsonLines(out / TRACKS)
        self.video: AnnotatedVideoWriter | None = None
        if video:
            self.video = AnnotatedVideoWriter(out / ANNOTATED, info.width, info.height, info.fps)
        self._closed = False

    def write(self, result: FrameResult) -> None:
        """Write one frame: its line when analysed, its annotated copy, and the tracks that ended at it."""
        if result.analysed:
            self.frames.write(result.to_dict())
        for track in result.ended:
            self.tracks.write(track.to_dict())
        if self.video is not None and result.image is not None:
            from ..annotate import draw

            faces, tags = draw_faces(result.faces, result.tracks)
            self.video.write(draw(result.image, faces, tags=tags) if faces else result.image, result.time)

    def close(self, remaining: list[TrackSummary]) -> None:
        """Write the tracks still open at the end and close every file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for track in remaining:
                self.tracks.write(track.to_dict())
        finally:
            self.frames.close()
            self.tracks.close()
            if self.video is not None:
                self.video.close()


def _clock(seconds: float) -> str:
    """``0:07.5``, ``12:03.0``: minutes and seconds of video."""
    minutes, rest = divmod(max(seconds, 0.0), 60.0)
    return f"{int(minutes)}:{rest:04.1f}"


def dwell_table(people: Sequence[PersonSummary]) -> str:
    """An HTML table: per person, when first and last seen, seconds in view, tracks and the answer."""
    head = ("<tr><th>person</th><th>first seen</th><th>last seen</th><th>seconds in view</th><th>tracks</th>"
            "<th>frames</th><th>age</th><th>gender</th></tr>")
    rows = []
    for p in people:
        low, high = p.age_interval
        gender = "–" if p.gender is None else f"{p.gender} {100 * (p.gender_probability or 0):.0f} %"
        rows.append(f"<tr><td>#{p.person_id}</td><td>{_clock(p.first_time)}</td><td>{_clock(p.last_time)}</td>"
                    f"<td>{p.seconds:.1f}</td><td>{html.escape(', '.join(f'#{t}' for t in p.tracks))}</td>"
                    f"<td>{p.frames}</td><td>{p.age:.0f} ({low:.0f}–{high:.0f})</td>"
                    f"<td>{html.escape(gender)}</td></tr>")
    note = ("<p class=\"meta\">Seconds in view: from the first to the last sighting of each track, summed over "
            "the person's tracks (gaps shorter than --lost-after inside a track count as in view). A person "
            "has several tracks when they left and came back; the tracks are joined by face descriptor.</p>")
    return f"<table>{head}{''.join(rows)}</table>{note}"


def over_time_png(series: PeopleOverTime, title: str = "") -> bytes:
    """People in view and people seen so far against time (matplotlib's Agg canvas, no display needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.2))
    fig.set_layout_engine("tight")
    ax = fig.add_subplot()
    ax.step(series.times, series.visible, where="post", label="in view", color="#4c78a8")
    ax.step(series.times, series.cumulative, where="post", label="seen so far", color="#e45756", linestyle="--")
    ax.set_xlabel("time in the video (s)")
    ax.set_ylabel("people")
    top = int(max(series.cumulative.max(initial=0), series.visible.max(initial=0)))
    ax.set_yticks(range(0, top + 2, max(1, (top + 1) // 8)))
    ax.set_ylim(0, top + 1)
    ax.legend(loc="upper left", frameon=False)
    if title:
        ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_people(out: Path, run: VideoRun, bands: AgeBands | str | None = None,
                 interval: float | None = None) -> list[Path]:
    """The population summary over the run's people and the people-over-time series, into ``out``.

    Args:
        out: the output folder.
        run: a finished (or interrupted and closed) run.
        bands: age bands or their ``--bands`` text (default: the audience brackets).
        interval: central probability of the summary's intervals (default 0.9).

    Returns:
        The paths written: ``summary.json``, ``summary.csv``, ``pyramid.png``, ``report.html``,
        ``people_over_time.csv``, ``people_over_time.png``.
    """
    from ..population.report import write_atomic, write_summary

    summary = run.summary(bands, interval=interval)
    series = run.over_time()
    png = over_time_png(series)
    write_atomic(out / PEOPLE_CSV, series.csv())
    write_atomic(out / PEOPLE_PNG, png)
    picture = (f'<img alt="people over time" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
               f'<p class="meta">Also in {PEOPLE_CSV} (one row per analysed frame) and {PEOPLE_PNG}.</p>')
    sections = [("Time in view per person", dwell_table(run.people)), ("People over time", picture)]
    if run.notes:
        sections.append(("Notes", "".join(f"<p>{html.escape(n)}</p>" for n in run.notes)))
    written = write_summary(summary, out, f"People in {run.info.name}", sections)
    return [*written, out / PEOPLE_CSV, out / PEOPLE_PNG]
