"""The live-camera API (/v1/live) on a real uvicorn, and the page's live mode in headless Chromium
with a fake camera playing a generated video (skipped without Debian's /usr/bin/chromium)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("trackers")
pytest.importorskip("av")

from facial_demographics.detection import DetectorConfig, FaceDetector  # noqa: E402
from facial_demographics.evaluation.scenes import PoolFace, pool_from_crops  # noqa: E402
from facial_demographics.evaluation.video_scenes import VideoScene, make_video_scene, write_y4m  # noqa: E402
from facial_demographics.imaging import encode_jpeg  # noqa: E402
from facial_demographics.pipeline import FaceAnalyzer  # noqa: E402
from facial_demographics.server import ServerSettings, create_app, running_server  # noqa: E402
from facial_demographics.server.live import MAX_SESSIONS  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "out" / "screenshots"


@pytest.fixture(scope="module")
def scene(astronaut: np.ndarray) -> VideoScene:
    """640x480, 15 fps, two faces (the astronaut and her mirror image) moving, no occlusions."""
    import cv2

    head = cv2.resize(astronaut[30:250, 150:320], (200, 200), interpolation=cv2.INTER_AREA)
    pool: list[PoolFace] = pool_from_crops(["astronaut", "mirrored"], [head, np.ascontiguousarray(head[:, ::-1])],
                                           FaceDetector(DetectorConfig.single_scale()))
    return make_video_scene(pool, 5, seconds=4, fps=15, occlusions=False)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server(create_app(ServerSettings(), analyzer=FaceAnalyzer())) as url:
        yield url


def test_live_session_keeps_track_ids(server: str, scene: VideoScene) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        opened = client.post("/v1/live/sessions")
        assert opened.status_code == 201, opened.text
        session = opened.json()["session"]
        ids_per_frame = []
        for i in range(12):
            jpeg = encode_jpeg(scene.render(i)[0], quality=80)
            answer = client.post(f"/v1/live/sessions/{session}/frames", params={"t": i / 15}, content=jpeg,
                                 headers={"Content-Type": "image/jpeg"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert (body["frame"], body["width"], body["height"]) == (i, 640, 480)
            ids_per_frame.append(sorted(f["track_id"] for f in body["faces"] if f["track_id"] is not None))
        assert ids_per_frame[0] == []  # numbered from the second frame on
        assert all(len(ids) == 2 and ids == ids_per_frame[1] for ids in ids_per_frame[1:])
        tracks = body["tracks"]
        assert len(tracks) == 2 and all(t["frames"] == 12 for t in tracks)  # the first frame's evidence counts
        for t in tracks:
            assert t["age_interval"][0] <= t["age"] <= t["age_interval"][1]
        assert client.delete(f"/v1/live/sessions/{session}").status_code == 204
        gone = client.post(f"/v1/live/sessions/{session}/frames", content=jpeg)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "no_session"


def test_live_refuses_bad_frames_and_too_many_sessions(server: str) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        session = client.post("/v1/live/sessions").json()["session"]
        text = client.post(f"/v1/live/sessions/{session}/frames", content=b"not a picture at all")
        assert text.status_code == 415 and text.json()["error"]["code"] == "not_an_image"
        empty = client.post(f"/v1/live/sessions/{session}/frames", content=b"")
        assert empty.status_code == 422 and "frame" in empty.json()["error"]["message"]
        huge = client.post(f"/v1/live/sessions/{session}/frames", content=b"\xff" * (5 * 2**20))
        assert huge.status_code == 413
        extra = [client.post("/v1/live/sessions").json()["session"] for _ in range(MAX_SESSIONS - 1)]
        refused = client.post("/v1/live/sessions")
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        for key in [session, *extra]:
            assert client.delete(f"/v1/live/sessions/{key}").status_code == 204


@pytest.fixture(scope="module")
def fake_camera(scene: VideoScene, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("camera") / "faces.y4m"
    write_y4m(scene, path)
    return path


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_page_live_mode_draws_tracked_faces(server: str, fake_camera: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    args = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={fake_camera}"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server + "/")
        page.click("#live-button")
        page.wait_for_function("() => Number(document.querySelector('#live-panel').dataset.frames || 0) >= 12",
                               timeout=90_000)
        size = page.evaluate("[document.querySelector('#live-video').videoWidth, "
                             "document.querySelector('#live-video').videoHeight]")
        assert size == [640, 480]
        drawn: list[dict[str, Any]] = page.evaluate(
            "JSON.parse(document.querySelector('#live-overlay').dataset.tracks || '[]')")
        assert len(drawn) == 2 and all(isinstance(t["id"], int) for t in drawn)
        rows = page.locator("#live-tracks tr").all_inner_texts()
        # Person, age, interval, gender (– while undecided: the astronaut is ambiguous to the model), P, frames.
        assert len(rows) == 2 and all(re.fullmatch(r"#\d+\t\d+\.\d\t\d+–\d+\t(female|male|–)\t(\d+%|–)\t\d+", row)
                                      for row in rows), rows
        stats = page.inner_text("#live-stats")
        assert stats.startswith("Live:") and "frames/s" in stats and "2 people" in stats
        fps = float(page.evaluate("document.querySelector('#live-panel').dataset.fps"))
        print(f"live page: {fps:.1f} frames/s at 640x480")  # measured properly in benchmarks/video.py
        assert fps > 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "webapp-live.png"), full_page=True)
        page.click("#live-stop")
        assert page.locator("#live-panel").is_hidden()
        assert page.inner_text("#status") == "Live camera stopped."
        assert errors == []
        browser.close()
