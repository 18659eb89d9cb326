"""Video: throughput at 640×480, tracker comparison, the stability targets, and the live page's frame rate.

Everything runs on videos made by ``evaluation.video_scenes`` (two UTKFace train-split faces moving in
lanes over a scikit-image photo, a bar sweeping in front of both every 1-2 s; seeds 0-5 are the ones
the tracker settings were chosen on, 100+ are held out), encoded as H.264 MP4 with PyAV. Without the
dataset it uses the astronaut (and her mirror image) instead, and says so.

Tables:

1. **throughput**: ``facial-demographics video`` end to end on a 640×480, 15 fps video (decode, detect,
   track, predict, draw, encode H.264; ``--no-video`` skips the last two), all frames and ``--every 3``;
   frames per second of video processed.
2. **trackers**: identity switches (a person's face changing track id) and unassigned faces on the
   same detections, for ByteTrack and OC-SORT with their defaults and the shipped setting (OC-SORT with
   DIoU ≥ -0.3), on the tuning seeds and on held-out seeds.
3. **targets**: the full pipeline on held-out videos: tracks per person, identity switches, the largest
   ratio of combined-age spread to raw per-frame spread, gender flips.
4. **reid**: choosing ``REID_THRESHOLD`` (``video/reid.py``): 16 s clips (640×480, 15 fps, two people in
   lanes, all frames analysed) in which the first person leaves at 4 s and comes back at 12 s in a third
   lane (``returns``), or instead a different person of the same labelled gender and ethnicity and an age
   within 5 years, the one nearest by face descriptor among those of a 400-face pool (``look-alikes``, the
   hardest case). Each clip's tracks are matched to the truth (majority of their frames), and every re-id
   comparison (a track and its nearest earlier track) is labelled same or different person; the table
   gives the distances and, per threshold, the returns joined and the look-alikes wrongly merged.
5. **live** (``--live``): the web page in headless Chromium (Debian's /usr/bin/chromium) with a fake
   camera playing a 640×480 generated video, for ``--live-seconds``; the page's own frames/s, and the
   same endpoint driven from Python (no browser) for comparison.

The throughput table runs each setting with and without re-identification (``reid`` on/off) to measure
what the face descriptors add.

    PYTHONPATH=src .venv/bin/python benchmarks/video.py [--seconds 10] [--live] [--json out/video.json]
    PYTHONPATH=src .venv/bin/python benchmarks/video.py --only reid throughput
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from facial_demographics.detection import DetectorConfig, FaceDetector
from facial_demographics.evaluation.scenes import PoolFace, pool_from_crops
from facial_demographics.evaluation.video_scenes import (
    Truth,
    lookalikes,
    make_video_scene,
    match_frame,
    score_tracking,
    write_video,
    write_y4m,
)
from facial_demographics.pipeline import FaceAnalyzer
from facial_demographics.video import VideoAnalyzer, VideoSource
from facial_demographics.video.command import video_command

console = Console()
TUNING_SEEDS = tuple(range(6))
HELD_OUT_SEEDS = tuple(range(100, 106))
REID_SEEDS = tuple(range(200, 212))
REID_AWAY = (4.0, 12.0)  # the first person leaves at 4 s and is back at 12 s (8 s away)
REID_THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6)


def _dataset() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "UTKFace"
    return Path(os.environ.get("FD_UTKFACE_DIR", default))


def face_pool(size: int = 24) -> tuple[list[PoolFace], str]:
    """UTKFace train-split faces when the dataset is there, else the astronaut and her mirror image."""
    dataset = _dataset()
    if dataset.is_dir():
        from facial_demographics.evaluation.detection_eval import BenchmarkSettings, load_pool

        return load_pool(dataset, BenchmarkSettings(pool_size=size, seed=5)), f"UTKFace train split ({dataset})"
    import cv2
    from skimage import data

    head = cv2.resize(data.astronaut()[30:250, 150:320], (200, 200), interpolation=cv2.INTER_AREA)
    pool = pool_from_crops(["astronaut", "mirrored"], [head, np.ascontiguousarray(head[:, ::-1])],
                           FaceDetector(DetectorConfig.single_scale()))
    return pool, "the astronaut (UTKFace not found: set FD_UTKFACE_DIR)"


def throughput(pool: list[PoolFace], seconds: float, work: Path, repeats: int = 2) -> list[dict[str, Any]]:
    """Each setting without and with re-identification, alternated ``repeats`` times; the fastest run of
    each counts (a shared machine only ever slows a run down). ``re-id's own`` is the time measured inside
    the re-identification (frame crops, loading dlib, descriptors) over the run without it: the least
    disturbed by other jobs, since both come from one run."""
    scene = make_video_scene(pool, 100, seconds=seconds, fps=15)
    path = work / "throughput.mp4"
    write_video(scene, path)
    analyzer = FaceAnalyzer()
    analyzer.warm_up()
    rows = []
    for every, video in ((1, True), (1, False), (3, True), (3, False)):
        best: dict[bool, Any] = {}
        for _ in range(repeats):
            for reid in (False, True):
                report = video_command(str(path), work / f"out-{every}-{video}-{reid}",
                                       VideoAnalyzer(analyzer, every=every, reid=reid), video=video,
                                       console=Console(file=open(os.devnull, "w")))
                if reid not in best or report.seconds < best[reid].seconds:
                    best[reid] = report
        off, on = best[False], best[True]
        rows.append({"every": every, "video": video, "frames": on.frames, "analysed": on.analysed,
                     "people": len(on.people), "s, no re-id": round(off.seconds, 2), "s, re-id": round(on.seconds, 2),
                     "fps, no re-id": round(off.fps, 1), "fps, re-id": round(on.fps, 1),
                     "re-id adds": f"{100 * (on.seconds / off.seconds - 1):+.0f} %",
                     "re-id's own": f"{on.reid_seconds:.2f} s ({100 * on.reid_seconds / off.seconds:.0f} %)"})
    return rows


Detections = list[tuple[float, np.ndarray, np.ndarray]]
Videos = list[tuple[list[list[Truth]], Detections]]


def detections(pool: list[PoolFace], seeds: Sequence[int], work: Path) -> Videos:
    """Each video's truth and its detections per frame (detected once, shared by every tracker)."""
    detector = FaceDetector()
    out = []
    for seed in seeds:
        path = work / f"track-{seed}.mp4"
        truths = write_video(make_video_scene(pool, seed, seconds=6, fps=15), path)
        frames = []
        with VideoSource(path) as source:
            for frame in source.frames():
                found = detector.detect(frame.image)
                frames.append((frame.time, np.array([d.box for d in found]).reshape(-1, 4),
                               np.array([d.score for d in found])))
        out.append((truths, frames))
    return out


