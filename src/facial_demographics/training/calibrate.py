"""Calibrate a bundle's age interval and its gender probability on the validation split.

A distribution head trained with a fixed label width (DLDL) is not automatically calibrated: its
80 % interval may cover more or fewer than 80 % of true ages. We fit one temperature, applied to the
age logits for the interval only (the expected age is unchanged), so that the interval covers the
requested share of validation ages. The gender head gets one temperature per predicted-age band, so
that the probability shown matches how often the model is right at that age (small children's gender
is far harder than adults'). Only the validation split is used; the test split stays untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..datasets.cache import load_cache, row_sources, split_faces
from ..errors import InvalidValueError
from ..evaluation.metrics import reliability
from ..labels import FEMALE, GENDER_AGE_BAND_EDGES, GENDER_AGE_BANDS, INTERVAL_BAND_EDGES
from ..manifest import AgeHead, GenderHead
from ..model import AgeGenderModel, ModelBundle, write_bundle

TEMPERATURES = np.round(np.arange(0.4, 6.01, 0.05), 3)
#: A predicted-age band with fewer faces than this (in every domain) keeps the global temperature.
MIN_INTERVAL_BAND_FACES = 30


@dataclass(frozen=True)
class Calibration:
    """An interval fit: the temperature (the global one; ``band_temperatures`` when fitted per band), the
    coverage before and after (domain-averaged), the faces, and each domain's coverage after."""

    temperature: float
    coverage_before: float
    coverage_after: float
    faces: int
    band_temperatures: tuple[float, ...] = ()
    by_domain: dict[str, float] = field(default_factory=dict)


def inside(head: AgeHead, logits: np.ndarray, ages: np.ndarray, target: float) -> np.ndarray:
    """Per face: is its true age inside the head's central ``target`` interval."""
    _, low, high = head.decode(logits, target)
    return (ages >= low) & (ages <= high)


def domain_coverage(head: AgeHead, logits: np.ndarray, ages: np.ndarray, domains: np.ndarray,
                    target: float, min_faces: int = 1) -> float:
    """Coverage averaged over the domains with at least ``min_faces`` faces, each domain weighing the same
    (so 2,000 UTKFace faces do not drown 700 mugshots); the plain coverage when there is one domain."""
    hit = inside(head, logits, ages, target)
    shares = [hit[domains == d].mean() for d in np.unique(domains) if (domains == d).sum() >= min_faces]
    return float(np.mean(shares)) if shares else float("nan")


def fit_temperature(head: AgeHead, logits: np.ndarray, ages: np.ndarray, domains: np.ndarray,
                    target: float = 0.8, min_faces: int = 1) -> float:
    """The grid temperature whose domain-averaged coverage is closest to ``target`` (ties: nearest 1).

    Widening (temperatures above 1) is considered only up to the one with the highest coverage: past it the
    distribution is so flat that its central interval drifts to the middle of the age range and leaves the
    faces' true ages at its ends, so coverage falls again. Children's ages, near the bottom of the range,
    would otherwise be "calibrated" to 80 % by an interval of 10-90 years.
    """
    coverages = np.array([domain_coverage(head.with_temperature(t), logits, ages, domains, target, min_faces)
                          for t in TEMPERATURES])
    one = int(np.searchsorted(TEMPERATURES, 1.0))
    sane = TEMPERATURES[: one + int(np.argmax(coverages[one:])) + 1]
    scores = np.round(np.abs(coverages[: len(sane)] - target), 6)
    return float(sane[np.lexsort((np.abs(np.log(sane)), scores))[0]])


def fit_band_temperatures(head: AgeHead, logits: np.ndarray, ages: np.ndarray, domains: np.ndarray | None = None,
                          target: float = 0.8, edges: tuple[int, ...] = INTERVAL_BAND_EDGES) -> AgeHead:
    """``head`` with one interval temperature per predicted-age band, each fitted on its band's faces so
    that the band's coverage, averaged over the domains (datasets) present in it, is ``target``.

    Args:
        head: the age head (any interval calibration it has is replaced).
        logits: its (N, K) raw output on labelled faces.
        ages: their true ages.
        domains: which dataset each face comes from (None: one domain).
        target: the interval level.
        edges: predicted-age band edges.

    Returns:
        The calibrated head; a band with fewer than :data:`MIN_INTERVAL_BAND_FACES` faces in every
        domain gets the temperature fitted on all faces.
    """
    domains = np.zeros(len(ages), dtype=int) if domains is None else np.asarray(domains)
    plain = head.with_temperature(1.0)
    overall = fit_temperature(plain, logits, ages, domains, target)
    band = plain.band_of(plain.distributions(logits)[0], edges)
    temps = []
    for b in range(len(edges) + 1):
        sel = band == b
        enough = any((domains[sel] == d).sum() >= MIN_INTERVAL_BAND_FACES for d in np.unique(domains[sel]))
        temps.append(fit_temperature(plain, logits[sel], ages[sel], domains[sel], target,
                                     MIN_INTERVAL_BAND_FACES) if enough else overall)
    return plain.with_band_temperatures(edges, temps)


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


def calibrate_bundle(bundle_dir: Path, cache_dir: Path, split_file: Path | str, *, split: str = "val",
                     target: float = 0.8, batch_size: int = 128, by_band: bool = True) -> Calibration:
    """Fit the interval temperature(s) on ``split`` and write them into the bundle's manifest.

    The faces' datasets (the cache's ``source`` column: one cache may hold UTKFace and MORPH) are the
    domains: each weighs the same in the fit, so the interval is made to hold on all of them, not just on
    the largest (issue 33). ``by_band`` fits one temperature per predicted-age band
    (:data:`INTERVAL_BAND_EDGES`), else one for all faces.
    """
    bundle = ModelBundle.load(bundle_dir)
    head = bundle.spec.age
    if head.type not in ("distribution", "buckets"):
        raise InvalidValueError(f"{bundle_dir}: a {head.type} age head has no distribution to calibrate")
    outputs, rows = split_outputs(bundle, cache_dir, Path(split_file), split, batch_size)
    logits = outputs[head.output].astype(np.float64)
    ages = rows["age"].to_numpy(dtype=np.float64)
    domains = row_sources(rows)
    before = domain_coverage(head.with_temperature(1.0), logits, ages, domains, target)
    if by_band:
        fitted = fit_band_temperatures(head, logits, ages, domains, target)
    else:
        fitted = head.with_temperature(fit_temperature(head, logits, ages, domains, target))
    hit = inside(fitted, logits, ages, target)
    shares = {str(d): float(hit[domains == d].mean()) for d in np.unique(domains)}
    after = float(np.mean(list(shares.values())))  # = domain_coverage(fitted, ...), without a second decode
    by_domain = {d: round(v, 4) for d, v in shares.items()}
    manifest = bundle.spec.with_age(fitted).to_manifest()
    manifest.setdefault("training", {})["interval_calibration"] = {
        "split": split, "target": target, "temperature": fitted.temperature, "faces": len(rows),
        "bands_by": "predicted age" if by_band else None,
        "temperature_edges": list(fitted.temperature_edges), "temperatures": list(fitted.temperatures),
        "domains_weighed_equally": sorted(by_domain), "coverage_by_domain": by_domain,
        "coverage_before": round(before, 4), "coverage_after": round(after, 4),
    }
    write_bundle(bundle.root, bundle.graph_path, manifest)
    return Calibration(fitted.temperature, before, after, len(rows), fitted.temperatures, by_domain)


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
