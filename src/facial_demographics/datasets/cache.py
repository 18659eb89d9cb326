"""The aligned-face cache: detection and alignment run once per dataset, training reads uint8 arrays.

Layout of a cache directory:

- ``faces.npy``: uint8 (N, S, S, 3) RGB aligned faces, memory-mappable (``np.load(mmap_mode="r")``);
- ``index.parquet``: row i describes ``faces[i]``: key, path, age, gender, race, source, status
  ("ok" | "fallback" | "unreadable"), error, det_score, fallback, lm0x..lm4y (landmarks in the source image);
- ``meta.json``: size, margin, template, aligned, dataset, counts.

``prepare_cache(..., align=False)`` skips detection and alignment and stores each image resized to
S x S (the seed report fed UTKFace's own 200x200 crops to Keras this way); its rows have status "ok",
no landmarks, and ``template`` names the framing the crops already have (UTKFace's: ``utkface5``), which
is how inference crops faces for a model trained on them.

Work is done in chunks written to ``parts/``; an interrupted run resumes at the first missing chunk.
Unreadable images keep their row (all-zero face, status "unreadable", error = reason), so every
record is accounted for.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..alignment import AlignmentConfig, align_single
from ..detection import DetectorConfig, FaceDetector
from ..imaging import ImageError, read_image
from .errors import DataError, DataNotFoundError
from .records import Record
from .splits import read_split

CHUNK = 256
_LANDMARK_COLUMNS = [f"lm{i}{axis}" for i in range(5) for axis in "xy"]


#: Index columns every reader of a cache relies on.
REQUIRED_COLUMNS = ("key", "age", "gender", "status")
_FILES = ("faces.npy", "index.parquet", "meta.json")


@dataclass(frozen=True)
class FaceCache:
    """An opened cache: ``faces[i]`` is the uint8 (S, S, 3) RGB crop of ``index.iloc[i]``.

    ``faces`` is memory-mapped; ``index`` has a 0..N-1 RangeIndex, so index labels are face rows.
    """

    path: Path
    faces: np.ndarray
    index: pd.DataFrame
    meta: dict[str, Any]

    @property
    def size(self) -> int:
        """S, the side of the cached crops in pixels."""
        return int(self.faces.shape[1])

    @property
    def readable(self) -> pd.Series:
        """True for rows whose image could be read (an unreadable one keeps an all-zero face)."""
        return self.index["status"] != "unreadable"


def row_sources(rows: pd.DataFrame) -> np.ndarray:
    """Each index row's dataset (the ``source`` column, "" where unknown or for caches made before it)."""
    if "source" not in rows:
        return np.full(len(rows), "", dtype=object)
    return rows["source"].fillna("").astype(str).to_numpy()


def load_cache(path: str | Path) -> FaceCache:
    """Open a cache directory: the one cache reader (training, evaluation, robustness, calibration).

    Args:
        path: the folder ``data prepare`` wrote.

    Returns:
        The cache, faces memory-mapped.

    Raises:
        DataNotFoundError: a file of the cache is missing.
        DataError: the faces array has the wrong shape or dtype, the index lacks a column, or their
            lengths differ; the message names the file.
    """
    p = Path(path)
    for name in _FILES:
        if not (p / name).is_file():
            raise DataNotFoundError(f"{p}: not an aligned-face cache ({name} missing); run "
                                    "'facial-demographics data prepare' first or pass --cache")
    faces = np.load(p / "faces.npy", mmap_mode="r")
    if faces.ndim != 4 or faces.shape[3] != 3 or faces.shape[1] != faces.shape[2] or faces.dtype != np.uint8:
        raise DataError(f"{p / 'faces.npy'}: expected uint8 (N, S, S, 3), got {faces.dtype} {faces.shape}")
    index = pd.read_parquet(p / "index.parquet")
    missing = [c for c in REQUIRED_COLUMNS if c not in index.columns]
    if missing:
        raise DataError(f"{p / 'index.parquet'}: missing columns {missing}")
    if len(index) != len(faces):
        raise DataError(f"{p}: index has {len(index)} rows but faces.npy has {len(faces)}")
    meta = json.loads((p / "meta.json").read_text(encoding="utf-8"))
    return FaceCache(p, faces, index.reset_index(drop=True), meta)


def split_faces(cache: FaceCache, split_file: str | Path, split: str = "val") -> tuple[np.ndarray, pd.DataFrame]:
    """The readable cached faces with a known age in one split, and their index rows.

    Raises:
        DataError: the split file is unusable (see :func:`read_split`) or selects no such face.
    """
    mapping = read_split(split_file)
    index = cache.index
    chosen = index[(index["key"].map(mapping) == split) & cache.readable & index["age"].notna()]
    if chosen.empty:
        raise DataError(f"{split_file}: no cached faces in split {split!r}")
    return np.asarray(cache.faces[chosen.index.to_numpy()]), chosen


def _read_source(path: str) -> np.ndarray:
    if "::" in path:  # a member of a dataset archive (see datasets.utkface)
        from .utkface import read_bytes

        return read_image(read_bytes(path), name=path)
    return read_image(path)


# One detector per worker process, created by the pool initialiser (ONNX sessions do not pickle).
_WORKER: dict[str, Any] = {}


def _init_worker(alignment: AlignmentConfig, threads: int, align: bool = True) -> None:
    _WORKER["alignment"] = alignment
    _WORKER["align"] = align
    if not align:
        return
    _WORKER["detector"] = FaceDetector(DetectorConfig.single_scale(score_threshold=alignment.single_score_threshold,
                                                                   threads=threads))


