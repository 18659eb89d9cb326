"""Does a train/test leak of near-duplicate photos lift the accuracy a split reports? (issue 19)

UTKFace holds some photos more than once (the same picture re-cropped or re-uploaded, often under a
different age label). A random per-image split, ours and, as far as the seed report says, the report's,
puts some of these pairs on both sides, so a model that memorises its training faces would score higher
on the test faces that have a twin in train. This script measures both halves of that argument:

1. it hashes every image with imagehash's 64-bit perceptual hash (DCT of the grey image) and counts
   the pairs within ``--max-distance`` bits, by split: how many val/test faces have a twin in train;
2. for each ``evaluate`` predictions file, it compares 5-bucket and gender accuracy on the test faces
   with a twin in train against the rest, with the difference's 95 % interval (normal approximation).

If the "twin" rows are not clearly better, a leak of the size a random split gives does not explain a
reported figure: the same leak is in our split. Reproduce (predictions from
``evaluate --dataset ../shared/datasets/UTKFace --cropped --split test --model seed --compare default``):

    PYTHONPATH=src .venv/bin/python benchmarks/split_leak.py --dataset ../shared/datasets/UTKFace \\
        --predictions seed=runs/eval-seed/predictions.csv \\
        --predictions default=runs/eval-seed/compare/1-default-0.2.0/predictions.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from facial_demographics.datasets.splits import read_split
from facial_demographics.datasets.utkface import MemberReader, read_utkface
from facial_demographics.labels import age_buckets


@dataclass(frozen=True)
class Pair:
    a: int  # indices into the hashed records
    b: int
    distance: int


def perceptual_hashes(dataset: Path) -> tuple[list[str], list[float | None], np.ndarray]:
    """Keys, age labels and 64-bit pHashes of every image in a UTKFace folder or archive."""
    records = read_utkface(dataset).records
    hashes = np.zeros(len(records), dtype=np.uint64)
    with MemberReader() as reader:
        for i, record in enumerate(records):
            with Image.open(io.BytesIO(reader.read(record.path))) as image:
                hashes[i] = int(str(imagehash.phash(image)), 16)
            if (i + 1) % 2000 == 0 or i + 1 == len(records):
                print(f"hashed {i + 1}/{len(records)} images", flush=True)
    return [r.key for r in records], [r.age for r in records], hashes


def near_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 512) -> list[Pair]:
    """Every pair (i < j) whose hashes differ in at most ``max_distance`` bits."""
    pairs: list[Pair] = []
    for start in range(0, len(hashes), chunk):
        block = np.bitwise_count(hashes[start:start + chunk, None] ^ hashes[None, :])
        rows, cols = np.nonzero(block <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if c > start + r:  # each unordered pair once, no self-pairs
                pairs.append(Pair(start + r, c, int(block[r, c])))
    return pairs


def twins_in_train(pairs: list[Pair], splits: list[str], keys: list[str], target: str) -> set[str]:
    """Keys of the ``target`` split that have a near-duplicate in train."""
    out: set[str] = set()
    for p in pairs:
        for x, y in ((p.a, p.b), (p.b, p.a)):
            if splits[x] == target and splits[y] == "train":
                out.add(keys[x])
    return out


def leak_table(pairs: list[Pair], keys: list[str], ages: list[float | None], splits: list[str],
               max_distance: int) -> list[str]:
    """Markdown rows: pairs within each distance and how many val/test faces have a twin in train."""
    sizes = {s: splits.count(s) for s in ("val", "test")}
    rows = ["| max distance (bits) | pairs | pairs with different age labels | val faces with a twin in train "
            "| test faces with a twin in train |", "| --- | --- | --- | --- | --- |"]
    for d in range(max_distance + 1):
        within = [p for p in pairs if p.distance <= d]
        relabelled = sum(ages[p.a] != ages[p.b] for p in within)
        counts = {s: len(twins_in_train(within, splits, keys, s)) for s in sizes}
        cells = [f"{counts[s]} of {sizes[s]} ({100 * counts[s] / max(sizes[s], 1):.1f} %)" for s in sizes]
        rows.append(f"| {d} | {len(within)} | {relabelled} | {cells[0]} | {cells[1]} |")
    return rows


def _difference(hits_a: np.ndarray, hits_b: np.ndarray) -> str:
    """``a − b`` in points with its 95 % interval (normal approximation of two proportions)."""
    pa, pb = hits_a.mean(), hits_b.mean()
    se = math.sqrt(pa * (1 - pa) / len(hits_a) + pb * (1 - pb) / len(hits_b))
    return f"{100 * (pa - pb):+.1f} ± {196 * se:.1f}"


@dataclass(frozen=True)
class Scored:
    """An ``evaluate`` predictions file's scored faces: key, bucket right, gender right."""

    keys: list[str]
    bucket: np.ndarray
    gender: np.ndarray


