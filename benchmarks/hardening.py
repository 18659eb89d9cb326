"""Hardening benchmark (issues 13 and 34): ``facial-demographics serve`` with its defaults under hostile load.

Starts its own server (a separate process) on a free 127.0.0.1 port, with its log in a temporary file
(scanned at the end for tracebacks and 500s), and runs these sections (``--only`` picks some):

slow     200 sockets trickle header lines (one ``X-a: b`` a second) and reconnect at once when dropped,
         for ``--attack`` seconds, while one client posts a normal photo and another asks ``/healthz``.
idle     103 uploads declare 10 MiB each (the upload limit; 1,030 MiB in all), send 9 bytes and wait (reconnecting when
         dropped), with the same probes.
memory   4 requests at once of a 7000×7000 PNG, of 16 × 1800×1800 PNGs, of 5 × 3000×3000 PNGs: peak RSS
         (VmHWM, reset before each burst) against budget + baseline, and how long RSS takes to come back
         within 25 % of what it was before the burst (watched for ``--settle`` seconds).
load     ``--clients`` clients post a normal photo for ``--duration`` seconds: errors, p50/p99, RSS over time.
limits   a 20 KB header against the 16 KB limit, ``t=inf`` and ``t=1e308`` for a live frame, a time going back.

The attackers connect from 127.0.0.2 (Linux routes all of 127/8 to loopback), so the per-address caps see
them as another client; ``--same-address`` sends them from 127.0.0.1 like the probes.

    python benchmarks/hardening.py                                   # everything: about 12 minutes
    python benchmarks/hardening.py --only slow,idle --attack 10      # quicker while iterating
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from load import default_photo, free_port
from PIL import Image
from rich.console import Console
from rich.table import Table

MiB = 2**20
SECTIONS = ("slow", "idle", "memory", "load", "limits")


def png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 150)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def proc_mib(pid: int, name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{name} not in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(sorted(values), n=100, method="inclusive")[round(100 * q) - 1]


@dataclass
class Server:
    process: asyncio.subprocess.Process
    url: str
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


async def start_server(model: Path | None, log: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "facial_demographics", "serve", "--port", str(port)]
    if model is not None:
        argv += ["--model", str(model)]
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(*argv, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for _ in range(1200):
            if process.returncode is not None:
                raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
            try:
                if (await http.get(f"{url}/healthz", timeout=2)).status_code == 200:
                    return Server(process, url, port, log)
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the server did not start")


# -- probes: a normal photo and /healthz, sequentially, while an attack runs ---------------------------------
@dataclass
class Probe:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def row(self) -> list[str]:
        bad = sum(n for s, n in self.statuses.items() if s != "200")
        return [str(sum(self.statuses.values())), str(bad), f"{1000 * quantile(self.latencies, 0.5):.0f}",
                f"{1000 * quantile(self.latencies, 0.99):.0f}", f"{1000 * max(self.latencies, default=0):.0f}"]


async def probe(url: str, photo: bytes | None, until: float, out: Probe, pause: float = 0.2) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                if photo is None:
                    response = await http.get(f"{url}/healthz")
                else:
                    response = await http.post(f"{url}/v1/analyze", files={"file": ("p.jpg", photo, "image/jpeg")})
                out.statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    out.latencies.append(time.perf_counter() - started)
            except httpx.HTTPError as exc:
                out.statuses[type(exc).__name__] += 1
            await asyncio.sleep(pause)


@dataclass
class Attack:
    connected: int = 0
    dropped: int = 0  # closed (or answered) by the server
    failed: int = 0  # could not connect
    answers: Counter[str] = field(default_factory=Counter)


async def attacker(port: int, source: str, first: bytes, trickle: bytes | None, stop: asyncio.Event,
                   stats: Attack) -> None:
    """Connect, send ``first``, then ``trickle`` once a second (or nothing); reconnect when dropped."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except OSError:
            stats.failed += 1
            await asyncio.sleep(0.05)
            continue
        stats.connected += 1
        try:
            writer.write(first)
            while not stop.is_set():
                await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(4096), 1.0)
                except asyncio.TimeoutError:
                    if trickle:
                        writer.write(trickle)
                    continue
                stats.dropped += 1
                if data:
                    stats.answers[data.split(b" ", 2)[1].decode(errors="replace")] += 1
                break
        except OSError:
            stats.dropped += 1
        finally:
            writer.close()


