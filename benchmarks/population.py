"""Which population estimator, and how right is it when the age mix shifts? (issue 30)

Three steps, each reading what the previous one wrote under ``--work`` (default ``out/population``):

``predict --split val|test``
    Runs the shipped pipeline (``analyze --cropped``'s path) on one split's UTKFace faces and stores each
    face's per-year age distribution and P(female) with its labels (``preds-<split>.npz``).
``bench``
    Resamples populations whose age mix differs from UTKFace's (a children's party, a crowd in their
    twenties, a retirement home, a family day out, UTKFace's own mix) and scores every method on each:
    the largest age-band share error, the female-share error and how many of the truths the 90 % intervals
    hold. On ``--split val`` the calibration is cross-fitted: measured on one half of the people, scored
    on populations drawn from the other half, and the other way round. On ``--split test`` the calibration
    is the one measured on all of val (what the bundle ships). Prints a markdown table and writes
    ``bench-<split>.json``.
``calibrate --bundle DIR [DIR ...]``
    Measures the population calibration on all of val and writes it into each bundle's manifest.

Reproduce (2 cores, about 3 min per split for ``predict``):

    PYTHONPATH=src .venv/bin/python benchmarks/population.py predict --split val
    PYTHONPATH=src .venv/bin/python benchmarks/population.py bench --split val
    PYTHONPATH=src .venv/bin/python benchmarks/population.py calibrate --bundle src/facial_demographics/models/*
    PYTHONPATH=src .venv/bin/python benchmarks/population.py predict --split test
    PYTHONPATH=src .venv/bin/python benchmarks/population.py bench --split test
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from facial_demographics.datasets.utkface import parse_name
from facial_demographics.labels import MAX_AGE
from facial_demographics.model import manifest_text
from facial_demographics.population import AgeBands, Evidence, PopulationCalibration, estimate

UTK = Path("../shared/datasets/UTKFace")

#: Target age mixes: weight of each audience band (0-12, 13-17, 18-24, 25-34, 35-44, 45-54, 55-64, 65+).
MIXES: dict[str, tuple[float, ...] | None] = {
    "whole split": None,  # the split itself as one population, no resampling
    "utkface": (),  # UTKFace's own mix: a plain random sample
    "childrens-party": (0.55, 0.05, 0.05, 0.20, 0.12, 0.03, 0.0, 0.0),
    "twenties-crowd": (0.0, 0.08, 0.45, 0.35, 0.08, 0.04, 0.0, 0.0),
    "retirement-home": (0.0, 0.0, 0.02, 0.03, 0.05, 0.10, 0.25, 0.55),
    "family-day": (0.25, 0.10, 0.05, 0.15, 0.20, 0.10, 0.08, 0.07),
}


def _labels(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    parsed = [parse_name(k) for k in keys]
    return (np.array([p.age for p in parsed], dtype=np.float64),
            np.array([p.gender for p in parsed], dtype=np.int64))


def predict(split: str, work: Path, split_file: Path, model: str | None) -> None:
    from facial_demographics.pipeline import FaceAnalyzer

    with open(split_file, newline="") as fh:
        keys = [r["key"] for r in csv.DictReader(fh) if r["split"] == split]
    keys = [k for k in keys if parse_name(k).usable and (UTK / k).is_file()]
    probs = np.zeros((len(keys), MAX_AGE + 1), np.float32)
    pf = np.full(len(keys), np.nan)
    start = time.time()
    with FaceAnalyzer(model, cropped=True) as analyzer:
        for i, result in enumerate(analyzer.iter_analyze([str(UTK / k) for k in keys], keys)):
            face = result.faces[0] if result.faces else None
            if face is None or face.age_probs is None:
                print(f"{keys[i]}: {result.error or 'no distribution'}", file=sys.stderr)
                continue
            probs[i] = face.age_probs
            pf[i] = face.p_female if face.p_female is not None else np.nan
            if (i + 1) % 250 == 0:
                print(f"predict {split}: {i + 1}/{len(keys)} faces ({time.time() - start:.0f} s)", file=sys.stderr)
    ages, genders = _labels(keys)
    work.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(work / f"preds-{split}.npz", keys=np.array(keys), ages=ages, genders=genders,
                        probs=probs, p_female=pf)
    print(f"wrote {work / f'preds-{split}.npz'} ({len(keys)} faces)")


def load(work: Path, split: str) -> dict[str, np.ndarray]:
    data = dict(np.load(work / f"preds-{split}.npz"))
    ok = np.isfinite(data["p_female"])
    return {k: v[ok] for k, v in data.items()}


def fit(d: dict[str, np.ndarray], idx: np.ndarray) -> PopulationCalibration:
    return PopulationCalibration.fit(d["probs"][idx].astype(np.float64), d["p_female"][idx], d["ages"][idx],
                                     d["genders"][idx], source="UTKFace val")


def draw(rng: np.random.Generator, pool: np.ndarray, band: np.ndarray, mix: tuple[float, ...] | None,
         size: int) -> np.ndarray:
    """Indices of one population of ``size`` faces from ``pool`` with the band weights ``mix`` (with
    replacement inside a band, as a bigger crowd of the same kind would repeat look-alikes); ``None``: the
    pool itself."""
    if mix is None:
        return pool
    if not mix:
        return rng.choice(pool, size=size, replace=size > len(pool))
    counts = rng.multinomial(size, np.asarray(mix) / sum(mix))
    parts = [rng.choice(pool[band[pool] == b], size=c, replace=True) for b, c in enumerate(counts) if c]
    return np.concatenate(parts)


def truth(d: dict[str, np.ndarray], idx: np.ndarray, bands: AgeBands) -> np.ndarray:
    t = np.zeros((2, len(bands)))
    np.add.at(t, (d["genders"][idx], bands.index(d["ages"][idx])), 1.0)
    return t / len(idx)


def score(summary: dict[str, Any], t: np.ndarray) -> dict[str, float]:
    age = np.array([r["share"] for r in summary["age"]])
    lo = np.array([r["low"] for r in summary["age"]])
    hi = np.array([r["high"] for r in summary["age"]])
    true_age = t.sum(axis=0)
    female = next(r for r in summary["gender"] if r["gender"] == "female")
    cells = {(r["band"], r["gender"]): r for r in summary["age_gender"]}
    cell_in = [cells[(b, g)]["low"] - 1e-9 <= t[k, j] <= cells[(b, g)]["high"] + 1e-9
               for j, b in enumerate(summary["bands"]) for k, g in ((0, "male"), (1, "female"))]
    return {"max_band_err": float(np.abs(age - true_age).max() * 100),
            "female_err": float(abs(female["share"] - t[1].sum()) * 100),
            "band_cover": float(((lo - 1e-9 <= true_age) & (true_age <= hi + 1e-9)).mean() * 100),
            "female_cover": float(female["low"] - 1e-9 <= t[1].sum() <= female["high"] + 1e-9) * 100,
            "cell_cover": float(np.mean(cell_in) * 100)}


def bench(work: Path, split: str, size: int, draws: int, methods: list[str], seed: int) -> list[dict[str, Any]]:
    bands = AgeBands()
    val = load(work, "val")
    rng = np.random.default_rng(seed)
    folds: list[tuple[PopulationCalibration, dict[str, np.ndarray], np.ndarray]] = []
    saved = work / "calibration.json"  # written by `calibrate`: its systematic term widens the intervals
    shipped = PopulationCalibration.from_dict(json.loads(saved.read_text())) if saved.is_file() else None
    c = shipped.systematic if shipped is not None else (0.0, 0.0, 0.0)
    test = shipped.shift_test if shipped is not None else (0.0, 0.0)
    print(f"systematic error term: {c}, shift test: {test}", file=sys.stderr)
    if split == "val":  # cross-fit by person: UTKFace has no ids, so by file (near-duplicates share a half)
        order = rng.permutation(len(val["ages"]))
        halves = np.array_split(order, 2)
        folds = [(fit(val, halves[0]).with_systematic(*c).with_shift_test(*test), val, halves[1]),
                 (fit(val, halves[1]).with_systematic(*c).with_shift_test(*test), val, halves[0])]
    else:
        data = load(work, split)
        full = fit(val, np.arange(len(val["ages"]))).with_systematic(*c).with_shift_test(*test)
        folds = [(full, data, np.arange(len(data["ages"])))]
    rows = []
    for mix_name, mix in MIXES.items():
        scores: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
        for r in range(len(folds) if mix is None else draws):
            cal, data, pool = folds[r % len(folds)]
            idx = draw(rng, pool, bands.index(data["ages"]), mix, size)
            ev = Evidence(data["probs"][idx].astype(np.float64), data["p_female"][idx])
            t = truth(data, idx, bands)
            for m in methods:
                s = estimate(ev, bands, method=m, calibration=cal, seed=r).to_dict()
                scores[m].append(score(s, t))
        for m in methods:
            agg = {k: float(np.mean([s[k] for s in scores[m]])) for k in scores[m][0]}
            agg["worst_band_err"] = float(np.max([s["max_band_err"] for s in scores[m]]))
            rows.append({"mix": mix_name, "method": m, **agg})
            print(f"{mix_name:16s} {m:6s} " + " ".join(f"{k} {v:6.2f}" for k, v in agg.items()), file=sys.stderr)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| mix | method | max band error (pts, mean) | worst draw | female error (pts) | bands in 90 % interval"
            " | female in interval | cells in interval |\n|---|---|---|---|---|---|---|---|")
    body = [f"| {r['mix']} | {r['method']} | {r['max_band_err']:.2f} | {r['worst_band_err']:.2f} | "
            f"{r['female_err']:.2f} | {r['band_cover']:.0f} % | {r['female_cover']:.0f} % | {r['cell_cover']:.0f} % |"
            for r in rows]
    return "\n".join([head, *body])


def fit_shift_test(val: dict[str, np.ndarray], draws: int, seed: int) -> tuple[float, float]:
    """The shift test's threshold: twice the largest statistic on cross-fitted populations of UTKFace's own
    mix (floor: of 300 faces; per face: of 1,000 and 3,000), where no adjustment is wanted."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(val["ages"]))
    halves = np.array_split(order, 2)
    cals = [fit(val, halves[0]), fit(val, halves[1])]
    stats: dict[int, list[float]] = {300: [], 1000: [], 3000: []}
    for n in stats:
        for r in range(draws):
            idx = draw(rng, halves[1 - r % 2], np.zeros(0, int), (), n)
            ev = Evidence(val["probs"][idx].astype(np.float64), val["p_female"][idx])
            s = estimate(ev, AgeBands(), calibration=cals[r % 2], replicates=0).to_dict()
            stats[n].append(s["shift"]["statistic"])
    floor = 2 * max(stats[300])
    per_face = 2 * max(max(stats[1000]) / 1000, max(stats[3000]) / 3000)
    return floor, per_face


