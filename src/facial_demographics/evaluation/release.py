"""When a new model may replace the shipped one, and how far it is from the targets.

Both rules read ``metrics.json`` files written by ``evaluate`` (see the package docstring for the keys),
so they can be applied to any two evaluations of the same images:

- :func:`release_checks`: the candidate must beat the reference on the **validation** split in age MAE
  and in gender accuracy, and no race or gender group may get worse by more than ``group_tolerance``
  years of MAE (the raw group MAE; the age-standardised one is reported next to it, not gated, because
  in small groups it rests on a handful of faces per band). When the evaluations also measured other
  datasets (``evaluate --domain``, the ``domains`` key), the rule is the one issue 33 set: the candidate
  must not lose in domain (MAE and gender accuracy no worse, groups as before) and must gain out of domain
  (a lower MAE on every other dataset, gender accuracy there no worse).
- :func:`target_checks`: the model-0.3 targets (issue 15) or, with :func:`v04_targets`, issue 33's
  targets in and out of domain; meant for the **test** split, measured once.

Each returns :class:`Check` rows; a caller prints them (``benchmarks/release_gate.py``) and a model card
quotes them, so "missed by how much" is computed in one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from facial_demographics.labels import GENDER_AGE_BANDS

Metrics = Mapping[str, Any]

#: How much worse (years of MAE) any race or gender group may get for a release.
GROUP_TOLERANCE = 0.2
#: The attributes whose groups the release rule protects.
GROUP_ATTRIBUTES = ("by_race", "by_gender")


@dataclass(frozen=True)
class Check:
    """One rule applied to one number.

    Attributes:
        name: what is checked, e.g. ``"age MAE"`` or ``"race Black MAE"``.
        value: the candidate's (or the model's) number; None when the metric is missing.
        limit: the reference value or the target it is held to.
        passed: whether the rule holds (False when ``value`` is missing).
        margin: how far ``value`` is inside (> 0) or outside (< 0) the rule, in the metric's unit.
        rule: the rule in words, e.g. ``"< 4.486"`` or ``"≤ 3.224 + 0.20"`` (reference plus tolerance).
    """

    name: str
    value: float | None
    limit: float
    passed: bool
    margin: float | None
    rule: str


def _at(metrics: Metrics, path: tuple[str, ...]) -> float | None:
    """The number at a key path, or None when any key is missing or the value is not a finite number."""
    node: Any = metrics
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
        return None
    return float(node)


def _check(name: str, value: float | None, limit: float, *, lower_is_better: bool, rule: str,
           strict: bool = False) -> Check:
    """A Check for ``value`` against ``limit``; ``strict`` requires a strict improvement."""
    if value is None:
        return Check(name, None, limit, False, None, rule)
    margin = (limit - value) if lower_is_better else (value - limit)
    passed = margin > 0 if strict else margin >= 0
    return Check(name, value, limit, passed, margin, rule)


def release_checks(candidate: Metrics, reference: Metrics, *,
                   group_tolerance: float = GROUP_TOLERANCE) -> list[Check]:
    """The release rule: better overall MAE and gender accuracy, no group's MAE worse by > tolerance.

    Args:
        candidate: ``metrics.json`` of the new model on the validation split.
        reference: ``metrics.json`` of the shipped model on the same images.
        group_tolerance: years of MAE any race or gender group may lose.

    Returns:
        Overall MAE, overall gender accuracy, then one check per race and gender group present in the
        reference (a group missing from the candidate fails).

    Raises:
        ValueError: when the two evaluations are not of the same images (different counts), so a
            comparison would mean nothing.
    """
    n_c, n_r = _at(candidate, ("counts", "evaluated")), _at(reference, ("counts", "evaluated"))
    if n_c != n_r or _at(candidate, ("n_age",)) != _at(reference, ("n_age",)):
        raise ValueError(f"not the same images: candidate evaluated {n_c}, reference {n_r}; "
                         "evaluate both on the same split (evaluate --compare does)")
    mae_ref = _at(reference, ("mae",))
    gender_ref = _at(reference, ("gender_accuracy",))
    if mae_ref is None or gender_ref is None:
        raise ValueError("the reference metrics have no overall MAE or gender accuracy")
    domains = sorted(reference.get("domains") or {})
    # With other datasets measured, the in-domain numbers only have to hold: the gain is asked for out of
    # domain, where the model has the most to win (issue 33).
    gain = not domains
    word = "<" if gain else "≤"
    checks = [
        _check("age MAE", _at(candidate, ("mae",)), mae_ref, lower_is_better=True, strict=gain,
               rule=f"{word} {mae_ref:.3f}"),
        _check("gender accuracy", _at(candidate, ("gender_accuracy",)), gender_ref, lower_is_better=False,
               strict=gain, rule=f"{'>' if gain else '≥'} {gender_ref:.4f}"),
    ]
    for attribute in GROUP_ATTRIBUTES:
        for group in sorted(reference.get(attribute) or {}):
            ref = _at(reference, (attribute, group, "mae"))
            if ref is None:
                continue
            label = f"{attribute.removeprefix('by_')} {group} MAE"
            checks.append(_check(label, _at(candidate, (attribute, group, "mae")), ref + group_tolerance,
                                 lower_is_better=True, rule=f"≤ {ref:.3f} + {group_tolerance:.2f}"))
    return checks + [c for name in domains for c in _domain_checks(candidate, reference, name)]


def _domain_checks(candidate: Metrics, reference: Metrics, name: str) -> list[Check]:
    """Out of domain: a strictly lower MAE and no lower gender accuracy on dataset ``name``."""
    where = ("domains", name)
    if _at(candidate, (*where, "n")) != _at(reference, (*where, "n")):
        raise ValueError(f"{name}: not the same images for candidate and reference (evaluate --compare does)")
    checks = []
    for key, label, lower in (("mae", "MAE", True), ("gender_accuracy", "gender accuracy", False)):
        ref = _at(reference, (*where, key))
        if ref is None:
            continue
        checks.append(_check(f"{name} {label}", _at(candidate, (*where, key)), ref, lower_is_better=lower,
                             strict=lower, rule=f"{'<' if lower else '≥'} {ref:.4g}"))
    return checks


@dataclass(frozen=True)
class Target:
    """One target: a metric (by key path or a function of the metrics), a bound and its direction."""

    name: str
    get: Callable[[Metrics], float | None]
    limit: float
    lower_is_better: bool
    unit: str = ""

    def check(self, metrics: Metrics) -> Check:
        """This target applied to one evaluation."""
        sign = "≤" if self.lower_is_better else "≥"
        return _check(self.name, self.get(metrics), self.limit, lower_is_better=self.lower_is_better,
                      rule=f"{sign} {self.limit:g}{self.unit}")


def _key(*path: str) -> Callable[[Metrics], float | None]:
    return lambda m: _at(m, path)


def _worst_band_ece(metrics: Metrics) -> float | None:
    """The largest gender ECE over :data:`GENDER_AGE_BANDS` (not the ``20+`` summary row beside them)."""
    bands = metrics.get("gender_by_age_band") or {}
    values = [_at(bands, (band, "gender_ece")) for band in GENDER_AGE_BANDS]
    known = [v for v in values if v is not None]
    return max(known) if known else None


#: Issue 15's targets for model 0.3 (test split, measured once). Coverage has a two-sided band, so it is
#: two targets.
V03_TARGETS: tuple[Target, ...] = (
    Target("age MAE", _key("mae"), 4.0, lower_is_better=True),
    Target("CS@5", _key("cs5"), 0.72, lower_is_better=False),
    Target("gender accuracy", _key("gender_accuracy"), 0.955, lower_is_better=False),
    Target("gender accuracy, ages 20+", _key("gender_by_age_band", "20+", "gender_accuracy"), 0.975,
           lower_is_better=False),
    Target("5-bucket accuracy", _key("bucket5_accuracy"), 0.84, lower_is_better=False),
    Target("race spread of age-standardised MAE", _key("gaps", "race", "mae_age_std", "gap"), 0.6,
           lower_is_better=True, unit=" y"),
    Target("80 % interval coverage, low end", _key("interval_coverage"), 0.78, lower_is_better=False),
    Target("80 % interval coverage, high end", _key("interval_coverage"), 0.82, lower_is_better=True),
    Target("children 0-12 MAE", _key("by_age_band", "0-12", "mae"), 1.6, lower_is_better=True),
    Target("gender ECE, worst age band", _worst_band_ece, 0.02, lower_is_better=True),
)


def target_checks(metrics: Metrics, targets: tuple[Target, ...] = V03_TARGETS) -> list[Check]:
    """Each target applied to one evaluation (meant for the test split)."""
    return [t.check(metrics) for t in targets]


def _abs(*path: str) -> Callable[[Metrics], float | None]:
    def get(m: Metrics) -> float | None:
        value = _at(m, path)
        return None if value is None else abs(value)
    return get


def v04_targets(domain: str) -> tuple[Target, ...]:
    """Issue 33's targets for model 0.4: in domain (UTKFace test) and on ``domain``, the other dataset
    (its ``domains`` entry; MORPH in the issue). A bias target bounds the absolute mean signed error."""
    d = ("domains", domain)
    return (
        Target(f"{domain} age MAE", _key(*d, "mae"), 6.3, lower_is_better=True),
        Target(f"{domain} |bias|", _abs(*d, "bias"), 1.0, lower_is_better=True, unit=" y"),
        Target(f"{domain} |bias|, ages 60-79", _abs(*d, "by_age_band", "60-79", "bias"), 2.0,
               lower_is_better=True, unit=" y"),
        Target(f"{domain} 80 % interval coverage", _key(*d, "interval_coverage"), 0.76, lower_is_better=False),
        Target(f"{domain} gender accuracy, women", _key(*d, "gender_recall", "female"), 0.93,
               lower_is_better=False),
        Target("age MAE", _key("mae"), 4.29, lower_is_better=True),
        Target("gender accuracy", _key("gender_accuracy"), 0.945, lower_is_better=False),
        Target("80 % interval coverage, low end", _key("interval_coverage"), 0.78, lower_is_better=False),
        Target("80 % interval coverage, high end", _key("interval_coverage"), 0.82, lower_is_better=True),
    )
