"""The public entry point: read → detect → align → predict → post-process.

``FaceAnalyzer`` is thread-safe: it holds no per-call state, and its ONNX sessions are created once
under a lock and are themselves safe to share. ``analyze_batch`` decodes and detects in a thread
pool while the model runs, and sends faces from many images to the model in shared batches.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .alignment import align, align_single
from .detection import DetectorConfig, FaceDetector
from .errors import InvalidValueError
from .filters import FaceFilter
from .imaging import DEFAULT_MAX_PIXELS, Channels, ImageError, read_image
from .labels import age_group
from .model import AgeGenderModel, ModelBundle
from .types import AlignedFace, Face, ImageResult

if TYPE_CHECKING:
    from .population import PopulationSummary

Source = Any  # str | Path | bytes | binary file object | np.ndarray | PIL.Image.Image


def source_name(source: Source, index: int) -> str:
    """The ``ImageResult.path`` of a source: the path itself, or a placeholder such as ``<array 3>``."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"<array {index}>"
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or f"<image {index}>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<bytes {index}>"
    return str(getattr(source, "name", f"<stream {index}>"))


def _clipped_points(points: np.ndarray, width: int | None, height: int | None) -> list[tuple[float, float]]:
    """Landmarks as reported: inside the image, like the box (alignment used the unclipped ones)."""
    hi = np.array([width or np.inf, height or np.inf])
    return [(float(x), float(y)) for x, y in np.clip(points, 0, hi)]


def make_face(aligned: AlignedFace, age: float, interval: tuple[float, float], p_female: float,
              width: int | None, height: int | None, age_probs: np.ndarray | None = None) -> Face:
    """A :class:`Face` from its detection and the model's numbers (``p_female`` NaN without a gender head;
    ``age_probs`` the per-year distribution, :meth:`~facial_demographics.manifest.AgeHead.year_distribution`)."""
    det = aligned.detection
    female = p_female >= 0.5
    return Face(
        box=det.box,
        score=det.score,
        landmarks=_clipped_points(det.landmarks, width, height),
        age=age,
        age_interval=interval,
        age_group=age_group(age),
        gender=None if np.isnan(p_female) else ("female" if female else "male"),
        gender_probability=None if np.isnan(p_female) else (p_female if female else 1.0 - p_female),
        fallback=aligned.fallback,
        age_probs=age_probs,
    )


@dataclass
class _Staged:
    """One image after reading, detection and alignment, waiting for the model."""

    result: ImageResult
    faces: list[AlignedFace] = field(default_factory=list)


