"""Which age-interval calibration holds on a domain the model was not trained on? (issue 33)

Runs a bundle over cached validation faces of two domains (UTKFace and MORPH, from one cache made by
``data prepare UTKFace morph-dev``) and compares ways to fit the interval's temperature:

- ``global, UTKFace``: one temperature fitted on UTKFace validation faces (how 0.1.0-0.3.0 were calibrated);
- ``per band, UTKFace``: one per predicted-age band (``labels.INTERVAL_BAND_EDGES``), UTKFace only;
- ``global, both`` and ``per band, both``: fitted on UTKFace and MORPH faces, each domain weighing the same;
- ``per band, both, edges 6/13/...``: the same with other band edges (``--edges 6,13,...``).

Every coverage is measured on faces the fit did not use: UTKFace validation by 2-fold cross-fitting (fit
on one half, measure the other), MORPH validation people either held out entirely (``--morph-fit train``:
the MORPH train people are the fit's MORPH faces; right for a model that never saw MORPH) or cross-fitted
too (``--morph-fit val``: for a model trained on the MORPH train people, whose own faces it has memorised).
Prints a markdown table: coverage overall and by true age, and the mean interval width (a wider interval
covers more for free, so both are shown).

    PYTHONPATH=src .venv/bin/python benchmarks/interval_calibration.py --model fp32 --morph-fit train
"""

from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facial_demographics.labels import INTERVAL_BAND_EDGES
from facial_demographics.manifest import AgeHead
from facial_demographics.model import ModelBundle
from facial_demographics.training.calibrate import fit_band_temperatures, fit_temperature, split_outputs

TARGET = 0.8
#: True-age bands the table breaks coverage down by.
REPORT_BANDS = ((0, 13, "0-12"), (13, 20, "13-19"), (20, 30, "20-29"), (30, 40, "30-39"), (40, 60, "40-59"),
                (60, 200, "60+"))


def load_sets(bundle: ModelBundle, cache_dir: Path, utk_split: str, morph_split: str,
              morph_fit: str) -> pd.DataFrame:
    """One row per face: key, domain, role ('measure' or 'fit-only'), age, logits (object column)."""
    parts = [("utkface", "measure", utk_split, "val"), ("morph", "measure", morph_split, "val")]
    if morph_fit == "train":
        parts.append(("morph", "fit-only", morph_split, "train"))
    frames = []
    for domain, role, split_file, split in parts:
        out, rows = split_outputs(bundle, cache_dir, Path(split_file), split, batch_size=128)
        frames.append(pd.DataFrame({"key": rows["key"].astype(str).to_numpy(), "domain": domain, "role": role,
                                    "age": rows["age"].to_numpy(dtype=float),
                                    "logits": list(out[bundle.spec.age.output].astype(np.float64))}))
        print(f"{domain} {role}: {len(rows)} faces")
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class Method:
    """One way to fit the interval: one temperature or one per predicted-age band (``edges``), fitted on
    UTKFace alone or on both datasets."""

    per_band: bool
    both: bool
    edges: tuple[int, ...] = INTERVAL_BAND_EDGES

    @property
    def name(self) -> str:
        name = f"{'per band' if self.per_band else 'global'}, {'both' if self.both else 'UTKFace'}"
        return name if self.edges == INTERVAL_BAND_EDGES else f"{name}, edges {'/'.join(map(str, self.edges))}"


def fit(method: Method, head: AgeHead, rows: pd.DataFrame) -> AgeHead:
    if not method.both:
        rows = rows[rows["domain"] == "utkface"]
    logits, ages = np.stack(rows["logits"]), rows["age"].to_numpy()
    domains = rows["domain"].to_numpy()
    if method.per_band:
        return fit_band_temperatures(head, logits, ages, domains, TARGET, method.edges)
    return head.with_temperature(fit_temperature(head, logits, ages, domains, TARGET))


def cross_fitted(method: Method, head: AgeHead, data: pd.DataFrame) -> pd.DataFrame:
    """Each measured face's interval from a fit that did not see it (2 folds by a hash of the key)."""
    fold = data["key"].map(lambda k: zlib.crc32(k.encode()) % 2)
    measured = []
    for k in (0, 1):
        test = (data["role"] == "measure") & (fold == k)
        calibrated = fit(method, head, data[~test])
        part = data[test].copy()
        age, low, high = calibrated.decode(np.stack(part["logits"]), TARGET)
        part["pred"], part["low"], part["high"] = age, low, high
        measured.append(part)
    return pd.concat(measured)


def row(method: str, m: pd.DataFrame) -> dict[str, object]:
    m = m.assign(hit=(m["age"] >= m["low"]) & (m["age"] <= m["high"]), width=m["high"] - m["low"])
    out: dict[str, object] = {"method": method}
    for domain, part in m.groupby("domain"):
        out[f"{domain} coverage"] = part["hit"].mean()
        out[f"{domain} width"] = part["width"].mean()
        out[f"{domain} MAE"] = (part["pred"] - part["age"]).abs().mean()
        for lo, hi, name in REPORT_BANDS:
            sel = part[(part["age"] >= lo) & (part["age"] < hi)]
            if len(sel) >= 20:
                out[f"{domain} {name}"] = sel["hit"].mean()
    return out


def markdown(table: pd.DataFrame) -> str:
    """The table as markdown (rates as percentages, widths and MAE in years)."""
    def cell(col: str, v: object) -> str:
        if not isinstance(v, float):
            return str(v)
        if np.isnan(v):
            return "–"
        return f"{v:.2f}" if col.endswith(("width", "MAE")) else f"{100 * v:.1f} %"
    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    lines += ["| " + " | ".join(cell(c, r[c]) for c in table.columns) + " |" for _, r in table.iterrows()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fp32", help="bundle name or folder")
    parser.add_argument("--cache", type=Path, default=Path("cache/utkface-morph-112"))
    parser.add_argument("--utk-split", default="splits/utkface.csv")
    parser.add_argument("--morph-split", default="splits/morph.csv")
    parser.add_argument("--morph-fit", choices=("train", "val"), default="train",
                        help="MORPH faces the fit may use: the train people (model never saw MORPH) or val "
                             "(cross-fitted; for a model trained on the MORPH train people)")
    parser.add_argument("--edges", action="append", default=[], metavar="A,B,...",
                        help="also fit 'per band, both' with these predicted-age band edges (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()
    bundle = ModelBundle.load(args.model)
    data = load_sets(bundle, args.cache, args.utk_split, args.morph_split, args.morph_fit)
    head = bundle.spec.age
    methods = [Method(per_band, both) for both in (False, True) for per_band in (False, True)]
    methods += [Method(True, True, tuple(int(e) for e in edges.split(","))) for edges in args.edges]
    table = pd.DataFrame([row(m.name, cross_fitted(m, head, data)) for m in methods])
    print(f"\nmodel {bundle.spec.name} {bundle.manifest.get('version')}; target {TARGET:.0%}; "
          f"MORPH fit faces: {args.morph_fit}\n")
    print(markdown(table))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(table.to_dict("records"), indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