def switches(make: Callable[[], Any], videos: Videos, every: int) -> tuple[int, int]:
    """Identity switches and faces left without an id (after their first frame) over ``videos``."""
    import supervision as sv

    total, unassigned = 0, 0
    for truths, frames in videos:
        tracker = make()
        ids: dict[int, list[int]] = {}
        for i, (t, boxes, scores) in enumerate(frames):
            if i % every:
                continue
            out = tracker.update(sv.Detections(xyxy=boxes.astype(float), confidence=scores.astype(float)), timestamp=t)
            if len(out) == 0 or out.tracker_id is None:
                continue
            for person, j in match_frame(truths[i], [{"box": list(b)} for b in out.xyxy]).items():
                track = int(out.tracker_id[j])
                if track >= 0:
                    ids.setdefault(person, []).append(track)
                elif person in ids:
                    unassigned += 1
        total += sum(sum(a != b for a, b in zip(seq, seq[1:], strict=False)) for seq in ids.values())
    return total, unassigned


def trackers_table(pool: list[PoolFace], work: Path) -> list[dict[str, Any]]:
    import trackers
    from trackers.utils.iou import DIoU

    from facial_demographics.video.tracking import MIN_DIOU

    candidates: dict[str, Callable[[], Any]] = {
        "ByteTrack, defaults (2 s buffer)": lambda: trackers.ByteTrackTracker(lost_track_buffer=60),
        "OC-SORT, defaults (2 s buffer)": lambda: trackers.OCSORTTracker(lost_track_buffer=60),
        f"OC-SORT, DIoU ≥ {MIN_DIOU} (shipped)": lambda: trackers.OCSORTTracker(
            lost_track_buffer=60, minimum_consecutive_frames=1, iou=DIoU(), minimum_iou_threshold=MIN_DIOU),
    }
    rows = []
    for part, seeds in (("tuning", TUNING_SEEDS), ("held out", HELD_OUT_SEEDS)):
        videos = detections(pool, seeds, work)
        occlusions = sum(len(make_video_scene(pool, s, seconds=6, fps=15).passers) * 2 for s in seeds)
        for name, make in candidates.items():
            s1, u1 = switches(make, videos, 1)
            s3, u3 = switches(make, videos, 3)
            rows.append({"videos": f"{part}: {len(seeds)}, {occlusions} occlusions", "tracker": name,
                         "switches": s1, "no id": u1, "switches, every 3": s3, "no id, every 3": u3})
    return rows


