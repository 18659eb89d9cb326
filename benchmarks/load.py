"""Load test for the REST API: N concurrent clients post a real photo for a while, then a summary table.

By default it starts its own server (a separate process, so client and server do not share a GIL) on a
free 127.0.0.1 port and stops it afterwards; ``--url`` targets a running server, on loopback only.

    python benchmarks/load.py --model path/to/bundle --clients 50 --duration 30
    python benchmarks/load.py --url http://127.0.0.1:8000 --image photo.jpg
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from facial_demographics.server.serve import is_loopback


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    errors: Counter[str] = field(default_factory=Counter)
    faces: Counter[int] = field(default_factory=Counter)


def is_loopback_url(url: str) -> bool:
    return is_loopback(urlsplit(url).hostname or "")


def default_photo() -> bytes:
    """scikit-image's astronaut (a real photo with one face), as JPEG."""
    try:
        from skimage import data
    except ImportError:
        sys.exit("scikit-image is not installed: pass --image PATH")
    from facial_demographics.imaging import encode_jpeg

    return encode_jpeg(np.ascontiguousarray(data.astronaut()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    code = (
        "import sys; from facial_demographics.server import ServerSettings, serve_command; "
        "serve_command(ServerSettings.create(port=int(sys.argv[1]), model=sys.argv[2] or None, "
        "workers=int(sys.argv[3]), batch_size=int(sys.argv[4]), max_queue=int(sys.argv[5])), "
        "log_level='warning')"
    )
    argv = [
        sys.executable,
        "-c",
        code,
        str(port),
        str(args.model or ""),
        str(args.workers),
        str(args.batch_size),
        str(args.max_queue),
    ]
    process = subprocess.Popen(argv, env={**os.environ, "FD_API_KEY": args.api_key or ""})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited during startup (code {process.returncode})")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    sys.exit("the server did not start within 120 s")


async def client(http: httpx.AsyncClient, url: str, photo: bytes, deadline: float, stats: Stats) -> None:
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            response = await http.post(
                f"{url}/v1/analyze", files={"file": ("photo.jpg", photo, "image/jpeg")}
            )
        except httpx.HTTPError as exc:
            stats.errors[type(exc).__name__] += 1
            continue
        if response.status_code == 200:
            stats.latencies.append(time.perf_counter() - started)
            stats.faces[len(response.json()["results"][0]["faces"])] += 1
        else:
            stats.errors[f"HTTP {response.status_code}"] += 1


async def run_load(
    url: str, photo: bytes, clients: int, duration: float, api_key: str | None
) -> tuple[Stats, float]:
    headers = {"X-API-Key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as http:
        warm = await http.post(f"{url}/v1/analyze", files={"file": ("photo.jpg", photo, "image/jpeg")})
        if warm.status_code != 200:
            sys.exit(f"warm-up request failed: HTTP {warm.status_code} {warm.text[:300]}")
        stats = Stats()
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(*(client(http, url, photo, deadline, stats) for _ in range(clients)))
        return stats, time.perf_counter() - started


def report(stats: Stats, elapsed: float, args: argparse.Namespace, url: str, photo_bytes: int) -> Table:
    table = Table(
        title=f"{args.clients} clients × {elapsed:.1f} s against {url} ({photo_bytes / 1024:.0f} KB photo)"
    )
    for column in ("requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"):
        table.add_column(column, justify="right")
    lat = sorted(stats.latencies)
    if len(lat) >= 2:
        q = statistics.quantiles(lat, n=100, method="inclusive")
        p50, p95, p99 = q[49], q[94], q[98]
    else:
        p50 = p95 = p99 = lat[0] if lat else float("nan")
    table.add_row(
        str(len(lat)),
        f"{len(lat) / elapsed:.2f}",
        f"{1000 * p50:.0f}",
        f"{1000 * p95:.0f}",
        f"{1000 * p99:.0f}",
        f"{1000 * lat[-1]:.0f}" if lat else "-",
        str(sum(stats.errors.values())),
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="an already running server (loopback only); default: start one")
    parser.add_argument("--image", type=Path, help="photo to post (default: scikit-image's astronaut)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--model", type=Path, help="model bundle for the server started here")
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn processes for the server started here"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--api-key", default=os.environ.get("FD_API_KEY") or None)
    args = parser.parse_args()
    if args.clients < 1 or args.duration <= 0:
        parser.error("--clients and --duration must be positive")
    if args.url and not is_loopback_url(args.url):
        parser.error("--url must point at a loopback address (127.0.0.1, ::1 or localhost)")
    photo = args.image.read_bytes() if args.image else default_photo()

    console = Console()
    process = None
    url = args.url.rstrip("/") if args.url else None
    if url is None:
        console.print("starting a server on 127.0.0.1 …")
        process, url = start_server(args)
    try:
        console.print(f"{args.clients} clients for {args.duration:g} s …")
        stats, elapsed = asyncio.run(run_load(url, photo, args.clients, args.duration, args.api_key))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    console.print(report(stats, elapsed, args, url, len(photo)))
    if stats.errors:
        console.print("errors: " + ", ".join(f"{kind} × {n}" for kind, n in stats.errors.most_common()))
    console.print("faces per response: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.faces.items())))


if __name__ == "__main__":
    main()
