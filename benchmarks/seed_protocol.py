"""The seed report's evaluation protocol, as far as the report describes it, next to ours.

The report gives one number per task (82.8 % for 5 age classes, 95.0 % for gender) "on its split", and
says only this about how: UTKFace's own 200x200 crops, resized to 198 px, rescaled by 1/255, a
validation generator without augmentation, and checkpoints chosen on the validation loss. It does not say
how it split UTKFace, whether a separate test set existed, or whether the figure is the chosen epoch's
validation accuracy (which the selection makes optimistic). So this script reports, for each bundle:

- ``val``, ``test``: the dataset's own crops straight from an aligned-or-not face cache (no detection,
  no alignment at inference: what the report's generator fed), on our val and test splits;
- ``best val epoch`` (with ``--run``): the validation accuracy the training loop recorded at the
  selected checkpoint, the number a Keras user reads off the fit log.

With ``--undo-class-weights LABEL`` (a bucket head trained with ``class_weights = "balanced"``) each split
gets a second row: the same outputs with the class weights divided back out. A cross-entropy weighted by
w_k = n / (K n_k) is minimised by p_w(k|x) proportional to w_k p(k|x), so multiplying the softmax by the
training split's bucket counts n_k recovers the unweighted posterior (logit adjustment, Menon et al.,
ICLR 2021): an estimate, without a second training run, of what the report's ``class_weights`` cost.

5-bucket accuracy is the bucket of the predicted age (``labels.age_buckets``): for a bucket head that is
its argmax bucket (the report's classifier). ``evaluate --cropped`` gives the third protocol,
the user's pipeline (detection + alignment); its numbers go next to these in the README.

    PYTHONPATH=src python benchmarks/seed_protocol.py --model seed=src/facial_demographics/models/seed \\
        --cache seed=cache/utkface-raw198 --model default --cache default=cache/utkface-112 \\
        --run seed=runs/seed-198
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facial_demographics.datasets.cache import load_cache, split_faces
from facial_demographics.labels import AGE_GROUPS, FEMALE, age_buckets
from facial_demographics.model import AgeGenderModel, ModelBundle


@dataclass(frozen=True)
class ProtocolResult:
    model: str
    split: str
    faces: int
    bucket5: float
    gender: float | None
    bucket5_unweighted: float | None = None  # argmax of softmax x train bucket counts (class weights undone)


def train_bucket_counts(cache_dir: Path, split_file: Path) -> np.ndarray:
    """How many faces of the train split fall in each of the five buckets (the class weights' n_k)."""
    _, rows = split_faces(load_cache(cache_dir), split_file, "train")
    known = age_buckets(rows["age"].to_numpy())
    return np.bincount(known[known >= 0], minlength=len(AGE_GROUPS)).astype(np.float64)


def evaluate_on_cache(bundle: ModelBundle, cache_dir: Path, split_file: Path, split: str,
                      batch_size: int = 64, prior: np.ndarray | None = None) -> ProtocolResult:
    """5-bucket and gender accuracy of ``bundle`` on the cached faces of one split, as they are; with
    ``prior`` (train bucket counts) also the bucket accuracy with the class weights undone."""
    cache = load_cache(cache_dir)
    if cache.size != bundle.input_size:
        raise SystemExit(f"{cache_dir}: faces are {cache.size} px, {bundle.root} takes {bundle.input_size} px")
    faces, rows = split_faces(cache, split_file, split)
    model = AgeGenderModel(bundle)
    buckets, p_female, adjusted = [], [], []
    for i in range(0, len(faces), batch_size):
        # A bucket head's age is its argmax bucket's value (manifest.AgeHead.summarize), so the bucket of
        # the predicted age is the classifier's own class.
        pred = model.predict(faces[i : i + batch_size])
        buckets.append(age_buckets(pred.age))
        p_female.append(pred.p_female)
        if prior is not None:
            if pred.age_probs is None or pred.age_probs.shape[1] != len(prior):
                raise SystemExit(f"{bundle.root}: --undo-class-weights needs a 5-bucket age head")
            adjusted.append(np.argmax(pred.age_probs * prior, axis=1))
    true_bucket = age_buckets(rows["age"].to_numpy())
    bucket_acc = float((np.concatenate(buckets) == true_bucket).mean())
    unweighted = float((np.concatenate(adjusted) == true_bucket).mean()) if adjusted else None
    gender = rows["gender"].to_numpy()
    known = ~np.isnan(gender)
    pf = np.concatenate(p_female)
    gender_acc = float(((pf[known] >= 0.5) == (gender[known] == FEMALE)).mean()) if known.any() else None
    return ProtocolResult(bundle.spec.name, split, len(faces), bucket_acc, gender_acc, unweighted)


def best_val_epoch(run_dir: Path) -> str:
    """The selected epoch's validation accuracies, from each round's metrics.csv (selection: lowest val loss)."""
    out = []
    for metrics in sorted(run_dir.glob("*/metrics.csv")):
        with metrics.open() as f:
            rows = list(csv.DictReader(f))
        if not rows or "val_loss" not in rows[0]:
            continue
        best = min(rows, key=lambda r: float(r["val_loss"]))
        out.append(f"{metrics.parent.name} epoch {best['epoch']}/{len(rows)}: 5-bucket "
                   f"{100 * float(best['val_bucket_acc']):.1f} %, gender {100 * float(best['val_gender_acc']):.1f} %")
    return "; ".join(out) or "no metrics.csv with val_loss"


def _pairs(values: list[str]) -> dict[str, str]:
    return dict(v.split("=", 1) if "=" in v else (v, v) for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="LABEL=BUNDLE or a registry name")
    parser.add_argument("--cache", action="append", required=True, help="LABEL=CACHE for each model")
    parser.add_argument("--run", action="append", default=[], help="LABEL=RUN_DIR (training run)")
    parser.add_argument("--split-file", type=Path, default=Path("splits/utkface.csv"))
    parser.add_argument("--splits", default="val,test")
    parser.add_argument("--undo-class-weights", action="append", default=[], metavar="LABEL",
                        help="also report LABEL's bucket accuracy with balanced class weights divided back out")
    args = parser.parse_args()
    models, caches, runs = _pairs(args.model), _pairs(args.cache), _pairs(args.run)
    print("| model | protocol | faces | 5-bucket | gender |\n| --- | --- | --- | --- | --- |")
    for label, ref in models.items():
        bundle = ModelBundle.load(ref)
        prior = (train_bucket_counts(Path(caches[label]), args.split_file)
                 if label in args.undo_class_weights else None)
        for split in args.splits.split(","):
            r = evaluate_on_cache(bundle, Path(caches[label]), args.split_file, split, prior=prior)
            gender = "–" if r.gender is None else f"{100 * r.gender:.1f} %"
            print(f"| {label} | {split}, the cache's faces as they are | {r.faces} | {100 * r.bucket5:.1f} % "
                  f"| {gender} |", flush=True)
            if r.bucket5_unweighted is not None:
                print(f"| {label} | {split}, class weights undone (softmax x train bucket counts) | {r.faces} "
                      f"| {100 * r.bucket5_unweighted:.1f} % | {gender} |", flush=True)
        if label in runs:
            print(f"| {label} | best val epoch (training log) | | {best_val_epoch(Path(runs[label]))} | |")


if __name__ == "__main__":
    main()