def resize_crop(image: np.ndarray, size: int) -> np.ndarray:
    """An already-cropped face as a ``size`` x ``size`` uint8 RGB array, no detection or alignment.

    The whole image is scaled to the square (as Keras' ``target_size`` does, aspect not kept), bilinear
    with PIL's antialiasing, so a shrink by more than a little does not alias.
    """
    if image.shape[0] == image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _process_chunk(paths: Sequence[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    cfg: AlignmentConfig = _WORKER["alignment"]
    align: bool = _WORKER.get("align", True)
    faces = np.zeros((len(paths), cfg.size, cfg.size, 3), dtype=np.uint8)
    rows: list[dict[str, Any]] = []
    for i, path in enumerate(paths):
        try:
            image = _read_source(path)
        except (ImageError, OSError) as exc:
            rows.append({"status": "unreadable", "error": str(exc), "det_score": np.nan, "fallback": False,
                         **dict.fromkeys(_LANDMARK_COLUMNS, np.nan)})
            continue
        if not align:
            faces[i] = resize_crop(image, cfg.size)
            rows.append({"status": "ok", "error": None, "det_score": np.nan, "fallback": False,
                         **dict.fromkeys(_LANDMARK_COLUMNS, np.nan)})
            continue
        aligned = align_single(image, _WORKER["detector"], cfg)
        faces[i] = aligned.image
        rows.append({
            "status": "fallback" if aligned.fallback else "ok",
            "error": None,
            "det_score": aligned.detection.score,
            "fallback": aligned.fallback,
            **dict(zip(_LANDMARK_COLUMNS, aligned.detection.landmarks.reshape(-1).tolist(), strict=True)),
        })
    return faces, rows


def _record_rows(records: Sequence[Record]) -> pd.DataFrame:
    return pd.DataFrame({
        "key": [r.key for r in records],
        "path": [r.path for r in records],
        "age": [np.nan if r.age is None else float(r.age) for r in records],
        "gender": [np.nan if r.gender is None else float(r.gender) for r in records],
        "race": [r.groups.get("race") for r in records],
        "identity": [r.identity for r in records],
        "source": [r.source for r in records],
    })


def prepare_cache(
    records: Sequence[Record],
    out: str | Path,
    alignment: AlignmentConfig | None = None,
    *,
    workers: int | None = None,
    dataset: str = "",
    progress: Callable[[int], None] | None = None,
    align: bool = True,
) -> FaceCache:
    """Align every record into ``out`` (resumable); ``progress`` is called with the images done per chunk.

    Args:
        align: False stores each image resized to ``alignment.size`` without detecting or aligning it
            (datasets of face crops, e.g. UTKFace's own); ``alignment.template`` then records the framing
            the crops have.

    Raises:
        DataError: ``out`` holds a cache of other records or settings.
    """
    cfg = alignment or AlignmentConfig()
    out = Path(out)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    table = _record_rows(records)
    # An unaligned cache depends on the size alone (and the template it records).
    settings = asdict(cfg) if align else {"size": cfg.size, "template": cfg.template, "aligned": False}
    plan = {"count": len(records), "alignment": settings, "dataset": dataset,
            "keys_sha256": hashlib.sha256("\n".join(table["key"]).encode()).hexdigest()}
    plan_file = out / "plan.json"
    if plan_file.exists() and json.loads(plan_file.read_text()) != plan:
        raise DataError(f"{out}: holds a cache for other records or settings; choose another --out")
    plan_file.write_text(json.dumps(plan))
    faces_path = out / "faces.npy"
    shape = (len(records), cfg.size, cfg.size, 3)
    if faces_path.exists():
        faces = np.load(faces_path, mmap_mode="r+")
    else:
        faces = np.lib.format.open_memmap(faces_path, mode="w+", dtype=np.uint8, shape=shape)
    chunks = [(start, min(start + CHUNK, len(records))) for start in range(0, len(records), CHUNK)]
    todo = [c for c in chunks if not (parts / f"{c[0]:08d}.parquet").exists()]
    if progress and len(todo) < len(chunks):
        progress(sum(e - s for s, e in chunks) - sum(e - s for s, e in todo))
    n_workers = max(1, workers or os.cpu_count() or 1)
    paths = table["path"].tolist()
    with ProcessPoolExecutor(n_workers, initializer=_init_worker, initargs=(cfg, 1, align)) as pool:
        futures = {pool.submit(_process_chunk, paths[s:e]): (s, e) for s, e in todo}
        for future in as_completed(futures):
            s, e = futures[future]
            chunk_faces, rows = future.result()
            faces[s:e] = chunk_faces
            faces.flush()
            part = pd.DataFrame(rows)
            part.insert(0, "row", np.arange(s, e))
            tmp = parts / f"{s:08d}.parquet.tmp"
            part.to_parquet(tmp)
            os.replace(tmp, parts / f"{s:08d}.parquet")  # the chunk counts as done only now
            if progress:
                progress(e - s)
    done = pd.concat([pd.read_parquet(p) for p in sorted(parts.glob("*.parquet"))]).sort_values("row")
    index = pd.concat([table, done.drop(columns="row").reset_index(drop=True)], axis=1)
    index.to_parquet(out / "index.parquet")
    counts = index["status"].value_counts().to_dict()
    meta = {"size": cfg.size, "margin": cfg.margin, "template": cfg.template, "aligned": align, "dataset": dataset,
            "count": len(index), "status_counts": {str(k): int(v) for k, v in counts.items()}}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return load_cache(out)


