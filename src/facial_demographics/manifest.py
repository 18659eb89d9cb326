"""A bundle's manifest, validated and parsed once into frozen dataclasses.

``manifest.json`` is the contract between training and inference: input size and value range, the
alignment template and margin, how each head's logits become an answer, plus provenance (training,
licence) and the graph's sha256. :meth:`BundleSpec.parse` checks the schema and raises
:class:`BundleError` naming the first bad key; after that every consumer reads typed fields, never the
dict. The head objects decode logits themselves (:meth:`AgeHead.decode`), so calibration, evaluation and
inference share one implementation.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .alignment import AlignmentConfig
from .errors import UserError
from .labels import MAX_AGE

FORMAT_VERSION = 1
AGE_HEAD_TYPES = ("distribution", "buckets", "regression")
#: Numeric precision of a bundle's graph: "fp32" (as exported from training) or "int8" (static quantisation).
PRECISIONS = ("fp32", "int8")


class BundleError(UserError, ValueError):
    """A model bundle that cannot be used: missing files, bad manifest, hash mismatch."""


def _require(manifest: Mapping[str, Any], dotted: str, kind: type | tuple[type, ...]) -> Any:
    node: Any = manifest
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise BundleError(f"manifest: missing key '{dotted}'")
        node = node[part]
    if not isinstance(node, kind):
        raise BundleError(f"manifest: '{dotted}' must be {kind}, got {type(node).__name__}")
    return node


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, stable for large values."""
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _quantiles_from_cdf(cdf: np.ndarray, grid: np.ndarray, q: float) -> np.ndarray:
    """Per row, the value where the piecewise-linear CDF (over ``grid``) crosses q."""
    return np.array([np.interp(q, row, grid) for row in cdf])


@dataclass(frozen=True)
class InputSpec:
    """The graph's input: name, square size in pixels and the value range pixels are mapped to."""

    name: str
    size: int
    low: float
    high: float

    @classmethod
    def parse(cls, manifest: Mapping[str, Any]) -> InputSpec:
        size = _require(manifest, "input.size", int)
        if _require(manifest, "input.color", str) != "RGB":
            raise BundleError("manifest: input.color must be 'RGB'")
        if _require(manifest, "input.layout", str) != "NCHW":
            raise BundleError("manifest: input.layout must be 'NCHW'")
        value_range = _require(manifest, "input.range", list)
        if len(value_range) != 2:
            raise BundleError("manifest: input.range must be [low, high]")
        return cls(_require(manifest, "input.name", str), size, value_range[0], value_range[1])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "color": "RGB", "layout": "NCHW",
                "range": [self.low, self.high]}


