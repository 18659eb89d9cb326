"""Deterministic test videos: real development faces moving over a face-free photo, with occlusions.

A video is a pure function of the seed and the face pool (``scenes.load_pool``'s UTKFace train-split
crops, or any ``PoolFace`` list): each person keeps one face for the whole video, moves back and forth
in a lane of its own (so identities never cross), turns its head a little and changes size. Every
second or so a tall bar sweeps across the frame in front of everyone (someone walking past close to
the camera) and hides each face completely for a few frames: the short gaps a tracker must bridge
without starting a new track. Sensor noise changes every frame, so
per-frame answers vary as they do on a real camera. The truth of every frame (each person's box and
how much of it is visible) comes with it, and :func:`score_tracking` measures a run against it:
identity switches, tracks per person, the spread of raw and combined ages, and gender flips.

For counting people (re-identification), ``away`` takes the first person out of view for a while and
brings them back in an extra lane below the others (long after their track has ended, somewhere else),
and ``stand_in`` brings back a different face instead: :func:`lookalikes` picks faces of the same
gender and ethnicity and a close age, the hardest case for telling two people apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.utkface import parse_name
from ..labels import GENDER_LABELS
from .scenes import PoolFace, background, paste

_NOISE = 4.0  # sensor noise (grey levels, standard deviation) added to every frame


@dataclass(frozen=True)
class Person:
    """One face and its motion: x(t) = centre + amplitude · sin(2π t / period + phase), in its lane."""

    face: PoolFace
    age: float | None
    gender: str | None
    lane_y: float
    centre_x: float
    amplitude: float
    period: float
    phase: float
    size: float
    #: In view only during these [start, end) spans (seconds); empty: the whole video.
    windows: tuple[tuple[float, float], ...] = ()
    #: From the second window on, the lane is this one instead (the person came back elsewhere).
    later_lane_y: float | None = None

    def in_view(self, t: float) -> bool:
        return not self.windows or any(a <= t < b for a, b in self.windows)

    def state(self, t: float) -> tuple[float, float, float, float]:
        """Centre x, centre y, face size and head tilt (degrees) at time ``t``."""
        lane = self.lane_y
        if self.later_lane_y is not None and len(self.windows) > 1 and t >= self.windows[1][0]:
            lane = self.later_lane_y
        x = self.centre_x + self.amplitude * math.sin(2 * math.pi * t / self.period + self.phase)
        y = lane + 0.04 * self.size * math.sin(2 * math.pi * t / 1.7 + self.phase)
        size = self.size * (1.0 + 0.08 * math.sin(2 * math.pi * t / 2.3 + self.phase))
        tilt = 8.0 * math.sin(2 * math.pi * t / 2.9 + self.phase)
        return x, y, size, tilt


@dataclass(frozen=True)
class Passer:
    """A full-height bar crossing the frame in front of the faces, from ``start`` seconds on."""

    start: float
    speed: float  # pixels per second; negative: right to left
    width: float

    def span(self, t: float, frame_width: int) -> tuple[float, float] | None:
        """The bar's (x1, x2) at time ``t``, or None when it is not in the frame."""
        if t < self.start:
            return None
        travelled = abs(self.speed) * (t - self.start)
        x1 = -self.width + travelled if self.speed > 0 else frame_width - travelled
        if x1 >= frame_width or x1 + self.width <= 0:
            return None
        return x1, x1 + self.width


@dataclass(frozen=True)
class Truth:
    """Where person ``person`` is in one frame; ``visible`` is the share of its box not behind a post."""

    person: int
    key: str
    box: tuple[float, float, float, float]
    visible: float