class FaceAnalyzer:
    """Finds every face in an image and estimates its age (with an interval) and gender.

    ``cropped=True`` treats each input as one already-cropped face (UTKFace-style): the best face on
    a padded canvas, or the whole image when none is found (``Face.fallback``), so a readable image
    always yields exactly one face.

    The ONNX graphs load on the first call (or at :meth:`warm_up`); a model bundle that ONNX Runtime
    cannot use raises :class:`~facial_demographics.model.BundleError` there.

    ``model`` is a registry name (``"default"``, ``"fast"``, ``"fp32"``; see :mod:`.registry`), a bundle
    directory, a loaded bundle or model, or None (the default); ``device`` is "auto", "cpu" or "cuda"
    (:func:`~facial_demographics.runtime.make_session`).

    ``min_face`` (pixels, the shorter side of the face's box) and ``min_score`` (detection score, 0..1)
    drop faces the caller does not want counted, before the model runs (:class:`~.filters.FaceFilter`);
    they do not apply with ``cropped=True``, where each image is one face by definition.

    Raises:
        InvalidValueError: a bad ``batch_size``, ``min_face`` or ``min_score``, or a filter with ``cropped``.
    """

    def __init__(
        self,
        model: ModelBundle | AgeGenderModel | str | Path | None = None,
        *,
        cropped: bool = False,
        batch_size: int = 32,
        threads: int | None = None,
        detector: FaceDetector | DetectorConfig | None = None,
        interval: float = 0.8,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        io_workers: int | None = None,
        device: str = "auto",
        min_face: float = 0.0,
        min_score: float = 0.0,
    ) -> None:
        if batch_size < 1:
            raise InvalidValueError(f"batch_size must be at least 1, got {batch_size}")
        self.face_filter = FaceFilter(min_face, min_score)
        if cropped and self.face_filter.active:
            raise InvalidValueError("min_face and min_score do not apply to cropped faces (each image is one face)")
        self.model = model if isinstance(model, AgeGenderModel) else AgeGenderModel(
            model, threads=threads, interval=interval, device=device
        )
        self.alignment = self.model.bundle.alignment
        self.io_workers = io_workers or (os.cpu_count() or 1)
        if isinstance(detector, FaceDetector):
            self.detector = detector
        else:
            # Images are detected in parallel by the thread pool, so each detection uses one thread
            # unless told otherwise (more would oversubscribe the cores).
            own_threads = threads or (1 if self.io_workers > 1 else None)
            if cropped:  # one pass, exactly as the training cache was built (unless a config is given),
                # and weaker detections accepted before falling back: we know a face is there
                base = detector or DetectorConfig.single_scale(threads=own_threads, device=device)
                cfg = replace(base, score_threshold=self.alignment.single_score_threshold)
            else:
                cfg = detector or DetectorConfig(threads=own_threads, device=device)
            self.detector = FaceDetector(cfg)
        self.cropped = cropped
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self._pool: ThreadPoolExecutor | None = None  # one pool for the analyzer's life (see _workers)
        self._pool_lock = threading.Lock()

    def _workers(self) -> ThreadPoolExecutor:
        """The reading/detection thread pool, made on first use and kept: a server calls
        :meth:`iter_analyze` once per micro-batch, and a pool per call would start threads every time."""
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.io_workers, thread_name_prefix="fd-stage")
        return self._pool

    def close(self) -> None:
        """Stop the thread pool (a later call makes a new one); the models stay loaded."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def manifest(self) -> dict[str, Any]:
        return self.model.bundle.public_manifest()

    def warm_up(self) -> None:
        """Load both ONNX graphs and run one inference each (otherwise done on the first call).

        Raises:
            BundleError: the model bundle's graph cannot be loaded or run (see ``AgeGenderModel``).
        """
        self.model.warm_up()
        self.detector.detect(np.zeros((64, 64, 3), np.uint8))

    # -- stages ---------------------------------------------------------------------------------
    def _stage(self, source: Source, name: str, channels: Channels = "rgb") -> _Staged:
        """Read, detect and align one image; errors become ``ImageResult.error``, never exceptions."""
        try:
            image = read_image(source, max_pixels=self.max_pixels, name=name, channels=channels)
        except ImageError as exc:
            return _Staged(ImageResult(path=name, error=exc.reason))
        height, width = image.shape[:2]
        if self.cropped:
            faces = [align_single(image, self.detector, self.alignment)]
        else:
            kept = self.face_filter.apply(self.detector.detect(image))
            faces = [align(image, d, self.alignment) for d in kept]
        return _Staged(ImageResult(path=name, width=width, height=height), faces)

    def _finish(self, staged: list[_Staged]) -> list[ImageResult]:
        crops = [face.image for item in staged for face in item.faces]
        years = None
        if crops:
            preds = [self.model.predict(np.stack(crops[i : i + self.batch_size]))
                     for i in range(0, len(crops), self.batch_size)]
            age = np.concatenate([p.age for p in preds])
            low = np.concatenate([p.age_low for p in preds])
            high = np.concatenate([p.age_high for p in preds])
            p_female = np.concatenate([p.p_female for p in preds])
            years = self.model.year_distributions(preds)
        k = 0
        for item in staged:
            for face in item.faces:
                item.result.faces.append(make_face(face, float(age[k]), (float(low[k]), float(high[k])),
                                                   float(p_female[k]), item.result.width, item.result.height,
                                                   None if years is None else years[k]))
                k += 1
        return [item.result for item in staged]

    # -- public API -----------------------------------------------------------------------------
    def analyze(self, source: Source, name: str | None = None, *, channels: Channels = "rgb") -> ImageResult:
        """Analyse one image.

        Args:
            source: a path, encoded bytes, a binary file object, a ``PIL.Image.Image`` or a numpy array.
            name: ``ImageResult.path`` to report (default: the path, or a placeholder such as ``<array 0>``).
            channels: "bgr" when arrays come from OpenCV (``cv2.imread``); see :func:`read_image`.

        Returns:
            The faces found; an unreadable image gives ``error`` set, never an exception.

        Raises:
            ValueError: ``channels`` is neither "rgb" nor "bgr".
        """
        _check_channels(channels)
        return self._finish([self._stage(source, name or source_name(source, 0), channels)])[0]

    def iter_analyze(
        self, sources: Iterable[Source], names: Iterable[str] | None = None,
        progress: Callable[[int], None] | None = None, *, channels: Channels = "rgb",
    ) -> Iterator[ImageResult]:
        """Results in input order; decoding and detection run ahead in threads while the model runs.

        Arguments as :meth:`analyze_batch`; results are yielded as soon as their model batch is done.
        """
        _check_channels(channels)
        items = iter(sources)
        name_iter = iter(names) if names is not None else None
        window = max(self.batch_size, 8)
        counter = 0
        pool = self._workers()
        pending: list[Future[_Staged]] = []
        submitted: list[Future[_Staged]] = []
        try:
            while True:
                chunk = list(islice(items, window))
                if not chunk and not pending:
                    break
                named = []
                for source in chunk:
                    name = next(name_iter) if name_iter is not None else source_name(source, counter)
                    named.append((source, name))
                    counter += 1
                # Submit the next window before finishing the previous one, so reading overlaps inference.
                submitted = [pool.submit(self._stage, s, n, channels) for s, n in named]
                if pending:
                    done = [f.result() for f in pending]
                    yield from self._finish(done)
                    if progress:
                        progress(len(done))
                pending = submitted
        finally:
            # On Ctrl-C, an error or an abandoned generator, drop this call's queued work and wait for the
            # stages already running (the pool is shared with other calls, so it is not shut down).
            ours = pending + submitted
            for f in ours:
                f.cancel()
            wait(ours)

    def analyze_batch(
        self, sources: Sequence[Source], names: Sequence[str] | None = None,
        progress: Callable[[int], None] | None = None, *, channels: Channels = "rgb",
    ) -> list[ImageResult]:
        """Analyse many images; faces from all of them share model batches.

        Args:
            sources: anything :meth:`analyze` takes, mixed freely.
            names: ``ImageResult.path`` for each source (default as in :meth:`analyze`).
            progress: called with the number of images finished after each batch.
            channels: "bgr" when the arrays come from OpenCV.

        Returns:
            One result per source, in order; a bad image gets ``error`` set and the rest go on.

        Raises:
            ValueError: ``channels`` is neither "rgb" nor "bgr".
        """
        return list(self.iter_analyze(sources, names, progress, channels=channels))

    def summarize(self, results: Iterable[ImageResult], bands: str | None = None, interval: float = 0.9,
                  ) -> PopulationSummary:
        """How many people of each age band and gender these results hold, with intervals (this model's
        population calibration corrects for its own confusion); see :mod:`~facial_demographics.population`.

        Args:
            results: what :meth:`analyze_batch` or :meth:`iter_analyze` returned (errors and empty images
                are counted in the summary's context).
            bands: ``--bands`` text (``"13,18,25,35,45,55,65"``) or a preset; None: the audience brackets.
            interval: probability of the intervals.

        Returns:
            The summary; ``.to_dict()`` is ``summary.json``, ``population.report.write_summary`` writes the files.

        Raises:
            InvalidValueError: bad bands or interval.
        """
        from .population import summarize

        return summarize(results, self.model.bundle, bands, interval)


def _check_channels(channels: str) -> None:
    # Checked up front: a typo must not turn into a per-image error on every result.
    if channels not in ("rgb", "bgr"):
        raise ValueError(f'channels must be "rgb" or "bgr", got {channels!r}')
