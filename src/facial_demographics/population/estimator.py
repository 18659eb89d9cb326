"""Population shares by age band and gender, with intervals, from per-face distributions.

Method (``em``, the default; chosen by ``benchmarks/population.py`` on cross-fitted validation populations):

1. Each face gives an age distribution over the years 0..100 and a calibrated P(female).
2. Those distributions carry the prior of the data the model learnt from: a face between two ages leans
   to the one that was more common in training, which is why tallying point ages inflates the dense
   middle. EM prior adjustment (Saerens, Latinne & Decaestecker 2002) divides that prior out and finds the
   population's own age mix: repeat ``r_ia ∝ p_ia * pi_a / t_a``, ``pi = mean_i r_i`` until it settles,
   where ``t`` is the model's effective prior measured on validation faces (:class:`PopulationCalibration`,
   stored in the bundle). Neighbouring years are nearly indistinguishable, so plain EM over 101 years
   overfits; each step smooths ``pi`` along age (EMS, Silverman et al. 1990). Band shares are sums of
   ``pi``; the gender of each band spreads each face's P(female) over the bands by its adjusted age
   posterior ``r_i`` (adjusting gender too was measured worse).
3. A likelihood-ratio test keeps the model's own prior when the faces give no evidence of a shifted age
   mix (twice the log-likelihood gain of step 2 below ``max(floor, rate * faces)``, both measured on
   validation populations of UTKFace's mix): there the adjustment only adds noise.
4. Intervals come from a bootstrap: faces are resampled (the sampling uncertainty; at most 1,500 a
   replicate, the spread scaled to the full count) and step 2 is repeated with step 3's decision; each
   replicate also draws the population's realised share around its estimate from the per-face posteriors
   (the per-face uncertainty: sum of r(1-r), a normal approximation), and the model's own bias measured on
   shifted validation populations is added (``systematic`` in the calibration). The reported low and high
   are the replicates' quantiles.

``sum`` (mean posterior, no adjustment), ``pacc`` (adjusted probabilistic classify-and-count with the
validation confusion matrix) and ``count`` (tally of point estimates) remain for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidValueError
from ..labels import GENDER_LABELS, MAX_AGE
from .bands import AgeBands
from .calibration import PopulationCalibration

METHODS: tuple[str, ...] = ("em", "pacc", "sum", "count")
DEFAULT_INTERVAL = 0.9
DEFAULT_REPLICATES = 100
#: EMS smoothing along age (years); chosen by benchmarks/population.py on validation.
DEFAULT_SMOOTHING = 1.5
#: EM stops when no cell share moves more than this (a thousandth of a percentage point).
_EM_TOL = 1e-5
_EM_MAX_ITER = 500


@dataclass(frozen=True)
class Evidence:
    """What the estimator reads: one row per counted unit (a face, or a person in a video).

    ``age_probs`` is (N, 101) over ages 0..100 (rows sum to 1); ``p_female`` is (N,), NaN where the
    model has no gender head.
    """

    age_probs: np.ndarray
    p_female: np.ndarray

    def __post_init__(self) -> None:
        if self.age_probs.ndim != 2 or self.age_probs.shape[1] != MAX_AGE + 1:
            raise InvalidValueError(f"age_probs must be (N, {MAX_AGE + 1}), got {self.age_probs.shape}")
        if self.p_female.shape != (len(self.age_probs),):
            raise InvalidValueError("p_female must have one value per row of age_probs")

    def __len__(self) -> int:
        return len(self.age_probs)

    @property
    def has_gender(self) -> bool:
        return len(self) > 0 and not np.isnan(self.p_female).any()


@dataclass(frozen=True)
class Share:
    """One row of a summary: a share of the population (0..1), its interval and the implied count."""

    share: float
    low: float
    high: float
    count: float

    def to_dict(self) -> dict[str, float]:
        return {"share": round(self.share, 4), "low": round(self.low, 4), "high": round(self.high, 4),
                "count": round(self.count, 1)}


@dataclass
class PopulationSummary:
    """Estimated make-up of a population; :meth:`to_dict` is the ``summary.json`` contract.

    ``age`` and ``age_gender`` follow ``bands``; ``gender`` and ``age_gender`` are empty when the model has
    no gender head. ``people`` is set when the units are people (a video's tracks), not faces.
    """

    faces: int
    people: int | None
    interval: float
    method: str
    bands: AgeBands
    age: list[Share]
    gender: list[Share]
    age_gender: list[list[Share]]  # [band][gender]
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def units(self) -> int:
        return self.people if self.people is not None else self.faces

    def to_dict(self) -> dict[str, Any]:
        names = self.bands.names
        return {
            "faces": self.faces, "people": self.people, "interval": self.interval, "method": self.method,
            "bands": list(names),
            "age": [{"band": b, **s.to_dict()} for b, s in zip(names, self.age, strict=True)],
            "gender": [{"gender": g, **s.to_dict()} for g, s in zip(GENDER_LABELS[::-1], self.gender[::-1],
                                                                    strict=False)],
            "age_gender": [{"band": b, "gender": g, **row[k].to_dict()}
                           for b, row in zip(names, self.age_gender, strict=False)
                           for k, g in ((1, "female"), (0, "male"))],
            **self.context,
        }


# -- point estimators (weighted), each returning joint shares over (gender, band), shape (2, B) ---------
def _joint(ev: Evidence, band_matrix: np.ndarray) -> np.ndarray:
    """(N, 2, B) joint posteriors; a face without gender gets 0.5/0.5 (only its age margin is used)."""
    q = ev.age_probs @ band_matrix
    pf = np.nan_to_num(ev.p_female, nan=0.5)
    return np.stack([q * (1 - pf)[:, None], q * pf[:, None]], axis=1)


def _smooth(pi: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of per-year shares along age, mass kept (reflected at 0 and 100)."""
    if sigma <= 0:
        return pi
    half = int(np.ceil(3 * sigma))
    x = np.arange(-half, half + 1)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = np.convolve(np.pad(pi, half, mode="reflect"), kernel, mode="valid")
    return out / out.sum()


def _ems(probs: np.ndarray, prior: np.ndarray, sigma: float, start: np.ndarray | None = None) -> np.ndarray:
    """EM prior adjustment with smoothing (EMS) over age years; returns the (101,) per-year shares.

    ``probs`` is (N, 101) float32: each face's age distribution. Dividing by the model's effective prior
    turns it into a likelihood up to a per-face factor. Plain EM on 101 years overfits (neighbouring years
    are nearly indistinguishable), so each step smooths the shares along age (Silverman et al. 1990's EMS).
    """
    like = probs / np.maximum(prior, 1e-12).astype(np.float32)
    pi = (prior if start is None else start).astype(np.float32)
    for _ in range(_EM_MAX_ITER):
        post = like * pi
        post /= np.maximum(post.sum(axis=1, keepdims=True), 1e-30)
        new = _smooth(post.mean(axis=0, dtype=np.float64), sigma).astype(np.float32)
        done = np.abs(new - pi).max() < _EM_TOL
        pi = new
        if done:
            break
    return pi.astype(np.float64)


def _simplex_lstsq(m: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin ||M x - y|| with x >= 0 and sum x = 1 (projected gradient; B is small)."""
    from scipy.optimize import nnls

    big = 1e3  # the sum-to-one row, weighted so it holds almost exactly
    a = np.vstack([m, big * np.ones(m.shape[1])])
    x, _ = nnls(a, np.append(y, big))
    return x / max(x.sum(), 1e-12)


def _pacc(ev: Evidence, sel: Any, band_matrix: np.ndarray, cal: PopulationCalibration) -> np.ndarray:
    q = ev.age_probs[sel] @ band_matrix
    age = _simplex_lstsq(cal.band_confusion(band_matrix), q.mean(axis=0))
    pf = np.nan_to_num(ev.p_female[sel], nan=0.5)
    mass = q.sum(axis=0)
    mean_pf = np.divide(pf @ q, mass, out=np.full(len(mass), 0.5), where=mass > 0)
    fpr, tpr = cal.gender_rates(band_matrix)
    female = np.clip(np.divide(mean_pf - fpr, tpr - fpr, out=mean_pf.copy(), where=(tpr - fpr) > 0.05), 0, 1)
    return np.stack([age * (1 - female), age * female])


def _count(ev: Evidence, sel: Any, bands: AgeBands) -> np.ndarray:
    age = ev.age_probs[sel] @ np.arange(MAX_AGE + 1)
    idx = bands.index(age)
    female = np.nan_to_num(ev.p_female[sel], nan=0.5) >= 0.5
    out = np.zeros((2, len(bands)))
    np.add.at(out, (female.astype(int), idx), 1.0)
    return out / len(age)


class _Estimator:
    """One method bound to the evidence and bands; ``shares(rows)`` gives (2, B) joint shares and is
    called once for the estimate and once per bootstrap replicate.

    ``em`` adjusts the age distribution only: gender keeps each face's calibrated P(female), spread over
    the bands by the face's adjusted age posterior. Adjusting gender as well (EM over gender x year) was
    measured worse: 2.0 points of female-share error on UTKFace's own mix against 0.4 without.
    """

    def __init__(self, ev: Evidence, bands: AgeBands, method: str, cal: PopulationCalibration | None,
                 smoothing: float) -> None:
        self.ev, self.bands, self.method, self.cal, self.smoothing = ev, bands, method, cal, smoothing
        self.band_matrix = bands.matrix()
        self.joint = _joint(ev, self.band_matrix)
        self.pf = np.nan_to_num(ev.p_female, nan=0.5)
        self.probs: np.ndarray | None = None
        self.prior: np.ndarray | None = None
        if method == "em" and cal is not None:
            self.probs = ev.age_probs.astype(np.float32)  # the EM's cost is a few passes over this per step
            prior = cal.mean_posterior.sum(axis=0)
            self.prior = prior / prior.sum()
        self.start: np.ndarray | None = None  # the full-data answer, a warm start for the replicates
        self.last: np.ndarray | None = None  # per-year shares of the latest em call
        self.last_post: np.ndarray | None = None  # and the per-face (n, 2, B) posteriors under them
        self.last_test: tuple[float, float, bool] | None = None  # the latest shift test
        self.decision: bool | None = None  # the full data's answer to it, which the replicates keep

    def shares(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(2, B) shares over the faces ``rows`` (indices, repeats allowed; None: all faces)."""
        sel = slice(None) if rows is None else rows
        if self.method == "count":
            return _count(self.ev, sel, self.bands)
        if self.method == "pacc" and self.cal is not None:
            return _pacc(self.ev, sel, self.band_matrix, self.cal)
        if self.probs is None or self.prior is None:  # "sum", or no calibration to adjust with
            return self.joint[sel].mean(axis=0)
        probs = self.probs[sel]
        shifted = _ems(probs, self.prior, self.smoothing, self.start)
        self.last_test = self._shift_test(probs, shifted)
        # No evidence of a shift: the adjustment would only add the deconvolution's noise (measured: 3.9
        # points of largest band error on UTKFace's own mix against 2.2 without), so keep the training prior.
        adjust = self.last_test[2] if self.decision is None else self.decision
        self.last = shifted if adjust else self.prior
        self.last_post = self._adjusted(sel)
        return self.last_post.mean(axis=0)

    def _shift_test(self, probs: np.ndarray, shifted: np.ndarray) -> tuple[float, float, bool]:
        """(statistic, threshold, shifted?): twice the log-likelihood gain of the adjusted age mix over the
        model's prior, against the calibration's threshold for this many faces."""
        assert self.prior is not None and self.cal is not None
        like = probs / np.maximum(self.prior, 1e-12).astype(np.float32)
        gain = 2 * float(np.log(np.maximum(like @ shifted.astype(np.float32), 1e-30)).sum()
                         - np.log(np.maximum(like @ self.prior.astype(np.float32), 1e-30)).sum())
        threshold = self.cal.shift_threshold(len(probs))
        return gain, threshold, gain > threshold

    def posteriors(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, 2, B) per-face posteriors of the faces of the latest :meth:`shares` call (``rows``) under its
        em shares (the plain ones for other methods)."""
        if self.probs is None or self.prior is None or self.last_post is None:
            return self.joint[slice(None) if rows is None else rows]
        return self.last_post

    def _adjusted(self, sel: Any) -> np.ndarray:
        assert self.probs is not None and self.prior is not None and self.last is not None
        post = self.probs[sel] * (self.last / np.maximum(self.prior, 1e-12)).astype(np.float32)
        post /= np.maximum(post.sum(axis=1, keepdims=True), 1e-30)
        band = (post @ self.band_matrix.astype(np.float32)).astype(np.float64)
        pf = self.pf[sel][:, None]
        return np.stack([band * (1 - pf), band * pf], axis=1)


def _label_noise(est: _Estimator, pi: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """The realised shares of cells, bands and genders around ``pi``, each drawn with its own per-face
    variance (sum of r(1-r) over faces; summing cell noise would treat one face's cells as independent)."""
    post = est.posteriors(rows)
    total = len(rows)
    out = []
    for p, point in ((post, pi), (post.sum(axis=1), pi.sum(axis=0)), (post.sum(axis=2), pi.sum(axis=1))):
        var = np.clip(p * (1 - p), 0, None).sum(axis=0) / total**2
        out.append(np.clip(point + rng.standard_normal(point.shape) * np.sqrt(var), 0, 1))
    return out[0], out[1], out[2]


#: The bootstrap resamples at most this many faces and scales its spread to the full count (an m-out-of-n
#: bootstrap): the estimator is smooth, so its spread shrinks as 1/sqrt(n), and 100,000 faces stay fast.
_BOOT_MAX = 1500


def _bootstrap(est: _Estimator, pi: np.ndarray, replicates: int, rng: np.random.Generator,
               ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    n = len(est.ev)
    m = min(n, _BOOT_MAX)
    scale = np.sqrt(m / n)
    cells, ages, genders = [], [], []
    for _ in range(replicates):
        rows = rng.integers(0, n, m)
        rep = est.shares(rows)
        c, a, g = _label_noise(est, rep, rows, rng)
        # Centre each draw on the full-data estimate and shrink its deviation to n faces.
        cells.append(pi + (c - pi) * scale)
        ages.append(pi.sum(axis=0) + (a - pi.sum(axis=0)) * scale)
        genders.append(pi.sum(axis=1) + (g - pi.sum(axis=1)) * scale)
    return cells, ages, genders


def estimate(ev: Evidence, bands: AgeBands | None = None, *, method: str = "em",
             calibration: PopulationCalibration | None = None, interval: float = DEFAULT_INTERVAL,
             replicates: int = DEFAULT_REPLICATES, people: int | None = None, faces: int | None = None,
             seed: int = 0, smoothing: float = DEFAULT_SMOOTHING,
             context: dict[str, Any] | None = None) -> PopulationSummary:
    """Estimate the shares and counts of each age band, gender and band x gender cell.

    Args:
        ev: the per-face (or per-person) distributions.
        bands: age bands (default: the audience brackets).
        method: ``em`` (default), ``pacc``, ``sum`` or ``count`` (see the module text).
        calibration: the bundle's population calibration; without it ``em`` and ``pacc`` fall back to
            ``sum`` and the summary's method says so.
        interval: central probability of the intervals.
        replicates: bootstrap replicates (0: no interval, low = high = share).
        people: set when each row is a person (a video's tracks); counts are then people.
        faces: the faces behind the rows, for ``summary.json``'s ``faces`` (default: one per row).
        seed: the bootstrap's random seed (the same input gives the same summary).
        smoothing: EMS smoothing along age, in years (Gaussian sigma).
        context: extra keys for ``summary.json`` (images, errors, ...).

    Returns:
        The summary.

    Raises:
        InvalidValueError: an unknown method or an interval outside (0, 1).
    """
    bands = bands or AgeBands()
    if method not in METHODS:
        raise InvalidValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 < interval < 1:
        raise InvalidValueError(f"interval must be in (0, 1), got {interval}")
    used = method if calibration is not None or method in ("sum", "count") else "sum"
    if len(ev) == 0:
        return _empty(bands, interval, used, people, context or {})
    est = _Estimator(ev, bands, used, calibration, smoothing)
    pi = est.shares()
    est.start = est.last
    test = est.last_test
    est.decision = None if test is None else test[2]
    rng = np.random.default_rng(seed)
    cells, ages, genders = _bootstrap(est, pi, replicates, rng)
    if calibration is not None and used == "em":  # what resampling cannot see: the model's own bias
        cells, ages, genders = calibration.widen(pi, cells, ages, genders, rng, test is None or test[2])
    label = used if used == method else f"{used} (no population calibration in the model; asked {method})"
    if test is not None:  # say whether the age mix was adjusted, and why
        context = {**(context or {}), "shift": {"statistic": round(test[0], 1), "threshold": round(test[1], 1),
                                                "adjusted": test[2]}}
    return _summary(pi, cells, ages, genders, bands, interval, label, len(ev), people, ev.has_gender, context,
                    faces)


def _rows(point: np.ndarray, reps: Sequence[np.ndarray], interval: float, units: int) -> list[Share]:
    flat = point.ravel()
    if reps:
        stack = np.stack([r.ravel() for r in reps])
        lo, hi = np.quantile(stack, [(1 - interval) / 2, (1 + interval) / 2], axis=0)
        # A percentile interval can miss its own point when the estimate sits on a bound: widen to include it.
        lo, hi = np.minimum(lo, flat), np.maximum(hi, flat)
    else:
        lo, hi = flat, flat
    return [Share(float(s), float(a), float(b), float(s) * units) for s, a, b in zip(flat, lo, hi, strict=True)]


def _summary(pi: np.ndarray, reps: list[np.ndarray], age_reps: list[np.ndarray], gender_reps: list[np.ndarray],
             bands: AgeBands, interval: float, method: str, n: int, people: int | None, has_gender: bool,
             context: dict[str, Any] | None, faces: int | None = None) -> PopulationSummary:
    units = people if people is not None else n
    age = _rows(pi.sum(axis=0), age_reps, interval, units)
    if has_gender:
        gender = _rows(pi.sum(axis=1), gender_reps, interval, units)
        cells = _rows(pi.T, [r.T for r in reps], interval, units)  # (B, 2) band-major
        age_gender = [cells[2 * b: 2 * b + 2] for b in range(len(bands))]
    else:
        gender, age_gender = [], []
    return PopulationSummary(n if faces is None else faces, people, interval, method, bands, age, gender, age_gender,
                             dict(context or {}))


def _empty(bands: AgeBands, interval: float, method: str, people: int | None,
           context: dict[str, Any]) -> PopulationSummary:
    """No faces: every share is unknown (0..1), every count 0."""
    blank = Share(0.0, 0.0, 1.0, 0.0)
    return PopulationSummary(0, people, interval, method, bands, [blank] * len(bands), [blank, blank],
                             [[blank, blank] for _ in range(len(bands))], dict(context))
