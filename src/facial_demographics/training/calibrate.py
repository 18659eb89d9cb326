"""Calibrate a bundle's age interval and its gender probability on the validation split.

A distribution head trained with a fixed label width (DLDL) is not automatically calibrated: its
80 % interval may cover more or fewer than 80 % of true ages. We fit one temperature, applied to the
age logits for the interval only (the expected age is unchanged), so that the interval covers the
requested share of validation ages. The gender head gets one temperature per predicted-age band, so
that the probability shown matches how often the model is right at that age (small children's gender
is far harder than adults'). Only the validation split is used; the test split stays untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..datasets.cache import load_cache, split_faces
from ..errors import InvalidValueError
from ..evaluation.metrics import reliability
from ..labels import FEMALE, GENDER_AGE_BAND_EDGES, GENDER_AGE_BANDS
from ..manifest import AgeHead, GenderHead
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


def split_outputs(bundle: ModelBundle, cache_dir: Path, split_file: Path, split: str,
                  batch_size: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The graph's outputs (by name) on the cached faces of one split, and their index rows.

    Raises:
        InvalidValueError: the cache's face size is not the model's input size.
        DataError: the split selects no cached face.
    """
    cache = load_cache(cache_dir)
    if cache.size != bundle.input_size:
        raise InvalidValueError(f"{cache_dir}: faces are {cache.size} px, the model takes {bundle.input_size} px")
    faces, rows = split_faces(cache, split_file, split)
    model = AgeGenderModel(bundle)
    batches = [model.raw(faces[i : i + batch_size]) for i in range(0, len(faces), batch_size)]
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}, rows


def calibrate_bundle(bundle_dir: Path, cache_dir: Path, split_file: Path, *, split: str = "val",
                     target: float = 0.8, batch_size: int = 128) -> Calibration:
    """Fit the interval temperature on ``split`` and write it into the bundle's manifest."""
    bundle = ModelBundle.load(bundle_dir)
    head = bundle.spec.age
    if head.type not in ("distribution", "buckets"):
        raise InvalidValueError(f"{bundle_dir}: a {head.type} age head has no distribution to calibrate")
    outputs, rows = split_outputs(bundle, cache_dir, split_file, split, batch_size)
    logits = outputs[head.output]
    ages = rows["age"].to_numpy(dtype=np.float64)
    before = coverage(head, logits, ages, target)
    scores = [abs(coverage(head.with_temperature(t), logits, ages, target) - target) for t in TEMPERATURES]
    best = float(TEMPERATURES[int(np.argmin(scores))])
    after = coverage(head.with_temperature(best), logits, ages, target)
    manifest = bundle.spec.with_age(head.with_temperature(best)).to_manifest()
    manifest.setdefault("training", {})["interval_calibration"] = {
        "split": split, "target": target, "temperature": best, "faces": len(rows),
        "coverage_before": round(before, 4), "coverage_after": round(after, 4),
    }
    write_bundle(bundle.root, bundle.graph_path, manifest)
    return Calibration(best, before, after, len(rows))


#: Gender temperatures tried per predicted-age band (log-spaced: 1/4 to 4 times the logits' scale).
GENDER_TEMPERATURES = np.round(np.exp(np.linspace(np.log(0.25), np.log(4.0), 81)), 4)
#: A band with fewer validation faces than this keeps temperature 1 (too few to fit on).
MIN_BAND_FACES = 30


@dataclass(frozen=True)
class GenderBandFit:
    band: str  # the predicted-age band
    faces: int
    temperature: float
    ece_before: float | None
    ece_after: float | None


@dataclass(frozen=True)
class GenderCalibration:
    bands: tuple[GenderBandFit, ...]
    faces: int


def _nll(is_female: np.ndarray, logits: np.ndarray, head: GenderHead, t: float) -> float:
    p = np.clip(head.p_female(logits / t), 1e-7, 1 - 1e-7)
    return float(-np.mean(np.where(is_female, np.log(p), np.log1p(-p))))


def fit_gender_temperatures(head: GenderHead, logits: np.ndarray, pred_ages: np.ndarray,
                            is_female: np.ndarray) -> tuple[GenderHead, tuple[GenderBandFit, ...]]:
    """One temperature per predicted-age band, each minimising the negative log-likelihood of its faces.

    Args:
        head: the gender head (any calibration it has is replaced).
        logits: its (N, 2) raw output on labelled faces.
        pred_ages: the model's age for each face (bands use the predicted age: inference has no other).
        is_female: the labels.

    Returns:
        The calibrated head and, per band, the faces, temperature and ECE before and after.
    """
    plain = head.with_calibration((), ())
    bands = np.searchsorted(GENDER_AGE_BAND_EDGES, pred_ages, side="right")
    temps, fits = [], []
    for i, name in enumerate(GENDER_AGE_BANDS):
        sel = bands == i
        n = int(sel.sum())
        t = 1.0
        if n >= MIN_BAND_FACES:
            losses = [_nll(is_female[sel], logits[sel], plain, float(c)) for c in GENDER_TEMPERATURES]
            t = float(GENDER_TEMPERATURES[int(np.argmin(losses))])
        before = reliability(is_female[sel], plain.p_female(logits[sel]))[0] if n else None
        after = reliability(is_female[sel], plain.p_female(logits[sel] / t))[0] if n else None
        temps.append(t)
        fits.append(GenderBandFit(name, n, t, before, after))
    return head.with_calibration(GENDER_AGE_BAND_EDGES, tuple(temps)), tuple(fits)


def calibrate_gender(bundle_dir: Path, cache_dir: Path, split_file: Path, *, split: str = "val",
                     batch_size: int = 128) -> GenderCalibration:
    """Fit the gender temperatures on ``split`` and write them into the bundle's manifest.

    Raises:
        InvalidValueError: the bundle has no gender head, or the cache does not match its input size.
        DataError: the split selects no cached face.
    """
    bundle = ModelBundle.load(bundle_dir)
    spec, gender = bundle.spec, bundle.spec.gender
    if gender is None:
        raise InvalidValueError(f"{bundle_dir}: the model has no gender head to calibrate")
    if split == "test":
        raise InvalidValueError("the test split is for measuring, not for fitting a calibration")
    outputs, rows = split_outputs(bundle, cache_dir, split_file, split, batch_size)
    known = rows["gender"].notna().to_numpy()
    rows = rows[known]
    logits = outputs[gender.output][known].astype(np.float64)
    ages = spec.age.decode(outputs[spec.age.output][known].astype(np.float64), 0.8)[0]
    is_female = rows["gender"].to_numpy() == FEMALE
    head, fits = fit_gender_temperatures(gender, logits, ages, is_female)
    manifest = spec.with_gender(head).to_manifest()
    manifest.setdefault("training", {})["gender_calibration"] = {
        "split": split, "faces": len(rows), "bands_by": "predicted age",
        "bands": [{"band": f.band, "faces": f.faces, "temperature": f.temperature,
                   "ece_before": None if f.ece_before is None else round(f.ece_before, 4),
                   "ece_after": None if f.ece_after is None else round(f.ece_after, 4)} for f in fits],
    }
    write_bundle(bundle.root, bundle.graph_path, manifest)
    return GenderCalibration(fits, len(rows))
