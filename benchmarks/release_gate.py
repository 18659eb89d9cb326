"""May a new model replace the shipped one, and how far is it from the model-0.3 targets? (issue 15)

Reads ``metrics.json`` files written by ``facial-demographics evaluate`` and prints markdown tables of
:mod:`facial_demographics.evaluation.release`'s checks:

- ``--candidate`` and ``--reference``: the new model and the shipped one on the **validation** split,
  the same images (``evaluate --split val --model NEW --compare fp32`` writes both). The release rule:
  lower MAE, higher gender accuracy, no race or gender group's MAE worse by more than 0.2 years.
- ``--targets LABEL=metrics.json`` (repeatable): issue 15's targets, for **test**-split evaluations;
  with ``--v04-domain NAME`` issue 33's targets instead, in domain and on the ``domains`` entry NAME
  (``evaluate --domain`` wrote it). When the metrics have ``domains``, the release rule is issue 33's:
  no loss in domain, a gain out of domain.

Exit status 0 when every release check passes (or none was asked for), 1 otherwise. Reproduce:

    facial-demographics evaluate --dataset ../shared/datasets/UTKFace --cropped --split val \\
        --model out/bundles/v03-teacher --compare fp32 --out out/eval-val-v03-teacher
    PYTHONPATH=src .venv/bin/python benchmarks/release_gate.py \\
        --candidate out/eval-val-v03-teacher/metrics.json \\
        --reference out/eval-val-v03-teacher/compare/1-fp32-0.2.0/metrics.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from facial_demographics.evaluation.release import V03_TARGETS, Check, release_checks, target_checks, v04_targets


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: cannot read metrics.json ({exc})") from None
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: not a metrics.json object")
    return data


def _fmt(value: float | None) -> str:
    if value is None:
        return "missing"
    return f"{value:.4f}" if abs(value) < 1 else f"{value:.3f}"


def check_table(checks: list[Check], value_header: str) -> list[str]:
    """Markdown rows: check, value, rule, margin, verdict."""
    rows = [f"| check | {value_header} | rule | margin | verdict |", "| --- | --- | --- | --- | --- |"]
    for c in checks:
        margin = "" if c.margin is None else f"{c.margin:+.4f}"
        rows.append(f"| {c.name} | {_fmt(c.value)} | {c.rule} | {margin} | {'pass' if c.passed else 'FAIL'} |")
    return rows


def _labelled(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=path/to/metrics.json")
    return label, Path(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", type=Path, help="new model's metrics.json (validation split)")
    parser.add_argument("--reference", type=Path, help="shipped model's metrics.json, same images")
    parser.add_argument("--targets", type=_labelled, action="append", default=[],
                        help="LABEL=metrics.json of a test-split evaluation (repeatable)")
    parser.add_argument("--v04-domain", metavar="NAME",
                        help="check issue 33's targets, out of domain on the domains entry NAME (e.g. morph-dev)")
    parser.add_argument("--json", type=Path, help="also write every check here")
    args = parser.parse_args()
    if (args.candidate is None) != (args.reference is None):
        parser.error("--candidate and --reference go together")
    if args.candidate is None and not args.targets:
        parser.error("nothing to check: give --candidate/--reference and/or --targets")

    out: dict[str, Any] = {}
    released = True
    if args.candidate is not None:
        try:
            checks = release_checks(_read(args.candidate), _read(args.reference))
        except ValueError as exc:
            raise SystemExit(f"{args.candidate} vs {args.reference}: {exc}") from None
        released = all(c.passed for c in checks)
        print("\n".join(["## Release rule (validation splits)", "", *check_table(checks, "candidate"), "",
                         f"release: {'yes' if released else 'no'}", ""]))
        out["release"] = {"passed": released, "checks": [asdict(c) for c in checks]}
    for label, path in args.targets:
        checks = target_checks(_read(path), v04_targets(args.v04_domain) if args.v04_domain else V03_TARGETS)
        met = sum(c.passed for c in checks)
        print("\n".join([f"## Targets: {label} ({met} of {len(checks)} met)", "",
                         *check_table(checks, label), ""]))
        out.setdefault("targets", {})[label] = [asdict(c) for c in checks]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0 if released else 1


if __name__ == "__main__":
    sys.exit(main())