def fit_systematic(val: dict[str, np.ndarray], size: int, draws: int, seed: int,
                   shift_test: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float, float]:
    """The systematic error coefficients c (age when the mix was adjusted, gender, age when it was not):
    cross-fitted populations of every mix, ``e^2 = sd_boot^2 + c^2 * s * (1 - s)`` solved for c over all
    bands (gender: the female share)."""
    bands = AgeBands()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(val["ages"]))
    halves = np.array_split(order, 2)
    cals = [fit(val, halves[0]).with_shift_test(*shift_test), fit(val, halves[1]).with_shift_test(*shift_test)]
    excess: dict[str, list[float]] = {"age": [], "gender": [], "age_unshifted": []}
    z = 1.6449  # the 90 % interval's half-width in standard deviations
    for mix in MIXES.values():
        if mix is None:
            continue
        for r in range(draws):
            idx = draw(rng, halves[1 - r % 2], bands.index(val["ages"]), mix, size)
            ev = Evidence(val["probs"][idx].astype(np.float64), val["p_female"][idx])
            t = truth(val, idx, bands)
            s = estimate(ev, bands, calibration=cals[r % 2], interval=0.9, seed=r)
            adjusted = s.context["shift"]["adjusted"]
            for share, true in ((s.age, t.sum(axis=0)), (s.gender[1:], t.sum(axis=1)[1:])):
                key = ("age" if adjusted else "age_unshifted") if len(share) > 1 else "gender"
                for row, tv in zip(share, true, strict=True):
                    sd = (row.high - row.low) / (2 * z)
                    var = max(row.share * (1 - row.share), 1e-3)
                    excess[key].append(((row.share - tv) ** 2 - sd**2) / var)
    def coefficient(key: str) -> float:
        return float(np.sqrt(max(np.mean(excess[key]), 0.0))) if excess[key] else 0.0

    return coefficient("age"), coefficient("gender"), coefficient("age_unshifted")


