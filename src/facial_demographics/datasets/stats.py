"""Dataset statistics: what was used and rejected (and why), age/gender/race balance, a histogram.

The numbers are the ones the seed report quoted ("90.4 % of images between 21 and 75"), computed
from any reader's result so every dataset gets the same report. Rejection reasons follow the readers'
``"<category>: <detail>"`` convention and are summarised by category.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from facial_demographics.datasets.records import RACE_LABELS, ReadResult, Rejected
from facial_demographics.labels import AGE_BANDS, AGE_GROUPS, GENDER_LABELS, age_band, age_group

GENDER_KEYS = (*GENDER_LABELS, "unknown")
#: Group columns with more distinct values than this (file names, ids) are not tabulated.
MAX_GROUP_VALUES = 30
EXAMPLES = 5  # items shown per rejection reason


def reason_category(reason: str) -> str:
    """The part of a rejection reason before the first colon ("age out of range: 104 ..." -> category)."""
    return reason.split(":", 1)[0].strip()


def _summarise(items: list[Rejected]) -> dict[str, Any]:
    counts = Counter(reason_category(r.reason) for r in items)
    return {
        "count": len(items),
        "by_reason": dict(counts.most_common()),
        "items": [{"item": r.item, "reason": r.reason} for r in items],
    }


def _value_order(item: tuple[str, int]) -> tuple[int, int, str]:
    """Race labels in UTKFace's code order, then any other value by decreasing count."""
    value, count = item
    position = RACE_LABELS.index(value) if value in RACE_LABELS else len(RACE_LABELS)
    return position, -count, value


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def compute_stats(result: ReadResult, *, age_range: tuple[float, float] = (21, 75)) -> dict[str, Any]:
    """Counts and balances of a reader's result, JSON-ready.

    ``partly_malformed`` lists records that were used although their source entry had problems
    (UTKFace names without a race field, for one); it is empty for readers that report none.
    """
    records = result.records
    ages = [r.age for r in records if r.age is not None]
    genders = Counter("unknown" if r.gender is None else GENDER_LABELS[r.gender] for r in records)

    by_year: dict[int, Counter[str]] = {}
    for r in records:
        if r.age is not None:
            by_year.setdefault(int(r.age), Counter())[
                "unknown" if r.gender is None else GENDER_LABELS[r.gender]] += 1
    lo, hi = age_range
    inside = sum(lo <= a <= hi for a in ages)
    buckets = Counter(age_group(a) for a in ages)
    bands = Counter(age_band(a) for a in ages)

    group_values: dict[str, Counter[str]] = {}
    for r in records:
        for name, value in r.groups.items():
            group_values.setdefault(name, Counter())[value] += 1
    groups = {
        name: {**dict(sorted(counts.items(), key=_value_order)),
               "unknown": len(records) - sum(counts.values())}
        for name, counts in sorted(group_values.items()) if len(counts) <= MAX_GROUP_VALUES
    }
    known_gender = genders["male"] + genders["female"]
    notes: list[Rejected] = list(getattr(result, "notes", []))
    return {
        "source": result.source,
        "seen": result.seen,
        "used": len(records),
        "rejected": _summarise(result.rejected),
        "partly_malformed": _summarise(notes),
        "age": {
            "known": len(ages),
            "unknown": len(records) - len(ages),
            "min": min(ages, default=None),
            "max": max(ages, default=None),
            "mean": round(statistics.fmean(ages), 2) if ages else None,
            "median": statistics.median(ages) if ages else None,
            "by_year": {str(year): {g: by_year[year][g] for g in GENDER_KEYS} | {
                "total": sum(by_year[year].values())} for year in sorted(by_year)},
            "buckets5": {name: buckets[name] for name in AGE_GROUPS},
            "bands": {name: bands[name] for name in AGE_BANDS},
            "in_range": {"lo": lo, "hi": hi, "count": inside, "share": _share(inside, len(ages))},
        },
        "gender": {**{g: genders[g] for g in GENDER_KEYS},
                   "female_share": _share(genders["female"], known_gender)},
        "race": groups.get("race"),
        "groups": {k: v for k, v in groups.items() if k != "race"},
    }


def plot_age_histogram(stats: dict[str, Any], path: str | Path) -> Path:
    """Bars per year of age, stacked by gender (Agg canvas: no display, no global backend switch)."""
    by_year = stats["age"]["by_year"]
    years = [int(y) for y in by_year]
    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    bottom = [0] * len(years)
    for gender, colour in zip(GENDER_KEYS, ("tab:blue", "tab:orange", "tab:gray"), strict=True):
        heights = [by_year[str(y)][gender] for y in years]
        if any(heights):
            ax.bar(years, heights, width=1.0, bottom=bottom, color=colour, label=gender)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    rng = stats["age"]["in_range"]
    if years:
        ax.axvspan(rng["lo"] - 0.5, rng["hi"] + 0.5, color="green", alpha=0.08,
                   label=f"{rng['lo']}-{rng['hi']}: {100 * (rng['share'] or 0):.1f} %")
        ax.legend()
    ax.set_xlabel("age (years)")
    ax.set_ylabel("images")
    ax.set_title(f"Age distribution: {Path(stats['source']).name} ({stats['age']['known']} known ages)")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    return path


def write_stats(stats: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``stats.json`` and ``age_histogram.png`` into ``out_dir`` (created when missing)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "stats.json"
    json_path.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return json_path, plot_age_histogram(stats, out / "age_histogram.png")