def read_scored(predictions: Path) -> Scored:
    """The faces of a predictions file that were scored (status ``ok``)."""
    with predictions.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["status"] == "ok"]
    bucket = (age_buckets(np.array([float(r["true_age"]) for r in rows]))
              == age_buckets(np.array([float(r["pred_age"]) for r in rows])))
    gender = np.array([r["true_gender"] == r["pred_gender"] for r in rows])
    return Scored([r["key"] for r in rows], bucket, gender)


def accuracy_row(label: str, scored: Scored, twins: set[str], distance: int) -> str:
    """One markdown row: 5-bucket and gender accuracy on faces with a twin in train against the rest."""
    twin = np.array([k in twins for k in scored.keys])
    bucket, gender = scored.bucket, scored.gender
    return (f"| {label} | ≤ {distance} | {twin.sum()} / {(~twin).sum()} | {100 * bucket[twin].mean():.1f} % "
            f"/ {100 * bucket[~twin].mean():.1f} % ({_difference(bucket[twin], bucket[~twin])}) "
            f"| {100 * gender[twin].mean():.1f} % / {100 * gender[~twin].mean():.1f} % "
            f"({_difference(gender[twin], gender[~twin])}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="UTKFace folder or archive")
    parser.add_argument("--split-file", type=Path, default=Path("splits/utkface.csv"))
    parser.add_argument("--max-distance", type=int, default=4, help="largest Hamming distance counted (bits)")
    parser.add_argument("--predictions", action="append", default=[], metavar="LABEL=CSV",
                        help="an evaluate predictions.csv on the test split")
    parser.add_argument("--pairs-out", type=Path, help="also write the pairs as CSV")
    args = parser.parse_args()

    keys, ages, hashes = perceptual_hashes(args.dataset)
    mapping = read_split(args.split_file)
    splits = [mapping.get(k, "unsplit") for k in keys]
    pairs = near_pairs(hashes, args.max_distance)
    print("\n".join(leak_table(pairs, keys, ages, splits, args.max_distance)))
    if args.pairs_out:
        with args.pairs_out.open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["key_a", "split_a", "age_a", "key_b", "split_b", "age_b", "distance"])
            for p in pairs:
                out.writerow([keys[p.a], splits[p.a], ages[p.a], keys[p.b], splits[p.b], ages[p.b], p.distance])
    if args.predictions:
        print("\n| model | twin within (bits) | test faces with / without a twin in train | 5-bucket, with / "
              "without (difference, 95 %) | gender, with / without (difference, 95 %) |\n"
              "| --- | --- | --- | --- | --- |")
        test_twins = {d: twins_in_train([p for p in pairs if p.distance <= d], splits, keys, "test")
                      for d in sorted({0, 2, args.max_distance})}  # the same for every predictions file
        for item in args.predictions:
            label, path = item.split("=", 1)
            scored = read_scored(Path(path))
            for d, twins in test_twins.items():
                print(accuracy_row(label, scored, twins, d), flush=True)


if __name__ == "__main__":
    main()
