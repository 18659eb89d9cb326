"""Markdown tables for the model card from ``evaluate``'s metrics.json files (what the card quotes).

    PYTHONPATH=src .venv/bin/python benchmarks/card_tables.py "0.4.0 fp32=out/eval-test/metrics.json" \\
        "0.3.0 fp32=out/eval-test/compare/1-fp32-0.3.0/metrics.json"

Prints, for the models given (first = the main one): the headline side by side, the main model's table by
true age band, by race and by gender, and every ``domains`` entry (out-of-domain datasets) side by side
with its bias and coverage by true age.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def pct(v: Any, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f} %"


def num(v: Any, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


HEADLINE = (("MAE", lambda m: num(m["mae"]) + (f" ({num(m['mae_ci95'][0])}–{num(m['mae_ci95'][1])})"
                                                if m.get("mae_ci95") else "")),
            ("RMSE", lambda m: num(m["rmse"])), ("signed bias", lambda m: num(m["bias"])),
            ("CS@5", lambda m: pct(m["cs5"])), ("5-bucket accuracy", lambda m: pct(m["bucket5_accuracy"])),
            ("gender accuracy", lambda m: pct(m["gender_accuracy"], 2)),
            ("gender, men / women", lambda m: f"{pct(m['gender_recall']['male'])} / "
                                              f"{pct(m['gender_recall']['female'])}"),
            ("gender ECE", lambda m: num(m["gender_ece"], 4)),
            ("80 % interval coverage", lambda m: pct(m["interval_coverage"])),
            ("gender accuracy, ages 20+", lambda m: pct(m["gender_by_age_band"]["20+"]["gender_accuracy"], 2)),
            ("race spread of age-standardised MAE",
             lambda m: num(m["gaps"].get("race", {}).get("mae_age_std", {}).get("gap"))))


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def groups(groups_: dict[str, Any], name: str) -> str:
    rows = [[g, str(m["n"]), num(m["mae"]), num(m.get("mae_age_std")), num(m["bias"]), pct(m["cs5"]),
             pct(m["gender_accuracy"]), pct(m["interval_coverage"])] for g, m in groups_.items()]
    return table([name, "n", "MAE", "age-std. MAE", "bias", "CS@5", "gender acc.", "coverage"], rows)


def main(args: list[str]) -> int:
    models = []
    for arg in args:
        label, _, path = arg.partition("=")
        models.append((label, json.loads(Path(path).read_text())))
    if not models:
        print(__doc__)
        return 2
    print(table(["metric", *[label for label, _ in models]],
                [[name, *[get(m) for _, m in models]] for name, get in HEADLINE]), end="\n\n")
    main_m = models[0][1]
    bands = [[b, str(v["n"]), num(v["mae"]), num(v["bias"]), pct(v["cs5"]), pct(v["interval_coverage"])]
             for b, v in main_m["by_age_band"].items() if v["n"]]
    print(table(["true age", "n", "MAE", "bias", "CS@5", "coverage"], bands), end="\n\n")
    if main_m.get("by_race"):
        print(groups(main_m["by_race"], "race"), end="\n\n")
    print(groups(main_m["by_gender"], "gender"), end="\n\n")
    for name in main_m.get("domains", {}):
        rows = []
        for label, m in models:
            d = m.get("domains", {}).get(name)
            if d is None:
                continue
            by = ", ".join(f"{b}: {num(v['bias'])} / {pct(v['interval_coverage'], 0)}"
                           for b, v in d["by_age_band"].items())
            rows.append([label, str(d["n"]), num(d["mae"]), pct(d["cs5"]), num(d["bias"]),
                         pct(d["interval_coverage"]), f"{pct(d['gender_recall']['male'])} / "
                         f"{pct(d['gender_recall']['female'])}", by])
        print(f"Out of domain: {name}\n")
        print(table(["model", "n", "MAE", "CS@5", "bias", "coverage", "gender men / women",
                     "bias / coverage by true age"], rows), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