@dataclass(frozen=True)
class AgeHead:
    """How the age output becomes an age and an interval.

    ``distribution``: softmax over ``values`` (one bin per year); ``buckets``: softmax over the bins
    between ``edges`` (``values`` = bin centres unless given); ``regression``: one number, with the
    interval half-width from validation residuals (``residual_quantile``, keyed by interval level).
    ``temperature`` sharpens or widens the distribution for the interval only; ``temperatures`` (optional)
    replace it with one per band of the *predicted* age split at ``temperature_edges``: a model is
    over-confident about older faces and about faces unlike its training set, and under-confident about
    children, which one temperature cannot fix at once (issue 33).
    """

    output: str
    type: str
    values: tuple[float, ...] | None = None
    edges: tuple[float, ...] | None = None
    temperature: float = 1.0
    residual_quantile: Mapping[str, float] = dataclasses.field(default_factory=dict)
    temperature_edges: tuple[float, ...] = ()
    temperatures: tuple[float, ...] = ()

    @classmethod
    def parse(cls, manifest: Mapping[str, Any]) -> AgeHead:
        kind = _require(manifest, "heads.age.type", str)
        if kind not in AGE_HEAD_TYPES:
            raise BundleError(f"manifest: heads.age.type must be one of {AGE_HEAD_TYPES}, got {kind!r}")
        output = _require(manifest, "heads.age.output", str)
        head = manifest["heads"]["age"]
        values = _require(manifest, "heads.age.values", list) if kind == "distribution" else head.get("values")
        edges = None
        if kind == "buckets":
            edges = _require(manifest, "heads.age.edges", list)
            if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise BundleError("manifest: heads.age.edges must be increasing")
        t_edges = tuple(float(e) for e in head.get("temperature_edges", ()))
        temps = tuple(float(t) for t in head.get("temperatures", ()))
        if temps and (len(temps) != len(t_edges) + 1 or any(t <= 0 for t in temps)):
            raise BundleError("manifest: heads.age.temperatures needs one positive value per band of "
                              "heads.age.temperature_edges (one more than the edges)")
        return cls(output, kind, tuple(values) if values is not None else None,
                   tuple(edges) if edges is not None else None, float(head.get("temperature", 1.0)),
                   dict(head.get("residual_quantile", {})), t_edges, temps)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"output": self.output, "type": self.type}
        if self.edges is not None:
            doc["edges"] = list(self.edges)
        if self.values is not None:
            doc["values"] = list(self.values)
        if self.temperature != 1.0:
            doc["temperature"] = self.temperature
        if self.residual_quantile:
            doc["residual_quantile"] = dict(self.residual_quantile)
        if self.temperatures:
            doc["temperature_edges"] = list(self.temperature_edges)
            doc["temperatures"] = list(self.temperatures)
        return doc

    def with_temperature(self, temperature: float) -> AgeHead:
        """This head with one interval temperature for every face (any per-band ones dropped)."""
        return dataclasses.replace(self, temperature=float(temperature), temperature_edges=(), temperatures=())

    def with_band_temperatures(self, edges: Sequence[float], temperatures: Sequence[float]) -> AgeHead:
        """This head with one interval temperature per predicted-age band (``len(edges) + 1`` of them)."""
        if len(temperatures) != len(edges) + 1:
            raise ValueError(f"{len(temperatures)} temperatures for {len(edges) + 1} bands")
        return dataclasses.replace(self, temperature_edges=tuple(float(e) for e in edges),
                                   temperatures=tuple(float(t) for t in temperatures))

    def decode(self, logits: np.ndarray, interval: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expected age and the central ``interval`` (e.g. 0.8) range, per row of the head's output.

        Args:
            logits: the head's raw output, (N, K) float64.
            interval: the interval's probability mass, in (0, 1).

        Returns:
            ``(age, low, high)``, each (N,), with ``low`` clipped at 0.
        """
        if self.type == "regression":
            age = logits.reshape(len(logits), -1)[:, 0]
            # A regressor has no distribution: the interval comes from its validation residuals.
            spread = float(self.residual_quantile.get(str(interval), 0.0))
            return age, np.maximum(age - spread, 0.0), age + spread
        probs, interval_probs = self.distributions(logits)
        return self.summarize(probs, interval_probs, interval)

    def distributions(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The age distributions and the (temperature-scaled) ones the interval comes from.

        Raises:
            ValueError: a regression head (it has no distribution).
        """
        if self.type == "regression":
            raise ValueError("a regression age head has no distribution")
        probs = softmax(logits)
        if self.temperatures:
            band = self.band_of(probs, self.temperature_edges)
            return probs, softmax(logits / np.asarray(self.temperatures)[band][:, None])
        return probs, (softmax(logits / self.temperature) if self.temperature != 1.0 else probs)

    def band_of(self, probs: np.ndarray, edges: Sequence[float]) -> np.ndarray:
        """The band of the *predicted* age (split at ``edges``) each of (N, K) distributions falls in: the rule
        the interval temperatures are fitted and applied by."""
        return np.searchsorted(np.asarray(edges, dtype=np.float64), self._point(probs), side="right")

    def _point(self, probs: np.ndarray) -> np.ndarray:
        """The point age of (N, K) distributions: the expected value, or the likeliest bucket's value."""
        if self.type == "distribution":
            return probs @ np.asarray(self.values, dtype=np.float64)
        grid = np.asarray(self.edges, dtype=np.float64)
        centres = np.asarray(self.values if self.values is not None else (grid[:-1] + grid[1:]) / 2,
                             dtype=np.float64)
        # A bucket classifier answers with its most likely bucket (the seed report's accuracy is the
        # argmax's), so its age group is the bucket it chose, as in training's validation; an expected
        # value could fall in a bucket the model ranked second.
        return centres[probs.argmax(axis=1)]

    def summarize(self, probs: np.ndarray, interval_probs: np.ndarray,
                  interval: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point age and central ``interval`` of (N, K) distributions over this head's bins (a video
        track averages its frames' distributions and summarises them here). The point age is the
        expected value for a ``distribution`` head and the most likely bucket's value for ``buckets``.

        Raises:
            ValueError: a regression head (it has no distribution).
        """
        if self.type == "distribution":
            values = np.asarray(self.values, dtype=np.float64)
            # Each bin is treated as a unit-wide interval around its value for a continuous CDF.
            grid = np.concatenate([[values[0] - 0.5], values + 0.5])
        elif self.type == "buckets":
            grid = np.asarray(self.edges, dtype=np.float64)
        else:
            raise ValueError("a regression age head has no distribution")
        age = self._point(probs)
        tail = (1.0 - interval) / 2.0
        cdf = np.concatenate([np.zeros((len(interval_probs), 1)), np.cumsum(interval_probs, axis=1)], axis=1)
        low = _quantiles_from_cdf(cdf, grid, tail)
        high = _quantiles_from_cdf(cdf, grid, 1.0 - tail)
        return age, np.maximum(low, 0.0), high

    def year_distribution(self, probs: np.ndarray, max_age: int = MAX_AGE) -> np.ndarray:
        """(N, K) distributions over this head's bins as (N, max_age + 1) distributions over whole years,
        the form population summaries read: a ``distribution`` head's value splits linearly between its two
        neighbouring years; a bucket spreads evenly over its years (ages past ``max_age`` count as it).

        Raises:
            ValueError: a regression head (it has no distribution).
        """
        if self.type == "regression":
            raise ValueError("a regression age head has no distribution")
        # The matrix depends on the head alone: built once, not for every face of every video frame.
        return probs @ _year_matrix(self.type, self.values, self.edges, probs.shape[1], max_age)


@functools.lru_cache(maxsize=16)
def _year_matrix(kind: str, values: tuple[float, ...] | None, edges: tuple[float, ...] | None, bins: int,
                 max_age: int) -> np.ndarray:
    """(bins, max_age + 1): how much of each bin goes to each whole year (see ``AgeHead.year_distribution``)."""
    years = np.zeros((bins, max_age + 1))
    if kind == "distribution":
        at = np.clip(np.asarray(values, dtype=np.float64), 0, max_age)
        lo = np.floor(at).astype(int)
        frac = at - lo
        years[np.arange(len(at)), lo] += 1 - frac
        years[np.arange(len(at)), np.minimum(lo + 1, max_age)] += frac
    else:
        grid = np.asarray(edges, dtype=np.float64)
        for k, (a, b) in enumerate(zip(grid[:-1], grid[1:], strict=True)):
            span = np.clip(np.arange(int(np.ceil(a)), int(np.ceil(b))), 0, max_age)
            np.add.at(years[k], span, 1.0 / len(span))
    years.setflags(write=False)  # shared by every call
    return years


@dataclass(frozen=True)
class GenderHead:
    """The gender output: two logits in the order of ``labels``.

    ``temperatures`` (optional) divide the logits before the softmax, one per band of the *predicted*
    age split at ``age_edges``: a network's gender confidence is right for adults and wrong for small
    children, where the cues are weak, and one temperature cannot fix both. The predicted gender (the
    argmax) never changes; only the probability shown does.
    """

    output: str
    labels: tuple[str, ...]
    age_edges: tuple[float, ...] = ()
    temperatures: tuple[float, ...] = ()

    @classmethod
    def parse(cls, manifest: Mapping[str, Any]) -> GenderHead | None:
        if manifest.get("heads", {}).get("gender") is None:
            return None
        output = _require(manifest, "heads.gender.output", str)
        labels = _require(manifest, "heads.gender.labels", list)
        if sorted(labels) != ["female", "male"]:
            raise BundleError("manifest: heads.gender.labels must be ['male', 'female'] in some order")
        cal = manifest["heads"]["gender"].get("calibration")
        if cal is None:
            return cls(output, tuple(labels))
        edges = _require(manifest, "heads.gender.calibration.age_edges", list)
        temps = _require(manifest, "heads.gender.calibration.temperatures", list)
        if len(temps) != len(edges) + 1 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise BundleError("manifest: heads.gender.calibration needs increasing age_edges and one more "
                              "temperature than edges")
        if not all(isinstance(t, (int, float)) and t > 0 for t in temps):
            raise BundleError("manifest: heads.gender.calibration.temperatures must be positive numbers")
        return cls(output, tuple(labels), tuple(float(e) for e in edges), tuple(float(t) for t in temps))

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"output": self.output, "labels": list(self.labels)}
        if self.temperatures:
            doc["calibration"] = {"age_edges": list(self.age_edges), "temperatures": list(self.temperatures)}
        return doc

    def with_calibration(self, age_edges: tuple[float, ...], temperatures: tuple[float, ...]) -> GenderHead:
        return dataclasses.replace(self, age_edges=tuple(map(float, age_edges)),
                                   temperatures=tuple(map(float, temperatures)))

    def temperature_of(self, ages: np.ndarray) -> np.ndarray:
        """The temperature each predicted age gets (1 everywhere when the head is not calibrated)."""
        ages = np.asarray(ages, dtype=np.float64)
        if not self.temperatures:
            return np.ones(len(ages))
        return np.asarray(self.temperatures)[np.searchsorted(self.age_edges, ages, side="right")]

    def p_female(self, logits: np.ndarray, ages: np.ndarray | None = None) -> np.ndarray:
        """P(female) per row of the head's (N, 2) output.

        Args:
            logits: the head's output.
            ages: the predicted age of each row; needed only by a calibrated head.

        Raises:
            ValueError: the head is calibrated and ``ages`` is missing.
        """
        if self.temperatures:
            if ages is None:
                raise ValueError("a calibrated gender head needs the predicted ages")
            logits = logits / self.temperature_of(ages)[:, None]
        return softmax(logits)[:, self.labels.index("female")]


@dataclass(frozen=True)
class BundleSpec:
    """A validated manifest. ``source`` keeps the document as written (provenance, licence, metrics).

    ``precision`` and ``tta_flip`` are optional in the document (bundles before 0.3 have neither): a
    missing ``precision`` is "fp32", a missing ``tta_flip`` is read from ``training.tta_flip``.
    """

    name: str
    version: str
    input: InputSpec
    alignment: AlignmentConfig
    age: AgeHead
    gender: GenderHead | None
    sha256: Mapping[str, str]
    source: Mapping[str, Any]
    precision: str = "fp32"
    tta_flip: bool | None = None  # whether the graph averages each face with its mirror image

    @classmethod
    def parse(cls, manifest: Mapping[str, Any]) -> BundleSpec:
        """Check the schema and build the spec.

        Raises:
            BundleError: naming the first missing or bad key.
        """
        if _require(manifest, "format", int) != FORMAT_VERSION:
            raise BundleError(
                f"manifest: unsupported format {manifest['format']} (this version reads {FORMAT_VERSION})")
        name, version = _require(manifest, "name", str), _require(manifest, "version", str)
        spec_input = InputSpec.parse(manifest)
        if _require(manifest, "alignment.size", int) != spec_input.size:
            raise BundleError("manifest: alignment.size must equal input.size")
        try:
            alignment = AlignmentConfig(size=spec_input.size,
                                        margin=float(_require(manifest, "alignment.margin", (int, float))),
                                        template=_require(manifest, "alignment.template", str))
        except ValueError as exc:
            raise BundleError(f"manifest: alignment: {exc}") from None
        age, gender = AgeHead.parse(manifest), GenderHead.parse(manifest)
        sha = _require(manifest, "sha256", dict)
        precision = manifest.get("precision", "fp32")
        if precision not in PRECISIONS:
            raise BundleError(f"manifest: precision must be one of {PRECISIONS}, got {precision!r}")
        tta = manifest.get("tta_flip", (manifest.get("training") or {}).get("tta_flip"))
        if tta is not None and not isinstance(tta, bool):
            raise BundleError(f"manifest: tta_flip must be true or false, got {tta!r}")
        return cls(name, version, spec_input, alignment, age, gender, dict(sha), copy.deepcopy(dict(manifest)),
                   precision, tta)

    def with_age(self, age: AgeHead) -> BundleSpec:
        return dataclasses.replace(self, age=age)

    def with_gender(self, gender: GenderHead) -> BundleSpec:
        return dataclasses.replace(self, gender=gender)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest document (a fresh copy), with the heads' calibration as it is now."""
        doc = copy.deepcopy(dict(self.source))
        age = doc["heads"]["age"]
        if self.age.temperature != AgeHead.parse(doc).temperature:
            age["temperature"] = self.age.temperature
        for key in ("temperature_edges", "temperatures"):
            age.pop(key, None)
        if self.age.temperatures:
            age["temperature_edges"] = list(self.age.temperature_edges)
            age["temperatures"] = list(self.age.temperatures)
        if self.gender is not None and self.gender != GenderHead.parse(doc):
            doc["heads"]["gender"] = self.gender.to_dict()
        return doc


def alignment_section(alignment: AlignmentConfig) -> dict[str, Any]:
    """The manifest's ``alignment`` object (only what inference needs to frame a face)."""
    return {"template": alignment.template, "size": alignment.size, "margin": alignment.margin}


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Check the schema; raise BundleError naming the first bad key."""
    BundleSpec.parse(manifest)