def calibrate(work: Path, bundles: list[Path], size: int, draws: int) -> None:
    val = load(work, "val")
    shift = fit_shift_test(val, draws, seed=5)
    print(f"shift test: threshold max({shift[0]:.1f}, {shift[1]:.4f} x faces)")
    c_age, c_gender, c_home = fit_systematic(val, size, draws, seed=7, shift_test=shift)
    print(f"systematic error: age {c_age:.4f} (not adjusted: {c_home:.4f}), gender {c_gender:.4f} x sqrt(s(1-s))")
    cal = fit(val, np.arange(len(val["ages"]))).with_systematic(c_age, c_gender, c_home).with_shift_test(*shift)
    (work / "calibration.json").write_text(json.dumps(cal.to_dict()) + "\n")
    for b in bundles:
        path = b / "manifest.json"
        doc = json.loads(path.read_text())
        doc["population"] = cal.to_dict()
        path.write_text(manifest_text(doc) + "\n")
        print(f"wrote population calibration ({cal.faces} val faces) into {path}")


def speed(work: Path, faces: int) -> str:
    """Time ``summarize`` as a whole process on ``faces`` face records written the way ``analyze`` writes
    them (val faces repeated, two faces an image), and ``analyze --summary``'s extra cost is the same
    estimate. Returns a markdown table."""
    import subprocess

    from facial_demographics.types import encode_distribution

    val = load(work, "val")
    rng = np.random.default_rng(0)
    path = work / f"speed-{faces}.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for start in range(0, faces, 2):
            recs = []
            for i in rng.integers(0, len(val["ages"]), min(2, faces - start)):
                pf = float(val["p_female"][i])
                recs.append({"box": [10.5, 20.25, 90.0, 120.5], "score": 0.9987,
                             "landmarks": [[30.1, 50.2], [60.3, 50.1], [45.0, 70.2], [33.3, 90.1], [58.2, 90.3]],
                             "age": 30.0, "age_interval": [22.1, 38.4], "age_group": "25-49",
                             "gender": "female" if pf >= 0.5 else "male",
                             "gender_probability": round(max(pf, 1 - pf), 4),
                             "age_distribution": encode_distribution(val["probs"][i].astype(np.float64))})
            fh.write(json.dumps({"path": f"img{start}.jpg", "width": 640, "height": 480, "faces": recs,
                                 "error": None}) + "\n")
    size = path.stat().st_size / 2**20
    cmd = [sys.executable, "-m", "facial_demographics", "summarize", str(path), "--out", str(work / "speed-out")]
    import os
    import resource

    started, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    busy = os.getloadavg()[0]
    return ("| faces | jsonl size | summarize wall time (whole process) | its CPU time | load average |\n"
            f"|---|---|---|---|---|\n| {faces:,} | {size:.0f} MiB | {wall:.1f} s | {cpu:.1f} s | {busy:.1f} |")


