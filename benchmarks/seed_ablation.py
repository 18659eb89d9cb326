"""Why round 1 of the seed recipe does not learn: short runs of ``configs/seed.toml`` with one factor changed.

Each variant trains round 1 only, for ``--epochs`` x ``--steps`` batches of the train split, at ``--size`` px,
and is validated on ``--val`` evenly spaced faces of the val split (the test split is never read). For
each run the table gives the val 5-bucket and gender accuracy after the last step, whether the bucket
head predicts one constant class on every val face, the train loss of the first and last epoch, and the
process CPU seconds. Run (one training process at a time on a shared machine):

    PYTHONPATH=src python benchmarks/seed_ablation.py --cache cache/utkface-112 --out runs/seed-ablation

``--only NAME`` (repeatable) runs a subset; finished variants (``result.json`` present) are not rerun.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facial_demographics.datasets.cache import load_cache
from facial_demographics.training.checkpoint import Checkpoint
from facial_demographics.training.config import RunConfig, _merge, config_from_dict, load_config
from facial_demographics.training.data import FaceBatches, split_rows, to_input
from facial_demographics.training.loop import train
from facial_demographics.training.models import build_model

KERAS_ADAM = {"name": "adam", "eps": 1e-7}
KERAS_RMSPROP = {"name": "rmsprop", "rho": 0.9, "eps": 1e-7}
KERAS_SGD = {"name": "sgd", "momentum": 0.0}
NO_BN = {"batchnorm": False}
KERAS_MODEL = {"batchnorm": False, "init": "keras"}  # what the report's Keras model had: no BN, glorot

# name -> (what changed, overrides of seed.toml)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "A": ("seed.toml as shipped: Adam (torch eps 1e-8), BN, balanced weights, torch init", {}),
    "B": ("Adam, no BN", {"model": NO_BN}),
    "C": ("Adam, no class weights", {"data": {"class_weights": "none"}}),
    "D": ("Adam, Keras defaults throughout: eps 1e-7, no BN, glorot init",
          {"optim": KERAS_ADAM, "model": KERAS_MODEL}),
    "E": ("Adam at lr 0.001 (control: is it the rate?)", {"optim": {"lr": 0.001}}),
    "F": ("RMSprop (Keras: rho 0.9, eps 1e-7), BN", {"optim": KERAS_RMSPROP}),
    "G": ("RMSprop (Keras), no BN, glorot init", {"optim": KERAS_RMSPROP, "model": KERAS_MODEL}),
    "H": ("SGD (Keras: no momentum), BN", {"optim": KERAS_SGD}),
    "I": ("SGD (Keras), no BN, glorot init", {"optim": KERAS_SGD, "model": KERAS_MODEL}),
    "J": ("SGD (Keras), BN, glorot init", {"optim": KERAS_SGD, "model": {"init": "keras"}}),
    "K": ("SGD (Keras), BN, no class weights", {"optim": KERAS_SGD, "data": {"class_weights": "none"}}),
}


def variant_config(base: RunConfig, name: str, overrides: dict[str, Any], args: argparse.Namespace) -> RunConfig:
    """seed.toml with the variant's overrides, cut to one short round on the given cache and size."""
    raw = base.to_dict()
    raw = _merge(raw, overrides)
    raw = _merge(raw, {"name": f"seed-ablation-{name}",
                       "data": {"cache": str(args.cache), "input_size": args.size, "limit_batches": args.steps,
                                "limit_val": args.val},
                       "train": {"epochs": args.epochs, "threads": args.threads}})
    raw["rounds"] = [{"name": "round1"}]
    return config_from_dict(raw)


