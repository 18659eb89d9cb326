"""Batch inference on Ray (``analyze --engine ray``) against the local engine, on the same images in one run.

Both engines analyse the same N UTKFace photos (plus the bad-input corpus, so errors are compared too):

* local: ``FaceAnalyzer.iter_analyze``, exactly what ``analyze`` runs (default threads: all cores);
* ray: ``iter_results`` on a local Ray cluster of ``--num-cpus`` CPUs started here, ``--actors`` actors of
  ``--threads`` CPUs each. Its wall time is given with the cluster start and the actors' model loading
  (what a user waits for) and without the cluster start.

It then checks that the answers are the same (sorted by path: paths, errors, face counts, ages within
1e-5) and prints one table. One timed run per engine (a repeat would mostly re-measure the page cache):

    PYTHONPATH=src .venv/bin/python benchmarks/distributed.py --n 2000 --cropped [--json out/distributed.json]

``--dataset`` defaults to ``../shared/datasets/UTKFace`` (or ``$FD_UTKFACE_DIR``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from detection import start, write_json
from rich.table import Table

from facial_demographics.distributed import AnalyzerSpec, ClusterOptions, iter_results
from facial_demographics.pipeline import FaceAnalyzer
from facial_demographics.types import ImageResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bad_inputs import corpus  # noqa: E402  (the tests' bad-input corpus: generated, nothing stored)

DEFAULT_DATASET = Path(os.environ.get("FD_UTKFACE_DIR", Path(__file__).resolve().parents[2] / "shared" /
                                      "datasets" / "UTKFace"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="UTKFace photos (default 2000)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--cropped", action="store_true", help="--cropped mode (one face per photo)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPUs (and threads) per actor")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not args.dataset.is_dir():
        parser.error(f"{args.dataset}: no UTKFace folder (set --dataset or FD_UTKFACE_DIR)")
    return args


def _inputs(dataset: Path, n: int, bad_dir: Path) -> list[str]:
    paths = sorted(str(p) for p in dataset.glob("*.jpg"))[:n]
    for bad in corpus():
        if bad.code != "image_too_large":
            (bad_dir / bad.name).write_bytes(bad.data)
            paths.append(str(bad_dir / bad.name))
    return paths


def _compare(ours: list[ImageResult], local: list[ImageResult]) -> dict[str, Any]:
    ours, local = sorted(ours, key=lambda r: str(r.path)), sorted(local, key=lambda r: str(r.path))
    same_faces = [len(a.faces) for a in ours] == [len(b.faces) for b in local]
    pairs = zip(ours, local, strict=True)
    ages = [(fa.age, fb.age) for a, b in pairs for fa, fb in zip(a.faces, b.faces, strict=False)]
    return {
        "same_paths": [a.path for a in ours] == [b.path for b in local],
        "same_errors": [a.error for a in ours] == [b.error for b in local],
        "errors": sum(a.error is not None for a in ours),
        "same_face_counts": same_faces,
        "faces": sum(len(a.faces) for a in ours),
        "max_age_diff": float(np.max(np.abs(np.diff(np.array(ages), axis=1)))) if ages else 0.0,
    }


def main() -> None:
    args = parse_args()
    console, env = start(None)
    with tempfile.TemporaryDirectory() as bad_dir:
        paths = _inputs(args.dataset, args.n, Path(bad_dir))
        t0 = time.perf_counter()
        local = list(FaceAnalyzer(cropped=args.cropped).iter_analyze(paths))
        local_s = time.perf_counter() - t0

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR")
        cluster_s = time.perf_counter() - t0
        spec = AnalyzerSpec(cropped=args.cropped, threads=args.threads)
        ours = list(iter_results(paths, spec, ClusterOptions(actors=args.actors)))
        ray_s = time.perf_counter() - t0
        ray.shutdown()
    check = _compare(ours, local)
    n = len(paths)
    table = Table(title=f"{n} images ({args.n} UTKFace 200x200 + {n - args.n} bad files), "
                        f"{'--cropped' if args.cropped else 'detection'} mode, {env['cpu_count']} CPUs")
    for col in ("engine", "wall s", "images/s", "note"):
        table.add_column(col)
    table.add_row("local (FaceAnalyzer.iter_analyze)", f"{local_s:.1f}", f"{n / local_s:.1f}", "all cores")
    note = f"{args.actors} actors x {args.threads} CPU, cluster of {args.num_cpus} CPUs"
    table.add_row("ray, cluster start included", f"{ray_s:.1f}", f"{n / ray_s:.1f}", note)
    table.add_row("ray, cluster running", f"{ray_s - cluster_s:.1f}", f"{n / (ray_s - cluster_s):.1f}",
                  f"cluster start {cluster_s:.1f} s; actors' model loading included")
    console.print(table)
    console.print(f"same paths {check['same_paths']}, same errors {check['same_errors']} ({check['errors']}), "
                  f"same face counts {check['same_face_counts']} ({check['faces']} faces), "
                  f"max |age difference| {check['max_age_diff']:.2e}")
    write_json(console, args.json, {"env": env, "args": {k: str(v) for k, v in vars(args).items()},
                                    "local_s": local_s, "ray_s": ray_s, "cluster_start_s": cluster_s,
                                    "images": n, **check})


if __name__ == "__main__":
    main()