def _augment(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """One more photo of the same face: another size, light, blur, angle, framing and JPEG quality."""
    import io

    from PIL import Image, ImageEnhance, ImageFilter

    img = Image.fromarray(image)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = img.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR, fillcolor=(90, 90, 90))
    side = img.size[0]
    crop = int(side * rng.uniform(0.0, 0.08))
    img = img.crop((crop, crop, side - crop, side - crop)).resize((int(side * rng.uniform(0.45, 1.0)),) * 2)
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.6, 1.4)))
    img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.7, 1.3)))
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(35, 90)))
    return np.asarray(Image.open(buf).convert("RGB"))


def unique(work: Path, split: str, people: int, collections: int, thresholds: list[float]) -> str:
    """Generated event collections: ``people`` UTKFace faces of ``split``, each in 1-6 photos under
    :func:`_augment`; counts the people ``--unique``'s grouping finds at each threshold. Returns a table."""
    from facial_demographics.imaging import read_image
    from facial_demographics.pipeline import FaceAnalyzer
    from facial_demographics.population.identity import Describer, group_faces

    data = load(work, split)
    rng = np.random.default_rng(3)
    describer = Describer()
    rows: dict[float, list[tuple[int, int, int, int]]] = {t: [] for t in thresholds}
    with FaceAnalyzer(cropped=True) as analyzer:
        for c in range(collections):
            chosen = rng.choice(len(data["keys"]), size=people, replace=False)
            photos, who = [], []
            for p, i in enumerate(chosen):
                face = read_image(str(UTK / str(data["keys"][i])))
                for _ in range(int(rng.integers(1, 7))):
                    photos.append(_augment(rng, face))
                    who.append(p)
            vectors = []
            for photo, result in zip(photos, analyzer.iter_analyze(photos), strict=True):
                vectors.append(describer.describe(photo, [result.faces[0].landmarks])[0])
            print(f"collection {c + 1}/{collections}: {len(photos)} photos of {people} people", file=sys.stderr)
            truth_ids = np.array(who)
            for t in thresholds:
                g = group_faces(np.asarray(vectors), list(range(len(photos))), t)
                merged = sum(len(set(truth_ids[g.person == k])) > 1 for k in range(g.people))
                split_people = sum(len(set(g.person[truth_ids == p])) > 1 for p in range(people))
                rows[t].append((people, g.people, merged, split_people))
    lines = ["| threshold | true people | counted (mean) | groups holding 2+ people | people split in 2+ |",
             "|---|---|---|---|---|"]
    for t, r in rows.items():
        a = np.array(r, dtype=float)
        lines.append(f"| {t:.2f} | {people} | {a[:, 1].mean():.1f} | {a[:, 2].sum():.0f} | {a[:, 3].sum():.0f} |")
    return "\n".join(lines) + f"\n\n{collections} collections of {len(photos)}-ish photos each"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("predict")
    p.add_argument("--split", default="val")
    p.add_argument("--split-file", type=Path, default=Path("splits/utkface.csv"))
    p.add_argument("--model", default=None)
    b = sub.add_parser("bench")
    b.add_argument("--split", default="val")
    b.add_argument("--size", type=int, default=1000, help="faces per population")
    b.add_argument("--draws", type=int, default=20, help="populations per mix")
    b.add_argument("--methods", default="count,sum,pacc,em")
    b.add_argument("--seed", type=int, default=0)
    u = sub.add_parser("unique")
    u.add_argument("--split", default="val")
    u.add_argument("--people", type=int, default=60)
    u.add_argument("--collections", type=int, default=3)
    u.add_argument("--thresholds", default="0.35,0.4,0.45,0.5,0.55,0.6")
    sp = sub.add_parser("speed")
    sp.add_argument("--faces", type=int, default=100_000)
    c = sub.add_parser("calibrate")
    c.add_argument("--bundle", type=Path, nargs="+", required=True)
    c.add_argument("--size", type=int, default=1000)
    c.add_argument("--draws", type=int, default=20)
    for q in (p, b, c, sp, u):
        q.add_argument("--work", type=Path, default=Path("out/population"))
    a = ap.parse_args()
    if a.cmd == "predict":
        predict(a.split, a.work, a.split_file, a.model)
    elif a.cmd == "bench":
        rows = bench(a.work, a.split, a.size, a.draws, a.methods.split(","), a.seed)
        (a.work / f"bench-{a.split}.json").write_text(json.dumps(rows, indent=2) + "\n")
        print(f"{a.split}: {a.draws} populations of {a.size} faces per mix, 90 % intervals\n")
        print(table(rows))
    elif a.cmd == "unique":
        print(unique(a.work, a.split, a.people, a.collections, [float(t) for t in a.thresholds.split(",")]))
    elif a.cmd == "speed":
        print(speed(a.work, a.faces))
    else:
        calibrate(a.work, a.bundle, a.size, a.draws)


if __name__ == "__main__":
    main()
