"""Hardening benchmark (issue 13): the server under hostile load, with its default settings.

1. Two concurrent requests of 16 × 49 MP PNGs (tiny on the wire) while a normal photo is sent:
   the server's peak RSS and the normal photo's latency.
2. N concurrent clients for D seconds posting a normal photo: errors and p50/p99 latency.

Starts its own server (``facial-demographics serve``, a separate process) on a free 127.0.0.1 port and
reads its peak RSS from /proc (VmHWM). Prints tables; not a test.

    python benchmarks/hardening.py                       # 50 clients × 60 s
    python benchmarks/hardening.py --duration 10         # quicker while iterating
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from collections import Counter
from pathlib import Path

import httpx
from load import default_photo, free_port
from PIL import Image
from rich.console import Console
from rich.table import Table


def big_png(side: int = 7000) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def rss_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


async def start_server(model: Path | None) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    argv = ["-m", "facial_demographics", "serve", "--port", str(port)]
    if model is not None:
        argv += ["--model", str(model)]
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for _ in range(600):
            try:
                if (await http.get(f"{url}/healthz", timeout=2)).status_code == 200:
                    return process, url
            except httpx.TransportError:
                await asyncio.sleep(0.2)
    raise SystemExit("the server did not start")


async def flood(url: str, photo: bytes, big: bytes, files: int) -> tuple[list[int], float, int]:
    """Two requests of ``files`` × 49 MP at once, and the normal photo sent while they are in flight."""
    files_big = [("file", (f"big{i}.png", big, "image/png")) for i in range(files)]
    async with httpx.AsyncClient(timeout=120) as http:
        heavy = [asyncio.create_task(http.post(f"{url}/v1/analyze", files=files_big)) for _ in range(2)]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        normal = await http.post(f"{url}/v1/analyze", files={"file": ("photo.jpg", photo, "image/jpeg")})
        latency = time.perf_counter() - started
        statuses = [r.status_code for r in await asyncio.gather(*heavy)]
    return statuses, latency, normal.status_code


async def load(url: str, photo: bytes, clients: int, duration: float) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        deadline = time.perf_counter() + duration

        async def client() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await http.post(f"{url}/v1/analyze", files={"file": ("p.jpg", photo, "image/jpeg")})
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[f"HTTP {response.status_code}"] += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, errors


async def main_async(args: argparse.Namespace) -> None:
    console = Console()
    photo, big = default_photo(), big_png()
    process, url = await start_server(args.model)
    try:
        idle = rss_mib(process.pid, "VmRSS")
        table = Table(title=f"2 concurrent requests of N × 49 MP PNGs ({len(big) / 1024:.0f} KB each) + a normal photo")
        for column in ("N", "idle RSS MiB", "peak RSS MiB", "big requests", "normal photo", "its latency ms"):
            table.add_column(column, justify="right")
        for files in (16, 1):  # 16: over the request budget; 1: fits it, so the big images are decoded
            statuses, latency, normal_status = await flood(url, photo, big, files)
            peak = rss_mib(process.pid, "VmHWM")
            table.add_row(str(files), f"{idle:.0f}", f"{peak:.0f}", ", ".join(map(str, statuses)),
                          str(normal_status), f"{1000 * latency:.0f}")
        console.print(table)
        latencies, errors = await load(url, photo, args.clients, args.duration)
        peak = rss_mib(process.pid, "VmHWM")
    finally:
        process.terminate()
        await process.wait()
    lat = sorted(latencies)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [float("nan")] * 99
    table = Table(title=f"{args.clients} clients × {args.duration:g} s, {len(photo) / 1024:.0f} KB photo")
    for column in ("requests", "req/s", "p50 ms", "p99 ms", "errors", "peak RSS MiB"):
        table.add_column(column, justify="right")
    table.add_row(str(len(lat)), f"{len(lat) / args.duration:.1f}", f"{1000 * q[49]:.0f}", f"{1000 * q[98]:.0f}",
                  str(sum(errors.values())), f"{peak:.0f}")
    console.print(table)
    if errors:
        console.print("errors: " + ", ".join(f"{k} × {v}" for k, v in errors.most_common()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model bundle (default: the bundled model)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the concurrent-client load")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
