"""Calibrate a bundle's age interval on the validation split.

A distribution head trained with a fixed label width (DLDL) is not automatically calibrated: its
80 % interval may cover more or fewer than 80 % of true ages. We fit one temperature, applied to the
age logits for the interval only (the expected age is unchanged), so that the interval covers the
requested share of validation ages. Only the validation split is used; the test split stays untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets.cache import load_cache, split_faces
from ..errors import InvalidValueError
from ..manifest import AgeHead
from ..model import AgeGenderModel, ModelBundle, write_bundle

TEMPERATURES = np.round(np.arange(0.4, 3.01, 0.05), 3)


@dataclass(frozen=True)
class Calibration:
    temperature: float
    coverage_before: float
    coverage_after: float
    faces: int


def coverage(head: AgeHead, logits: np.ndarray, ages: np.ndarray, target: float) -> float:
    """Share of ``ages`` inside the head's central ``target`` interval."""
    _, low, high = head.decode(logits, target)
    return float(np.mean((ages >= low) & (ages <= high)))


def calibrate_bundle(bundle_dir: Path, cache_dir: Path, split_file: Path, *, split: str = "val",
                     target: float = 0.8, batch_size: int = 128) -> Calibration:
    """Fit the interval temperature on ``split`` and write it into the bundle's manifest."""
    bundle = ModelBundle.load(bundle_dir)
    head = bundle.spec.age
    if head.type not in ("distribution", "buckets"):
        raise InvalidValueError(f"{bundle_dir}: a {head.type} age head has no distribution to calibrate")
    cache = load_cache(cache_dir)
    if cache.size != bundle.input_size:
        raise InvalidValueError(f"{cache_dir}: faces are {cache.size} px, the model takes {bundle.input_size} px")
    faces, rows = split_faces(cache, split_file, split)
    model = AgeGenderModel(bundle, interval=target)
    logits = np.concatenate([model.raw(faces[i : i + batch_size])[head.output]
                             for i in range(0, len(faces), batch_size)])
    ages = rows["age"].to_numpy(dtype=np.float64)
    before = coverage(head, logits, ages, target)
    scores = [abs(coverage(head.with_temperature(t), logits, ages, target) - target) for t in TEMPERATURES]
    best = float(TEMPERATURES[int(np.argmin(scores))])
    after = coverage(head.with_temperature(best), logits, ages, target)
    manifest = bundle.spec.with_age(head.with_temperature(best)).to_manifest()
    manifest.setdefault("training", {})["interval_calibration"] = {
        "split": split, "target": target, "temperature": best, "faces": int(len(faces)),
        "coverage_before": round(before, 4), "coverage_after": round(after, 4),
    }
    write_bundle(bundle.root, bundle.graph_path, manifest)
    return Calibration(best, before, after, int(len(faces)))