def targets(pool: list[PoolFace], work: Path) -> list[dict[str, Any]]:
    """Per-person age target: combined spread ≤ 1/3 of the raw one, or ≤ 0.5 years for a face whose raw
    answers barely move (a third of almost nothing is below what the rounded display shows)."""
    analyzer = FaceAnalyzer()
    rows = []
    for every, seconds in ((1, 4), (1, 6), (3, 10)):
        ratios, met, flips, idsw, tracks = [], 0, 0, 0, 0
        for seed in HELD_OUT_SEEDS:
            path = work / f"target-{seed}-{seconds}.mp4"
            truths = write_video(make_video_scene(pool, seed, seconds=seconds, fps=15), path)
            out = work / f"target-out-{seed}-{seconds}-{every}"
            video_command(str(path), out, VideoAnalyzer(analyzer, every=every), video=False,
                          console=Console(file=open(os.devnull, "w")))
            records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
            score = score_tracking(truths, records)
            for person in score["people"]:
                tracks += len(person["tracks"])
                ratios.append(person["spread_ratio"])
                met += person["spread_ratio"] <= 1 / 3 or person["combined_age_spread"] <= 0.5
            flips += score["gender_flips"]
            idsw += score["identity_switches"]
        rows.append({"every": every, "s": seconds, "people": len(ratios), "tracks": tracks, "id switches": idsw,
                     "spread ratio median": round(float(np.median(ratios)), 2),
                     "max": round(max(ratios), 2), "age target met": f"{met}/{len(ratios)}", "gender flips": flips})
    return rows


def _track_people(truths: list[list[Truth]], records: list[dict[str, Any]]) -> dict[int, int]:
    """Track id → the truth person most of its matched faces belong to."""
    votes: dict[int, dict[int, int]] = {}
    for record in records:
        for person, j in match_frame(truths[record["frame"]], record["faces"]).items():
            track = record["faces"][j]["track_id"]
            if track is not None:
                votes.setdefault(track, {}).setdefault(person, 0)
                votes[track][person] += 1
    return {t: max(v, key=lambda p: v[p]) for t, v in votes.items()}


def _stand_in(pool: list[PoolFace], seed: int, describer: Any) -> PoolFace | None:
    """The look-alike of the first person of clip ``seed``: same gender, ethnicity, age ±5, nearest descriptor."""
    first = make_video_scene(pool, seed, seconds=16, fps=15, away=REID_AWAY).people[0].face
    similar = lookalikes(pool, first)
    if not similar:
        return None
    own = describer.describe(first.image, first.landmarks)
    return min(similar, key=lambda f: float(np.linalg.norm(describer.describe(f.image, f.landmarks) - own)))