async def attack_section(server: Server, photo: bytes, name: str, first: bytes, trickle: bytes | None,
                         sockets: int, seconds: float, source: str) -> tuple[Probe, Probe, Attack, float]:
    stop, stats = asyncio.Event(), Attack()
    reset_peak(server.pid)
    attackers = [asyncio.create_task(attacker(server.port, source, first, trickle, stop, stats))
                 for _ in range(sockets)]
    await asyncio.sleep(1.0)  # let them connect
    until = time.perf_counter() + seconds
    photos, health = Probe(), Probe()
    await asyncio.gather(probe(server.url, photo, until, photos), probe(server.url, None, until, health))
    stop.set()
    await asyncio.gather(*attackers, return_exceptions=True)
    return photos, health, stats, proc_mib(server.pid, "VmHWM")


async def slow_and_idle(server: Server, photo: bytes, args: argparse.Namespace, console: Console) -> None:
    source = "127.0.0.1" if args.same_address else "127.0.0.2"
    slow_first = b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\n"
    idle_first = (b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: " + str(10 * MiB).encode() + b"\r\n\r\n--b\r\nxxxx")  # 9 body bytes
    runs = {"slow": (f"{args.sockets} slow-header sockets", slow_first, b"X-a: b\r\n", args.sockets),
            "idle": (f"{args.uploads} idle uploads × 10 MiB declared", idle_first, None, args.uploads)}
    table = Table(title=f"attacks for {args.attack:g} s from {source}; probes from 127.0.0.1 (one request each "
                  "0.2 s after the previous answer)")
    for column in ("attack", "probe", "requests", "not 200", "p50 ms", "p99 ms", "max ms", "attacker conns",
                   "dropped by server", "peak RSS MiB"):
        table.add_column(column, justify="right")
    for key in ("slow", "idle"):
        if key not in args.only:
            continue
        label, first, trickle, sockets = runs[key]
        photos, health, stats, peak = await attack_section(server, photo, key, first, trickle, sockets,
                                                           args.attack, source)
        answers = ", ".join(f"{k}×{v}" for k, v in stats.answers.most_common()) or "-"
        table.add_row(label, "photo", *photos.row(), str(stats.connected), f"{stats.dropped} ({answers})",
                      f"{peak:.0f}")
        table.add_row("", "/healthz", *health.row(), "", "", "")
        for probe_name, p in (("photo", photos), ("healthz", health)):
            other = {k: v for k, v in p.statuses.items() if k != "200"}
            if other:
                console.print(f"{key} {probe_name}: {other}")
    console.print(table)


# -- memory bursts -------------------------------------------------------------------------------------------
async def memory_section(server: Server, args: argparse.Namespace, console: Console, baseline: float) -> None:
    bursts = [("4 × one 7000×7000 PNG", [png(7000)]), ("4 × 16 × 1800×1800 PNGs", [png(1800)] * 16),
              ("4 × 5 × 3000×3000 PNGs", [png(3000)] * 5)]
    budget = args.budget_mb
    table = Table(title=f"memory bursts (server budget {budget:g} MiB, baseline {baseline:.0f} MiB: RSS after start "
                  "and one request); 'back' = RSS within 25 % of 'before'")
    for column in ("burst", "answers", "before MiB", "peak MiB", "peak − before", "≤ budget + baseline",
                   "after 1 s", "last seen", "back after s"):
        table.add_column(column, justify="right")
    async with httpx.AsyncClient(timeout=180) as http:
        for label, images in bursts:
            await asyncio.sleep(2)
            before = proc_mib(server.pid, "VmRSS")
            reset_peak(server.pid)
            files = [("file", (f"big{i}.png", data, "image/png")) for i, data in enumerate(images)]
            responses = await asyncio.gather(*(http.post(f"{server.url}/v1/analyze", files=files) for _ in range(4)),
                                             return_exceptions=True)
            peak = proc_mib(server.pid, "VmHWM")
            answers = Counter(r.status_code if isinstance(r, httpx.Response) else type(r).__name__
                              for r in responses)
            ended = time.perf_counter()
            await asyncio.sleep(1)
            after1 = proc_mib(server.pid, "VmRSS")
            back: float | None = None
            while time.perf_counter() - ended < args.settle:
                rss = proc_mib(server.pid, "VmRSS")
                if back is None and rss <= 1.25 * before:
                    back = time.perf_counter() - ended
                    if not args.watch_full:
                        break
                await asyncio.sleep(0.5)
            final = proc_mib(server.pid, "VmRSS")
            table.add_row(label, ", ".join(f"{k}×{v}" for k, v in sorted(answers.items(), key=str)),
                          f"{before:.0f}", f"{peak:.0f}", f"{peak - before:.0f}",
                          "yes" if peak <= budget + baseline else "NO", f"{after1:.0f}", f"{final:.0f}",
                          "no" if back is None else f"{back:.1f}")
    console.print(table)


# -- many normal clients -------------------------------------------------------------------------------------
async def load_section(server: Server, photo: bytes, args: argparse.Namespace, console: Console) -> None:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    samples: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        deadline = started + args.duration

        async def client() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    response = await http.post(f"{server.url}/v1/analyze",
                                               files={"file": ("p.jpg", photo, "image/jpeg")})
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[f"HTTP {response.status_code}"] += 1

        async def sample() -> None:
            while time.perf_counter() < deadline:
                samples.append((time.perf_counter() - started, proc_mib(server.pid, "VmRSS")))
                await asyncio.sleep(args.duration / 10)

        await asyncio.gather(sample(), *(client() for _ in range(args.clients)))
        elapsed = time.perf_counter() - started
    samples.append((elapsed, proc_mib(server.pid, "VmRSS")))
    table = Table(title=f"{args.clients} clients × {args.duration:g} s, {len(photo) / 1024:.0f} KB photo")
    for column in ("requests", "req/s", "p50 ms", "p99 ms", "errors", "RSS MiB over time (every tenth)"):
        table.add_column(column, justify="right")
    table.add_row(str(len(latencies)), f"{len(latencies) / elapsed:.1f}", f"{1000 * quantile(latencies, 0.5):.0f}",
                  f"{1000 * quantile(latencies, 0.99):.0f}", str(sum(errors.values())),
                  " ".join(f"{rss:.0f}" for _, rss in samples))
    console.print(table)
    if errors:
        console.print("errors: " + ", ".join(f"{k} × {v}" for k, v in errors.most_common()))


# -- limits --------------------------------------------------------------------------------------------------
async def raw_status(port: int, request: bytes) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        return line.decode(errors="replace").strip() or "(closed)"
    except (OSError, asyncio.TimeoutError) as exc:
        return type(exc).__name__
    finally:
        writer.close()


async def limits_section(server: Server, photo: bytes, console: Console) -> None:
    table = Table(title="limits")
    table.add_column("request")
    table.add_column("answer")
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 20_000 + b"\r\n\r\n"
    table.add_row("20 KB header in one write (limit 16 KB)", await raw_status(server.port, head))
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        opened = await http.post("/v1/live/sessions")
        if opened.status_code != 201:
            table.add_row("live session", f"{opened.status_code} {opened.text[:80]}")
        else:
            key = opened.json()["session"]
            for t in ("inf", "1e308", "nan", "5", "4"):
                answer = await http.post(f"/v1/live/sessions/{key}/frames", params={"t": t}, content=photo,
                                         headers={"Content-Type": "image/jpeg"})
                body = answer.json()
                detail = f"time {body['time']}" if answer.status_code == 200 else body["error"]["code"]
                table.add_row(f"live frame t={t}", f"{answer.status_code} {detail}")
            await http.delete(f"/v1/live/sessions/{key}")
    console.print(table)


async def main_async(args: argparse.Namespace) -> None:
    console = Console(width=200)
    photo = default_photo()
    with tempfile.TemporaryDirectory() as tmp:
        server = await start_server(args.model, Path(tmp) / "server.log")
        try:
            async with httpx.AsyncClient(timeout=60) as http:  # warm up, then the baseline
                await http.post(f"{server.url}/v1/analyze", files={"file": ("p.jpg", photo, "image/jpeg")})
            baseline = proc_mib(server.pid, "VmRSS")
            console.print(f"server RSS after start and one request (the baseline): {baseline:.0f} MiB")
            if "slow" in args.only or "idle" in args.only:
                await slow_and_idle(server, photo, args, console)
            if "limits" in args.only:
                await limits_section(server, photo, console)
            if "memory" in args.only:
                await memory_section(server, args, console, baseline)
            if "load" in args.only:
                await load_section(server, photo, args, console)
        finally:
            server.process.terminate()
            await server.process.wait()
        log = server.log.read_text(errors="replace")
        fives = sum(1 for line in log.splitlines() if '" 500' in line)
        console.print(f"server log: {log.count('Traceback')} tracebacks, {fives} responses with status 500")
        if args.keep_log:
            Path(args.keep_log).write_text(log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model bundle (default: the bundled model)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--attack", type=float, default=30.0, help="seconds of each connection attack")
    parser.add_argument("--sockets", type=int, default=200, help="slow-header sockets")
    parser.add_argument("--uploads", type=int, default=103, help="idle uploads (103 × 10 MiB ≥ 1 GiB)")
    parser.add_argument("--same-address", action="store_true", help="attack from 127.0.0.1, as the probes")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to watch RSS after each burst")
    parser.add_argument("--watch-full", action="store_true", help="watch RSS for all of --settle")
    parser.add_argument("--budget-mb", type=float, default=1024.0, help="the server's memory budget (its default)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of the concurrent-client load")
    parser.add_argument("--keep-log", help="copy the server's log here")
    args = parser.parse_args()
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    if args.only - set(SECTIONS):
        parser.error(f"unknown sections: {sorted(args.only - set(SECTIONS))}")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
