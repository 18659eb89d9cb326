"""The analysis stage of a Ray Data run: one :class:`FaceAnalyzer` per actor, fed batches of paths.

Each actor loads the detector and the model once and keeps them for every batch it gets. Its threads
are capped at the CPUs Ray reserved for it (``threads``), so a node running one actor per core is not
oversubscribed: ONNX Runtime gets ``threads`` intra-op threads, OpenCV the same, and detection runs
one image per thread in the analyser's pool of ``threads`` workers.

A bad image never fails the job: unreadable inputs become results with ``error`` set, exactly as the
local engine reports them, and an unexpected exception while analysing a batch is retried image by
image so that only the image that raised it gets the error.
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..detection import DetectorConfig
from ..imaging import DEFAULT_MAX_PIXELS
from ..pipeline import FaceAnalyzer
from ..types import ImageResult
from .sources import is_uri, read_bytes

#: Object-store reads in flight per actor: they wait on the network, not on a core.
URI_READERS = 8


@dataclass(frozen=True)
class AnalyzerSpec:
    """How every actor builds its analyser (sent to the actors, so plain values only)."""

    model: str | None = None  # bundle directory, readable on every node; None = the bundled model
    cropped: bool = False
    batch_size: int = 32  # faces per model batch
    threads: int = 1  # CPUs reserved per actor; all of its compute threads fit in them
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_face: float = 0.0  # FaceAnalyzer's filters (--min-face, --min-score)
    min_score: float = 0.0


def build_analyzer(spec: AnalyzerSpec) -> FaceAnalyzer:
    """The analyser of one actor: the local engine's settings with its threads capped at ``spec.threads``."""
    detector = DetectorConfig.single_scale(threads=1) if spec.cropped else DetectorConfig(threads=1)
    return FaceAnalyzer(spec.model, cropped=spec.cropped, batch_size=spec.batch_size, threads=spec.threads,
                        detector=detector, max_pixels=spec.max_pixels, io_workers=spec.threads,
                        min_face=spec.min_face, min_score=spec.min_score)


def _read_error(exc: OSError) -> str:
    """The reason the local reader gives for the same failure on a local path."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file"
    return f"cannot open ({exc.strerror or exc})"


def _fetch(uri: str) -> bytes | str:
    """The object's bytes, or the reason it cannot be read."""
    try:
        return read_bytes(uri)
    except (OSError, ValueError) as exc:  # ValueError: SourceError, a URI pyarrow cannot open
        return _read_error(exc) if isinstance(exc, OSError) else str(exc)


def _analyze_one(analyzer: FaceAnalyzer, source: Any, name: str) -> ImageResult:
    try:
        return analyzer.analyze(source, name=name)
    except Exception as exc:  # a bug or a decoder crash on one image must not cost the others
        return ImageResult(path=name, error=f"analysis failed ({type(exc).__name__}: {exc})")


def analyze_paths(analyzer: FaceAnalyzer, paths: list[str]) -> list[ImageResult]:
    """Analyse local paths and URIs in one shared batch; one result per path, in order.

    Args:
        analyzer: the actor's analyser.
        paths: local paths (read by the analyser, as the local engine does) or URIs (fetched here).

    Returns:
        The results; an input that cannot be read or analysed has ``error`` set.
    """
    sources: list[Any] = list(paths)
    failed: dict[int, str] = {}
    uris = [i for i, p in enumerate(paths) if is_uri(p)]
    if uris:
        with ThreadPoolExecutor(min(URI_READERS, len(uris))) as pool:
            for i, data in zip(uris, pool.map(_fetch, [paths[i] for i in uris]), strict=True):
                if isinstance(data, str):
                    failed[i] = data
                else:
                    sources[i] = data
    todo = [i for i in range(len(paths)) if i not in failed]
    try:
        done = analyzer.analyze_batch([sources[i] for i in todo], names=[paths[i] for i in todo])
    except Exception:  # find the image that raised it; the others keep their results
        done = [_analyze_one(analyzer, sources[i], paths[i]) for i in todo]
    results = [ImageResult(path=paths[i], error=reason) for i, reason in failed.items()]
    by_index = dict(zip(todo, done, strict=True)) | dict(zip(failed, results, strict=True))
    return [by_index[i] for i in range(len(paths))]


class AnalyzeBatch:
    """The ``map_batches`` callable class: built once per actor, then called for each batch of paths."""

    def __init__(self, spec: AnalyzerSpec) -> None:
        import cv2

        cv2.setNumThreads(spec.threads)  # OpenCV's own pool would otherwise take every core of the node
        self.analyzer = build_analyzer(spec)
        self.analyzer.warm_up()  # a bad bundle fails the actor at start, not image by image

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """``{"path": [...]}`` → ``{"path": [...], "result": [pickled ImageResult, ...]}``: whole objects, so
        the driver gets full-precision numbers and the same type as ``FaceAnalyzer`` returns."""
        paths = [str(p) for p in batch["path"]]
        results = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in analyze_paths(self.analyzer, paths)]
        return {"path": paths, "result": results}


def unpack(result: bytes) -> ImageResult:
    """One ``result`` cell of the dataset back to an :class:`ImageResult` (written by this package's actors)."""
    value = pickle.loads(result)  # noqa: S301 - our own actors' output, never user-supplied bytes
    assert isinstance(value, ImageResult)
    return value


def spec_for(model: str | Path | None, **fields: Any) -> AnalyzerSpec:
    """An :class:`AnalyzerSpec` with the model as an absolute path string (actors may start elsewhere);
    a registry name (``fast``) becomes the installed bundle's directory."""
    from ..registry import resolve

    spec = AnalyzerSpec(**fields)
    return replace(spec, model=None if model is None else str(resolve(model).resolve()))