def reid_comparisons(pool: list[PoolFace], work: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every re-id comparison in the return and look-alike clips, labelled by the truth; and per clip the
    people counted and the true number."""
    from facial_demographics.datasets.descriptors import FaceDescriber

    analyzer = FaceAnalyzer()
    describer = FaceDescriber()
    out, clips = [], []
    for kind in ("returns", "look-alikes"):
        for seed in REID_SEEDS:
            stand_in = _stand_in(pool, seed, describer) if kind == "look-alikes" else None
            if kind == "look-alikes" and stand_in is None:
                console.print(f"[yellow]seed {seed}: no look-alike in the pool[/yellow]")
                continue
            scene = make_video_scene(pool, seed, seconds=16, fps=15, away=REID_AWAY, stand_in=stand_in)
            path = work / f"reid-{kind}-{seed}.mp4"
            truths = write_video(scene, path)
            folder = work / f"reid-out-{kind}-{seed}"
            report = video_command(str(path), folder, VideoAnalyzer(analyzer), video=False,
                                   console=Console(file=open(os.devnull, "w")))
            owners = _track_people(truths, [json.loads(x) for x in (folder / "frames.jsonl").read_text().splitlines()])
            # A returning person is one Person with two windows; a look-alike is a Person of their own.
            clips.append({"kind": kind, "seed": seed, "people": len(report.people), "true people": len(scene.people)})
            for track in (json.loads(x) for x in (folder / "tracks.jsonl").read_text().splitlines()):
                reid = track["reid"] or {}
                if reid.get("nearest_track") is None:
                    continue
                same = owners.get(track["track_id"]) == owners.get(reid["nearest_track"])
                out.append({"kind": kind, "seed": seed, "track": track["track_id"], "nearest": reid["nearest_track"],
                            "same person": same, "distance": reid["distance"],
                            "faces": [p.face.key for p in scene.people], "people": len(report.people),
                            "true people": clips[-1]["true people"]})
    return out, clips


def people_table(clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per kind of clip: how often the people were counted right (at the shipped threshold)."""
    rows = []
    for kind in ("returns", "look-alikes"):
        own = [c for c in clips if c["kind"] == kind]
        wrong = [f"seed {c['seed']}: {c['people']} for {c['true people']}" for c in own
                 if c["people"] != c["true people"]]
        rows.append({"clips": kind, "people counted right": f"{len(own) - len(wrong)}/{len(own)}",
                     "wrong": "; ".join(wrong) or "-"})
    return rows


def reid_table(comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per threshold: same-person comparisons joined, different-person comparisons wrongly merged."""
    same = [c["distance"] for c in comparisons if c["same person"]]
    other = [c["distance"] for c in comparisons if not c["same person"]]
    rows = []
    for threshold in REID_THRESHOLDS:
        rows.append({"threshold": threshold, "same person joined": f"{sum(d <= threshold for d in same)}/{len(same)}",
                     "different people merged": f"{sum(d <= threshold for d in other)}/{len(other)}"})
    rows.append({"threshold": "distances", "same person joined": _spread(same),
                 "different people merged": _spread(other)})
    return rows


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"min {min(values):.3f}, median {float(np.median(values)):.3f}, max {max(values):.3f}"


def live(pool: list[PoolFace], seconds: float, work: Path) -> list[dict[str, Any]]:
    import httpx

    from facial_demographics.imaging import encode_jpeg
    from facial_demographics.server import ServerSettings, create_app, running_server

    scene = make_video_scene(pool, 101, seconds=6, fps=15, occlusions=False)
    rows = []
    with running_server(create_app(ServerSettings(), analyzer=FaceAnalyzer())) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            session = client.post("/v1/live/sessions").json()["session"]
            jpegs = [encode_jpeg(scene.render(i)[0], quality=80) for i in range(scene.frames)]
            started, n = time.perf_counter(), 0
            while time.perf_counter() - started < seconds:
                client.post(f"/v1/live/sessions/{session}/frames", params={"t": n / 15},
                            content=jpegs[n % len(jpegs)], headers={"Content-Type": "image/jpeg"}).raise_for_status()
                n += 1
            rows.append({"client": "Python (httpx), JPEG q80", "frames": n,
                         "fps": round(n / (time.perf_counter() - started), 1)})
        chromium = Path("/usr/bin/chromium")
        if chromium.exists():
            camera = work / "camera.y4m"
            write_y4m(scene, camera)
            rows.append(_page_fps(url, camera, chromium, seconds))
        else:
            console.print("[yellow]no /usr/bin/chromium: the page row is left out[/yellow]")
    return rows


def _page_fps(url: str, camera: Path, chromium: Path, seconds: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=args)
        page = browser.new_page()
        page.goto(url + "/")
        page.click("#live-button")
        page.wait_for_function("() => Number(document.querySelector('#live-panel').dataset.frames || 0) >= 3",
                               timeout=60_000)
        first = int(page.evaluate("document.querySelector('#live-panel').dataset.frames"))
        started = time.perf_counter()
        page.wait_for_timeout(seconds * 1000)
        frames = int(page.evaluate("document.querySelector('#live-panel').dataset.frames")) - first
        elapsed = time.perf_counter() - started
        browser.close()
    return {"client": "the page in Chromium, fake camera 640×480", "frames": frames, "fps": round(frames / elapsed, 1)}


def _table(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the throughput video")
    parser.add_argument("--live", action="store_true", help="also measure the live page (needs chromium)")
    parser.add_argument("--live-seconds", type=float, default=20.0)
    tables = ["throughput", "trackers", "targets", "reid"]
    parser.add_argument("--skip", nargs="*", default=[], choices=tables)
    parser.add_argument("--only", nargs="*", choices=tables, help="run only these tables")
    parser.add_argument("--json", type=Path, help="also write the tables here")
    args = parser.parse_args(argv)
    if args.only:
        args.skip = [t for t in tables if t not in args.only]
    load = os.getloadavg()[0]
    console.print(f"load average {load:.2f} on {os.cpu_count()} CPUs"
                  + (" [yellow](busy machine: numbers are pessimistic)[/yellow]" if load > (os.cpu_count() or 1) / 2
                     else ""))
    pool, source = face_pool()
    console.print(f"faces: {source}, {len(pool)} usable")
    results: dict[str, Any] = {"faces": source, "load": load}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "throughput" not in args.skip:
            results["throughput"] = throughput(pool, args.seconds, work)
            _table(f"throughput, 640×480 at 15 fps, {args.seconds:g} s, 2 faces (without and with re-id)",
                   results["throughput"])
        if "trackers" not in args.skip:
            results["trackers"] = trackers_table(pool, work)
            _table("identity switches on the same detections (6 s videos)", results["trackers"])
        if "targets" not in args.skip:
            results["targets"] = targets(pool, work)
            _table("targets on held-out videos (0 switches, spread ratio ≤ 1/3, 0 flips)", results["targets"])
        if "reid" not in args.skip:
            big, _ = face_pool(400)
            results["reid_comparisons"], results["reid_clips"] = reid_comparisons(big, work)
            results["reid"] = reid_table(results["reid_comparisons"])
            results["reid_people"] = people_table(results["reid_clips"])
            _table(f"re-identification: 16 s clips, away {REID_AWAY[0]:g}-{REID_AWAY[1]:g} s, {len(REID_SEEDS)} seeds",
                   results["reid"])
            _table("re-id comparisons", [{k: v for k, v in c.items() if k != "faces"}
                                         for c in results["reid_comparisons"]])
            _table("people counted (returns: 2 people, look-alikes: 3)", results["reid_people"])
        if args.live:
            results["live"] = live(pool, args.live_seconds, work)
            _table("live camera at 640×480 (/v1/live)", results["live"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