@dataclass(frozen=True)
class VideoScene:
    """A generated video: size, rate, length, people and passers-by; :meth:`render` draws frame ``i``."""

    seed: int
    width: int
    height: int
    fps: float
    frames: int
    people: tuple[Person, ...]
    passers: tuple[Passer, ...]
    backdrop: np.ndarray

    def times(self, variable: bool = False) -> list[float]:
        """Frame times in seconds: regular, or (``variable``) alternating short and long gaps, as phones
        record when the light changes; the average rate stays ``fps``."""
        if not variable:
            return [i / self.fps for i in range(self.frames)]
        steps = [(0.5 if i % 3 else 2.0) / self.fps for i in range(self.frames)]
        return [float(v) for v in np.concatenate([[0.0], np.cumsum(steps[:-1])])]

    def render(self, i: int, t: float | None = None) -> tuple[np.ndarray, list[Truth]]:
        """Frame ``i`` (shown at ``t``, default ``i / fps``) as RGB pixels, and the truth for it."""
        t = i / self.fps if t is None else t
        canvas = self.backdrop.copy()
        truth = []
        for k, person in enumerate(self.people):
            if not person.in_view(t):
                continue
            x, y, size, tilt = person.state(t)
            pasted = paste(canvas, person.face, size, tilt, (x, y))
            truth.append(Truth(k, person.face.key, pasted.box, 1.0))
        bars = [span for p in self.passers if (span := p.span(t, self.width)) is not None]
        for x1, x2 in bars:
            a, b = max(0, int(round(x1))), min(self.width, int(round(x2)))
            if b > a:
                canvas[:, a:b] = _post(self.height, int(round(x2 - x1)))[:, a - int(round(x1)):][:, : b - a]
        truth = [Truth(p.person, p.key, p.box, _visible(p.box, bars)) for p in truth]
        rng = np.random.default_rng([self.seed, i, 7])
        noisy = canvas.astype(np.float32) + rng.normal(0.0, _NOISE, canvas.shape).astype(np.float32)
        return np.clip(noisy + 0.5, 0, 255).astype(np.uint8), truth


def _post(height: int, width: int) -> np.ndarray:
    """A grey bar, lit from the left (a flat colour would look like nothing real)."""
    shade = np.linspace(150, 70, width, dtype=np.float32)[None, :, None]
    return np.broadcast_to(shade * np.array([1.0, 0.95, 0.9], np.float32), (height, width, 3)).astype(np.uint8)


def _visible(box: tuple[float, float, float, float], posts: Sequence[tuple[float, float]]) -> float:
    width = max(box[2] - box[0], 1e-6)
    hidden = sum(max(0.0, min(box[2], x2) - max(box[0], x1)) for x1, x2 in posts)
    return max(0.0, 1.0 - hidden / width)


def _labels(key: str) -> tuple[float | None, str | None]:
    """Age and gender from a UTKFace name (``age_gender_race_date.jpg.chip.jpg``); None when not one."""
    age, gender, _ = utk_labels(key)
    return age, gender


def utk_labels(key: str) -> tuple[float | None, str | None, str | None]:
    """Age, gender and ethnicity code from a UTKFace name (``age_gender_race_date.jpg.chip.jpg``, read by
    :func:`..datasets.utkface.parse_name`); None for what the name does not say."""
    parsed = parse_name(Path(key).name)
    return (None if parsed.age is None else float(parsed.age),
            None if parsed.gender is None else GENDER_LABELS[parsed.gender],
            None if parsed.race is None else str(parsed.race))


def faces_with_genders(pool: Sequence[PoolFace], genders: Sequence[str], seed: int) -> list[PoolFace]:
    """A seeded choice of distinct faces with these labelled genders, in this order.

    Raises:
        ValueError: the pool has too few faces of a gender.
    """
    rng = np.random.default_rng([seed, 4321])
    order = [pool[int(i)] for i in rng.permutation(len(pool))]
    out: list[PoolFace] = []
    for gender in genders:
        face = next((f for f in order if f not in out and _labels(f.key)[1] == gender), None)
        if face is None:
            raise ValueError(f"the pool has too few {gender} faces for {list(genders)}")
        out.append(face)
    return out


def lookalikes(pool: Sequence[PoolFace], face: PoolFace, max_age_gap: float = 5.0) -> list[PoolFace]:
    """Other faces of ``pool`` with the same labelled gender and ethnicity and an age within ``max_age_gap``
    years, closest age first (different people who look alike to a demographics model)."""
    age, gender, race = utk_labels(face.key)
    if age is None or gender is None or race is None:
        return []
    same = []
    for other in pool:
        a, g, r = utk_labels(other.key)
        if other.key != face.key and a is not None and g == gender and r == race and abs(a - age) <= max_age_gap:
            same.append((abs(a - age), other.key, other))
    return [other for _, _, other in sorted(same, key=lambda x: (x[0], x[1]))]