@torch.no_grad()
def val_predictions(cfg: RunConfig, ckpt_path: Path) -> dict[str, np.ndarray]:
    """Predicted age buckets and genders of the run's val faces (the evenly spaced subset it validated on),
    and which ReLU units of the trunk's output and of each head's hidden layer ever fire on them."""
    cache = load_cache(cfg.data.cache)
    rows = split_rows(cache, cfg, "val")
    pick = np.unique(np.linspace(0, len(rows) - 1, min(cfg.data.limit_val or len(rows), len(rows))).round()
                     .astype(int))
    model = build_model(cfg, pretrained=False)
    model.load_state_dict(Checkpoint.load(ckpt_path).eval_weights)
    model.eval()
    fired: dict[str, torch.Tensor] = {}

    def watch(name: str) -> Any:
        def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
            alive = (output.flatten(2).amax(2) if output.ndim == 4 else output).gt(0).any(0)
            fired[name] = alive | fired[name] if name in fired else alive
        return hook

    relus = [m for m in model.trunk.modules() if isinstance(m, torch.nn.ReLU)]
    relus[-1].register_forward_hook(watch("trunk"))
    model.age_head[1].register_forward_hook(watch("age_head"))
    if model.gender_head is not None:
        model.gender_head[1].register_forward_hook(watch("gender_head"))
    buckets, genders = [], []
    for faces, _ in FaceBatches(cache, rows[pick], cfg.train.eval_batch_size, shuffle=False).epoch(0):
        age_logits, gender_logits = model(to_input(faces, cfg.data.input_size))
        buckets.append(age_logits.argmax(1).numpy())
        genders.append(gender_logits.argmax(1).numpy())
    return {"buckets": np.concatenate(buckets), "genders": np.concatenate(genders),
            **{f"alive_{k}": v.numpy() for k, v in fired.items()}}


def prediction_counts(cfg: RunConfig, ckpt_path: Path) -> dict[str, Any]:
    """Per-class prediction counts and the share of dead ReLU units (never > 0 on any val face)."""
    p = val_predictions(cfg, ckpt_path)
    counts, g_counts = np.bincount(p["buckets"], minlength=5), np.bincount(p["genders"], minlength=2)
    return {"constant": bool((counts > 0).sum() == 1), "pred_counts": counts.tolist(),
            "top_share": float(counts.max() / counts.sum()), "gender_counts": g_counts.tolist(),
            **{f"dead_{k[6:]}": float(1 - v.mean()) for k, v in p.items() if k.startswith("alive_")}}


def run_variant(base: RunConfig, name: str, args: argparse.Namespace) -> dict[str, Any]:
    what, overrides = VARIANTS[name]
    out = args.out / name
    done = out / "result.json"
    cfg = variant_config(base, name, overrides, args)
    if done.is_file():
        row = dict(json.loads(done.read_text()))
        if "dead_age_head" not in row:  # a result from before the gender and dead-unit columns
            row.update(prediction_counts(cfg, out / "last.pt"))
            done.write_text(json.dumps(row, indent=2))
        return row
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = train(cfg, out, progress=False, log=lambda m: print(f"[{name}] {m}", flush=True))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    last, first = result.history[-1], result.history[0]
    row = {"run": name, "changed": what, "steps": int(last["global_step"]),
           "val_bucket_acc": float(last["val_bucket_acc"]), "val_gender_acc": float(last["val_gender_acc"]),
           **prediction_counts(cfg, result.last_checkpoint),
           "train_loss_first": float(first["train_loss"]), "train_loss_last": float(last["train_loss"]),
           "val_loss": float(last["val_loss"]), "cpu_s": cpu, "wall_s": wall,
           "history_bucket_acc": [float(h["val_bucket_acc"]) for h in result.history]}
    done.write_text(json.dumps(row, indent=2))
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | what changed | steps | val 5-bucket acc (per epoch) | val gender acc | constant bucket "
             "prediction | val predictions per bucket (top share) | predicted M/F | train loss first → last "
             "epoch | dead ReLUs trunk / age head / gender head | CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_epoch = " → ".join(f"{100 * a:.1f}" for a in r["history_bucket_acc"])
        lines.append(f"| {r['run']} | {r['changed']} | {r['steps']} | {per_epoch} % | "
                     f"{100 * r['val_gender_acc']:.1f} % | {'yes' if r['constant'] else 'no'} | "
                     f"{r['pred_counts']} ({100 * r['top_share']:.0f} %) | "
                     f"{r['gender_counts'][0]}/{r['gender_counts'][1]} | "
                     f"{r['train_loss_first']:.3f} → {r['train_loss_last']:.3f} | "
                     f"{100 * r['dead_trunk']:.0f} / {100 * r['dead_age_head']:.0f} / "
                     f"{100 * r['dead_gender_head']:.0f} % | "
                     f"{r['cpu_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("cache/utkface-112"))
    parser.add_argument("--config", default="configs/seed.toml")
    parser.add_argument("--out", type=Path, default=Path("runs/seed-ablation"))
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=100, help="train batches per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--val", type=int, default=1000, help="val faces")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", action="append", choices=sorted(VARIANTS))
    args = parser.parse_args()
    base = load_config(args.config)
    rows = [run_variant(base, name, args) for name in (args.only or list(VARIANTS))]
    text = table(rows)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
