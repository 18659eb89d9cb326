"""Faces tracked from frame to frame with OC-SORT, each track with its combined answer.

OC-SORT (``trackers``, Roboflow's maintained tracking library, Apache-2.0; the same package has
ByteTrack) predicts every track's box with a Kalman filter (centre, scale, aspect ratio) and matches
detections to predictions by the Hungarian algorithm. When a track that lost its face finds it again,
it also tries the track's *last observed* box, not only the prediction, and then re-fits the motion
along a virtual path across the gap: a face hidden for a moment usually reappears away from where a
constant-velocity prediction put it. A track with no detection is kept for ``lost_after`` seconds, so
a short occlusion or a missed detection does not start a new one. Times come from the video, so
variable frame rates and analysing every Nth frame need nothing special.

Boxes are compared by DIoU (IoU minus the squared centre distance over the squared diagonal of the box
enclosing both) with a threshold of -0.3 instead of IoU ≥ 0.3: plain IoU is 0 for every pair that does
not overlap, while DIoU still prefers the nearest. -0.3 accepts a face that reappears up to about 1.5
face widths from where its track expected it and refuses a face two widths away (another person).
Measured on 12 generated videos (two faces, a bar sweeping in front of both every 1–2 s, 72
occlusions; ``benchmarks/video.py``), analysing every frame: ByteTrack with its defaults started a new
track after 48 of them, OC-SORT with its defaults after 15, OC-SORT with DIoU after none.

A face gets a track id from the second analysed frame it is seen in; a face seen once (often a false
detection) keeps ``track_id`` None. The first frame's evidence is held with the new tracklet and
joins the track when it gets its id, so a track's answer and ``first_frame`` include that frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..alignment import align
from ..detection import FaceDetector
from ..types import Face
from .fusion import Answer, Observation, TrackEvidence, quality
from .results import TrackedFace, TrackSummary

if TYPE_CHECKING:
    from ..pipeline import FaceAnalyzer

#: Least DIoU between a track's box and a detection for them to be matched (see above).
MIN_DIOU = -0.3


#: A track's running gender is decided once its combined P(female) is this far from 0.5, and then
#: changes only when the other gender leads by as much (hysteresis). Until then it is None (undecided),
#: so a face the model finds ambiguous is not labelled by a coin flip that later flips back; while the
#: evidence is contested after a decision, the shown ``gender_probability`` may dip to 0.4. The final
#: answer of an ended track (``tracks.jsonl``) is the plain majority of the evidence.
GENDER_MARGIN = 0.1


@dataclass
class _Log:
    """Bookkeeping of one numbered track."""

    first_frame: int
    first_time: float
    last_frame: int
    last_time: float
    box: tuple[float, float, float, float]
    evidence: TrackEvidence
    shown_gender: str | None = None


@dataclass(frozen=True)
class StepResult:
    """What one analysed frame gave: its faces, the tracks seen in it, and the tracks that ended."""

    faces: tuple[TrackedFace, ...]
    tracks: tuple[TrackSummary, ...]
    ended: tuple[TrackSummary, ...]


class FaceTracker:
    """Detect, track and analyse faces one frame at a time; keeps per-track evidence.

    Not thread-safe: one tracker follows one video (a live page session gets its own).

    Args:
        analyzer: supplies the model and the detector settings.
        lost_after: seconds a track survives without a detection before it ends.
        frame_rate: the video's nominal rate (the tracker's motion model is scaled by it).
        detector: a detector made by :func:`tracking_detector` to share between trackers (it is
            thread-safe); default: a new one.
    """

    def __init__(self, analyzer: FaceAnalyzer, *, lost_after: float = 2.0, frame_rate: float = 30.0,
                 detector: FaceDetector | None = None) -> None:
        from trackers import OCSORTTracker
        from trackers.utils.iou import DIoU

        if lost_after <= 0:
            raise ValueError(f"lost_after must be positive, got {lost_after}")
        self.analyzer = analyzer
        self.model = analyzer.model
        self.detector = detector or tracking_detector(analyzer)
        # lost_track_buffer is in frames at 30 fps; with timestamps the tracker applies it as seconds.
        self.tracker = OCSORTTracker(
            lost_track_buffer=max(1, round(lost_after * 30)),
            frame_rate=frame_rate if frame_rate > 0 else 30.0,
            high_conf_det_threshold=self.detector.config.score_threshold,
            minimum_consecutive_frames=1,
            iou=DIoU(),
            minimum_iou_threshold=MIN_DIOU,
        )
        self.logs: dict[int, _Log] = {}
        self.ended: set[int] = set()
        # Observations of tracklets not numbered yet, by id() of the tracklet (kept to pin that id).
        self._held: dict[int, tuple[Any, list[tuple[Observation, int, float]]]] = {}

    def step(self, image: np.ndarray, frame: int, time: float) -> StepResult:
        """Analyse one frame (RGB uint8) at ``time`` seconds.

        Returns:
            The faces reported in it (track id or None), the running answers of the tracks seen in it,
            and the final answers of tracks that ended at it.
        """
        import supervision as sv

        found = self.detector.detect(image)
        boxes = np.array([d.box for d in found], dtype=np.float64).reshape(-1, 4)
        scores = np.array([d.score for d in found], dtype=np.float64)
        detections = sv.Detections(xyxy=boxes, confidence=scores, data={"index": np.arange(len(found))})
        tracked = self.tracker.update(detections, timestamp=time)
        # A tracklet still without an id that missed its next frame was one stray detection, not a person.
        # OC-SORT would keep it for the whole lost-track budget, and a person reappearing inside its box
        # after an occlusion would then be matched to it (a new id) instead of to their own track.
        self.tracker.tracks = [t for t in self.tracker.tracks if t.tracker_id >= 0 or t.time_since_update == 0]
        ids: dict[int, int] = {}
        if len(tracked) and tracked.tracker_id is not None:  # an empty result has no data columns
            ids = {int(i): int(t) for i, t in zip(tracked.data["index"], tracked.tracker_id, strict=True)}
        observations = self._observe(image, found)
        faces, seen = [], []
        for i, obs in enumerate(observations):
            track_id = ids.get(i, -1)
            faces.append(TrackedFace(obs.face, track_id if track_id >= 0 else None))
            if track_id >= 0:
                self._add(track_id, obs, frame, time)
                seen.append(self.summary(track_id))
        self._hold([(boxes[i], obs) for i, obs in enumerate(observations) if ids.get(i, -1) < 0], frame, time)
        return StepResult(tuple(faces), tuple(seen), tuple(self._collect_ended()))

    def _hold(self, unnumbered: list[tuple[np.ndarray, Observation]], frame: int, time: float) -> None:
        """Keep the observations of faces that started a tracklet this frame (it has no id yet)."""
        alive = {id(t): t for t in self.tracker.tracks}
        self._held = {k: v for k, v in self._held.items() if k in alive}
        fresh = [t for t in self.tracker.tracks if t.tracker_id == -1]
        for box, obs in unnumbered:
            # A new tracklet starts at its detection's box exactly.
            tracklet = next((t for t in fresh if np.array_equal(t.last_observation, box)), None)
            if tracklet is not None:
                self._held.setdefault(id(tracklet), (tracklet, []))[1].append((obs, frame, time))

    def _adopt(self, track_id: int) -> list[tuple[Observation, int, float]]:
        """The held observations of the tracklet that has just been numbered ``track_id``."""
        for key, (tracklet, held) in list(self._held.items()):
            if tracklet.tracker_id == track_id:
                del self._held[key]
                return held
        return []

    def _observe(self, image: np.ndarray, detections: list) -> list[Observation]:  # type: ignore[type-arg]
        from ..pipeline import make_face

        if not detections:
            return []
        aligned = [align(image, d, self.analyzer.alignment) for d in detections]
        pred = self.model.predict(np.stack([a.image for a in aligned]))
        years = self.model.year_distributions([pred])  # each face's per-year distribution, as analyze gives
        height, width = image.shape[:2]
        out = []
        for k, a in enumerate(aligned):
            face = make_face(a, float(pred.age[k]), (float(pred.age_low[k]), float(pred.age_high[k])),
                             float(pred.p_female[k]), width, height, None if years is None else years[k])
            out.append(Observation(
                face, float(pred.p_female[k]),
                None if pred.age_probs is None else pred.age_probs[k],
                None if pred.age_interval_probs is None else pred.age_interval_probs[k],
            ))
        return out

    def _add(self, track_id: int, obs: Observation, frame: int, time: float) -> None:
        size = self.model.bundle.input_size
        log = self.logs.get(track_id)
        if log is None:
            held = self._adopt(track_id)
            first_frame, first_time = (held[0][1], held[0][2]) if held else (frame, time)
            log = _Log(first_frame, first_time, frame, time, obs.face.box, TrackEvidence(self.model))
            for earlier, _, at in held:
                log.evidence.add(earlier, quality(earlier.face, size), at)
            self.logs[track_id] = log
        log.last_frame, log.last_time, log.box = frame, time, obs.face.box
        log.evidence.add(obs, quality(obs.face, size), time)

    def evidence(self, track_id: int) -> TrackEvidence:
        """Track ``track_id``'s evidence (its running sums), e.g. to combine with a person's other tracks."""
        return self.logs[track_id].evidence

    def summary(self, track_id: int, final: bool = False) -> TrackSummary:
        """Track ``track_id``'s combined answer so far; ``final``: without the gender hysteresis."""
        log = self.logs[track_id]
        answer: Answer = log.evidence.answer()
        pf = answer.p_female
        gender = None
        if pf is not None:
            gender = "female" if pf >= 0.5 else "male"
            if not final and abs(pf - 0.5) <= GENDER_MARGIN:
                gender = log.shown_gender  # undecided (None) or contested: keep what was shown
            log.shown_gender = gender
        probability = None if pf is None or gender is None else (pf if gender == "female" else 1.0 - pf)
        return TrackSummary(track_id, log.first_frame, log.last_frame, log.first_time, log.last_time,
                            log.evidence.frames, log.box, answer.age, answer.age_interval, gender, probability)

    def _collect_ended(self) -> list[TrackSummary]:
        alive = {int(t.tracker_id) for t in self.tracker.tracks}
        gone = [i for i in self.logs if i not in alive and i not in self.ended]
        self.ended.update(gone)
        return [self.summary(i, final=True) for i in sorted(gone)]

    def finish(self) -> list[TrackSummary]:
        """End every track still open (the video is over) and return their final answers."""
        open_ids = sorted(i for i in self.logs if i not in self.ended)
        self.ended.update(open_ids)
        return [self.summary(i, final=True) for i in open_ids]

    def tracks(self) -> list[TrackSummary]:
        """Every track so far, in id order (the final answers of those that ended)."""
        return [self.summary(i, final=i in self.ended) for i in sorted(self.logs)]

    def drop_ended(self) -> None:
        """Forget the tracks that have ended (a live session reports them once, then keeps no history)."""
        for track_id in self.ended:
            self.logs.pop(track_id, None)
        self.ended.clear()


def tracking_detector(analyzer: FaceAnalyzer) -> FaceDetector:
    """A detector with the analyzer's settings using every core: one video is one stream of frames
    (``FaceAnalyzer`` limits its own detector to one thread when it detects many images in parallel)."""
    return FaceDetector(replace(analyzer.detector.config, threads=None))


def draw_faces(step_faces: tuple[TrackedFace, ...], tracks: tuple[TrackSummary, ...]) -> tuple[list[Face], list[str]]:
    """What to draw on a frame: each track at its box with its combined answer, tagged ``#id``, and
    the faces without a track yet with their own answer, tagged ``#?``."""
    faces = [t.as_face() for t in tracks]
    tags = [f"#{t.track_id}" for t in tracks]
    for tf in step_faces:
        if tf.track_id is None:
            faces.append(tf.face)
            tags.append("#?")
    return faces, tags