def make_video_scene(pool: Sequence[PoolFace], seed: int, *, width: int = 640, height: int = 480,
                     fps: float = 15.0, seconds: float = 4.0, people: int = 2, face_size: float = 100.0,
                     occlusions: bool = True, faces: Sequence[PoolFace] | None = None,
                     away: tuple[float, float] | None = None, stand_in: PoolFace | None = None) -> VideoScene:
    """Video ``seed``: ``people`` distinct faces from ``pool``, one per horizontal lane.

    Args:
        pool: development faces (each used at most once per video).
        seed: the same seed (and pool) gives the same video.
        width, height: frame size in pixels.
        fps: frames per second.
        seconds: length.
        people: how many faces (lanes); at most the pool size.
        face_size: face box side in pixels (varies ±8 % over time).
        occlusions: send a bar across the frame every 1–2 s; at 640×480 it hides each face completely for
            0.13 s (median, up to 0.33 s) and at least partly for 0.4 s (up to 0.87 s).
        faces: exactly these faces, top lane first (``people`` is then their number) instead of a seeded
            choice from ``pool``.
        away: ``(leave, back)`` seconds: the first person is out of view in between and comes back in an
            extra lane below the others (so ``people + 1`` lanes must fit).
        stand_in: with ``away``, this different face comes back instead (a person of its own).

    Returns:
        The scene; render its frames with :meth:`VideoScene.render` or write it with :func:`write_video`.

    Raises:
        ValueError: the pool has fewer faces than ``people``, or the lanes do not fit the frame.
    """
    people = len(faces) if faces is not None else people
    if len(pool) < people or people < 1:
        raise ValueError(f"need {people} distinct faces, the pool has {len(pool)}")
    if away is not None and not 0 < away[0] < away[1]:
        raise ValueError(f"away must be (leave, back) with 0 < leave < back, got {away}")
    lanes = people + (away is not None)
    lane = height / lanes
    if lane < 1.3 * face_size:
        raise ValueError(f"{lanes} lanes of {face_size:.0f} px faces do not fit {height} px")
    rng = np.random.default_rng([seed, 1234])
    chosen = [pool[int(i)] for i in rng.choice(len(pool), size=people, replace=False)] if faces is None else faces
    crowd = []
    for k, face in enumerate(chosen):
        age, gender = _labels(face.key)
        amplitude = rng.uniform(0.2, 0.3) * width
        crowd.append(Person(face, age, gender, lane_y=lane * (k + 0.5), centre_x=width * rng.uniform(0.45, 0.55),
                            amplitude=amplitude, period=rng.uniform(4.0, 6.0), phase=rng.uniform(0, 2 * math.pi),
                            size=face_size * rng.uniform(0.9, 1.1)))
    if away is not None:
        crowd = _send_away(crowd, away, lane * (people + 0.5), stand_in)
    passers = []
    t = rng.uniform(0.3, 0.8)
    while occlusions and t < seconds:
        bar = 1.8 * face_size
        # Hidden completely while the bar covers the whole face, (bar - face width) / relative speed.
        speed = float(rng.uniform(5.0, 8.0) * face_size) * (1 if rng.random() < 0.5 else -1)
        passers.append(Passer(float(t), speed, bar))
        t += (width + bar) / abs(speed) + rng.uniform(0.6, 1.2)
    return VideoScene(seed, width, height, fps, int(round(seconds * fps)), tuple(crowd), tuple(passers),
                      background(rng, width, height))


def _send_away(crowd: list[Person], away: tuple[float, float], later_lane_y: float,
               stand_in: PoolFace | None) -> list[Person]:
    """The first person leaves at ``away[0]`` and comes back at ``away[1]`` in the lane ``later_lane_y``, or
    (``stand_in``) a different face with the same motion appears there instead."""
    first, forever = crowd[0], (away[1], math.inf)
    if stand_in is None:
        back = replace(first, windows=((0.0, away[0]), forever), later_lane_y=later_lane_y)
        return [back, *crowd[1:]]
    age, gender = _labels(stand_in.key)
    other = replace(first, face=stand_in, age=age, gender=gender, lane_y=later_lane_y, windows=(forever,))
    return [replace(first, windows=((0.0, away[0]),)), *crowd[1:], other]


def frames_of(scene: VideoScene, variable: bool = False) -> Iterator[tuple[float, np.ndarray, list[Truth]]]:
    """Every frame of the scene as ``(time, pixels, truth)``."""
    for i, t in enumerate(scene.times(variable)):
        image, truth = scene.render(i, t)
        yield t, image, truth


def write_video(scene: VideoScene, path: Path, *, variable: bool = False, rotation: int = 0,
                crf: int = 20) -> list[list[Truth]]:
    """Encode the scene as H.264 MP4 and return the truth of every frame.

    Args:
        scene: the video to write.
        path: the .mp4 file.
        variable: variable frame rate (see :meth:`VideoScene.times`).
        rotation: store the pixels turned by this many degrees clockwise and say in the display matrix
            that players must turn them back (as phones record portrait videos).
        crf: x264 quality (lower is better).
    """
    import av

    upright_k = (rotation // 90) % 4
    stored = (scene.height, scene.width) if upright_k % 2 else (scene.width, scene.height)
    time_base = Fraction(1, 90_000)
    truths = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(scene.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = stored[0], stored[1], "yuv420p"
        stream.codec_context.time_base = time_base
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        if upright_k:
            stream.set_display_rotation(rotation)  # counter-clockwise, undoing the clockwise storage
        for t, image, truth in frames_of(scene, variable):
            pixels = np.ascontiguousarray(np.rot90(image, -upright_k)) if upright_k else image
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = int(round(t / time_base)), time_base
            for packet in stream.encode(frame):
                out.mux(packet)
            truths.append(truth)
        for packet in stream.encode():
            out.mux(packet)
    return truths


def write_y4m(scene: VideoScene, path: Path) -> None:
    """The scene as an uncompressed YUV4MPEG2 file, the format Chromium's fake camera plays in a loop."""
    import av

    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=Fraction(scene.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        for i in range(scene.frames):
            frame = av.VideoFrame.from_ndarray(scene.render(i)[0], format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_frame(truth: Sequence[Truth], faces: Sequence[dict[str, Any]], min_iou: float = 0.3) -> dict[int, int]:
    """Person index (``Truth.person``) → index of the face (``frames.jsonl`` face dicts) that is that person,
    by best IoU; people out of view have no truth in the frame."""
    pairs = sorted(((_iou(t.box, f["box"]), t.person, j) for t in truth for j, f in enumerate(faces)),
                   reverse=True)
    out: dict[int, int] = {}
    used: set[int] = set()
    for iou, p, j in pairs:
        if iou >= min_iou and p not in out and j not in used:
            out[p] = j
            used.add(j)
    return out


def _flips(genders: Sequence[str | None]) -> int:
    """Changes from one decided gender to the other (an undecided None in between is no answer)."""
    decided = [g for g in genders if g is not None]
    return sum(a != b for a, b in zip(decided, decided[1:], strict=False))


def score_tracking(truths: Sequence[Sequence[Truth]], records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Measure a run's ``frames.jsonl`` records against the truth of the same video.

    For each person: the track ids its face got (``tracks``), identity switches (a change from one id to
    another between the frames where it had one), the spread (standard deviation) of its raw per-frame
    ages and of its track's combined age over the same frames, and gender flips of the combined answer
    (from one decided gender to the other).

    Returns:
        ``{"people": [...per person...], "identity_switches", "max_spread_ratio", "gender_flips"}``.
    """
    people: dict[int, dict[str, list[Any]]] = {}
    for record in records:
        truth = truths[record["frame"]]
        answers = {t["track_id"]: t for t in record["tracks"]}
        for person, j in match_frame(truth, record["faces"]).items():
            face = record["faces"][j]
            row = people.setdefault(person, {"ids": [], "raw": [], "combined": [], "genders": []})
            row["raw"].append(face["age"])
            if face["track_id"] is not None:
                row["ids"].append(face["track_id"])
                answer = answers[face["track_id"]]
                row["combined"].append(answer["age"])
                row["genders"].append(answer["gender"])
    out = []
    for person in sorted(people):
        row = people[person]
        ids = row["ids"]
        raw = float(np.std(row["raw"])) if len(row["raw"]) > 1 else 0.0
        combined = float(np.std(row["combined"])) if len(row["combined"]) > 1 else 0.0
        out.append({
            "person": person, "frames": len(row["raw"]), "tracked_frames": len(ids),
            "tracks": sorted(set(ids)), "identity_switches": sum(a != b for a, b in zip(ids, ids[1:], strict=False)),
            "raw_age_spread": raw, "combined_age_spread": combined,
            "spread_ratio": combined / raw if raw > 0 else 0.0,
            "gender_flips": _flips(row["genders"]),
        })
    return {
        "people": out,
        "identity_switches": sum(p["identity_switches"] for p in out),
        "max_spread_ratio": max((p["spread_ratio"] for p in out), default=0.0),
        "gender_flips": sum(p["gender_flips"] for p in out),
    }
