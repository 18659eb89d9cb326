"""The page's population summary, pyramid, downloads and Clear, and the live tally after Stop, in headless
Chromium (Debian's /usr/bin/chromium via Playwright; skipped without it) against a real uvicorn.

Screenshots go to <repo>/out/screenshots/ (webapp-summary.png, webapp-live-tally.png).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from test_server_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, four_in_a_row, open_page

from facial_demographics.imaging import encode_jpeg
from facial_demographics.output import CSV_FIELDS
from facial_demographics.pipeline import FaceAnalyzer
from facial_demographics.population.records import read_results
from facial_demographics.server import ServerSettings, create_app, running_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def server(tiny_bundle: Path) -> Iterator[str]:
    with running_server(create_app(ServerSettings(), analyzer=FaceAnalyzer(model=tiny_bundle))) as url:
        yield url


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    """One Playwright for the module (its sync API cannot be started twice in a thread)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Any) -> Iterator[Any]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture()
def photos(tmp_path: Path, astronaut: np.ndarray) -> list[Path]:
    """One face, four faces in a row, and a text file named like a photo."""
    paths = [tmp_path / "astronaut.jpg", tmp_path / "row.jpg", tmp_path / "notes.jpg"]
    paths[0].write_bytes(encode_jpeg(astronaut))
    paths[1].write_bytes(encode_jpeg(four_in_a_row(astronaut)))
    paths[2].write_text("This is a shopping list, not a photo.\n")
    return paths


def download(page: Any, button: str) -> tuple[str, str]:
    """Click ``button`` and return the downloaded file's suggested name and text."""
    with page.expect_download() as info:
        page.click(button)
    return info.value.suggested_filename, Path(info.value.path()).read_text(encoding="utf-8")


def table(page: Any, selector: str) -> list[list[str]]:
    return [row.split("\t") for row in page.locator(f"{selector} tbody tr").all_inner_texts()]


def api_summary(server: str, photos: list[Path], bands: str) -> dict[str, Any]:
    files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in photos]
    response = httpx.post(f"{server}/v1/summary", params={"bands": bands}, files=files, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["summary"]  # type: ignore[no-any-return]


def test_batch_summary_pyramid_downloads_and_clear(
    browser: Any, server: str, photos: list[Path], tmp_path: Path
) -> None:
    context, page, problems = open_page(browser, server, viewport={"width": 1100, "height": 900}, accept_downloads=True)
    page.set_input_files("#file-input", [str(p) for p in photos])
    page.wait_for_function("() => document.querySelector('#summary').dataset.faces === '5'", timeout=60_000)
    assert page.inner_text("#status") == "Done, 1 rejected"
    note = page.inner_text("#summary-note")
    assert note.startswith("5 faces in 3 photos, 1 unreadable") and "90% intervals" in note

    # Tables: eight audience bands, two genders, eight band rows of female and male cells.
    age = table(page, "#summary-age")
    assert [r[0] for r in age] == ["0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
    assert sum(float(r[1].rstrip("%")) for r in age) == pytest.approx(100, abs=0.5)
    assert sum(float(r[3]) for r in age) == pytest.approx(5, abs=0.1)
    assert [r[0] for r in table(page, "#summary-gender")] == ["female", "male"]
    assert len(table(page, "#summary-cells")) == 8 and all(len(r) == 7 for r in table(page, "#summary-cells"))

    # The pyramid: a bar per band and gender (men left of the centre, women right), each with a whisker.
    pyramid = page.evaluate("""() => {
        const svg = document.querySelector('#pyramid');
        const mid = svg.viewBox.baseVal.width / 2;
        const bars = Array.from(svg.querySelectorAll('rect.bar'));
        return {bands: svg.dataset.bands, male: bars.filter((b) => b.classList.contains('male')).length,
                female: bars.filter((b) => b.classList.contains('female')).length,
                left: bars.filter((b) => b.classList.contains('male')).every((b) => b.x.baseVal.value
                      + b.width.baseVal.value < mid),
                right: bars.filter((b) => b.classList.contains('female')).every((b) => b.x.baseVal.value > mid),
                whiskers: svg.querySelectorAll('line.whisker').length, shown: svg.getBoundingClientRect().height};
    }""")
    assert pyramid == {"bands": "8", "male": 8, "female": 8, "left": True, "right": True, "whiskers": 48,
                       "shown": pyramid["shown"]} and pyramid["shown"] > 200

    # Downloads: the faces as analyze writes them, and the summary as the API gives it.
    name, text = download(page, "#faces-csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert name == "faces.csv" and text.splitlines()[0].split(",") == CSV_FIELDS
    expected_rows = [("astronaut.jpg", "0"), *(("row.jpg", str(i)) for i in range(4)), ("notes.jpg", "")]
    assert [(r["path"], r["face"]) for r in rows] == expected_rows
    assert "not an image" in rows[-1]["error"] and all(r["error"] == "" for r in rows[:-1])
    assert all(float(r["age_low"]) <= float(r["age"]) <= float(r["age_high"]) for r in rows[:-1])
    name, text = download(page, "#faces-json")
    (tmp_path / "faces.json").write_text(text)
    assert name == "faces.json" and [r["path"] for r in json.loads(text)] == ["astronaut.jpg", "row.jpg", "notes.jpg"]
    readback = read_results([tmp_path / "faces.json"])  # what `summarize` reads
    assert (readback.images, readback.errors, len(readback.evidence())) == (3, 1, 5)
    name, text = download(page, "#summary-json")
    expected = api_summary(server, photos[:2] + photos[2:], "13,18,25,35,45,55,65")
    assert name == "summary.json" and json.loads(text) == expected
    name, text = download(page, "#summary-csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert name == "summary.csv" and text.splitlines()[0] == "group,band,gender,share,low,high,count"
    assert [r["group"] for r in rows] == ["age"] * 8 + ["gender"] * 2 + ["age_gender"] * 16
    assert [float(r["share"]) for r in rows[:8]] == [r["share"] for r in expected["age"]]

    # Other bands: asked again without uploading; bad bands are explained, not a broken page.
    page.fill("#bands-input", "report")
    page.press("#bands-input", "Enter")
    page.wait_for_function("() => document.querySelector('#pyramid').dataset.bands === '5'")
    assert [r[0] for r in table(page, "#summary-age")] == ["0-24", "25-49", "50-74", "75-99", "100+"]
    page.fill("#bands-input", "30,20")
    page.click("#bands-form button")
    page.wait_for_selector("#summary-error:not([hidden])")
    assert "bands: edges must increase" in page.inner_text("#summary-error")
    assert page.locator("#summary-body").is_hidden() and page.locator("#summary-json").is_disabled()
    page.fill("#bands-input", "18,65")
    page.press("#bands-input", "Enter")
    page.wait_for_function("() => document.querySelector('#pyramid').dataset.bands === '3'")
    assert page.locator("#summary-error").is_hidden()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "webapp-summary.png"), full_page=True)

    # Clear empties the page: cards, summary, downloads, status and the file input.
    page.click("#clear-button")
    assert page.locator(".card").count() == 0
    assert page.locator("#summary").is_hidden() and page.locator("#batch-bar").is_hidden()
    assert page.inner_text("#status") == "" and page.evaluate("document.querySelector('#file-input').value") == ""
    # A new batch after Clear is summarised on its own.
    page.set_input_files("#file-input", [str(photos[0])])
    page.wait_for_function("() => document.querySelector('#summary').dataset.faces === '1'", timeout=60_000)
    assert page.inner_text("#summary-note").startswith("1 face in 1 photo ·")
    assert problems == []
    context.close()


def test_summary_fits_a_phone(browser: Any, server: str, photos: list[Path]) -> None:
    context, page, problems = open_page(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True,
                                        has_touch=True, device_scale_factor=2)
    page.set_input_files("#file-input", [str(p) for p in photos[:2]])
    page.wait_for_function("() => document.querySelector('#summary').dataset.faces === '5'", timeout=60_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # wide tables scroll in their own box
    width = page.evaluate("document.querySelector('#pyramid').getBoundingClientRect().width")
    assert 300 <= width <= 390
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "webapp-summary-phone.png"), full_page=True)
    assert problems == []
    context.close()


def test_face_filters_leave_faces_out_of_the_page_and_summary(browser: Any, server: str, photos: list[Path]) -> None:
    astronaut = photos[0]
    answer = httpx.post(f"{server}/v1/analyze", files={"file": (astronaut.name, astronaut.read_bytes())}, timeout=60)
    (face,) = answer.json()["results"][0]["faces"]
    size = min(face["box"][2] - face["box"][0], face["box"][3] - face["box"][1])
    context, page, problems = open_page(browser, server, viewport={"width": 1100, "height": 900})
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/v1/analyze" in r.url else None)

    # Min face above the astronaut's face: the photo is analysed, its face left out, the summary counts none.
    page.fill("#min-face-input", str(math.ceil(size) + 1))
    page.set_input_files("#file-input", [str(astronaut)])
    page.wait_for_function("() => document.querySelector('#summary').dataset.faces === '0'", timeout=60_000)
    assert f"min_face={math.ceil(size) + 1}" in sent[-1]
    assert page.inner_text(".card .badge") == "0 faces · 1 left out"
    assert page.locator(".card tbody tr").count() == 0
    assert "1 left out by the face filters" in page.inner_text(".card .no-faces")
    note = page.inner_text("#summary-note")
    assert note.startswith("0 faces in 1 photo, 1 without a face") and "1 face left out by the face filters" in note

    # Emptied and applied: the photo is analysed again and its face is back.
    page.fill("#min-face-input", "")
    page.click("#bands-form button")
    page.wait_for_function("() => document.querySelector('#summary').dataset.faces === '1'", timeout=60_000)
    assert "min_face" not in sent[-1] and page.locator(".card").count() == 1
    assert page.inner_text(".card .badge") == "1 face"
    # Min score 1 (Enter in the field applies it): nothing the detector finds is that sure.
    page.fill("#min-score-input", "1")
    page.press("#min-score-input", "Enter")
    page.wait_for_function("() => document.querySelector('#summary').dataset.faces === '0'", timeout=60_000)
    assert "min_score=1" in sent[-1] and page.inner_text(".card .badge") == "0 faces · 1 left out"
    # A value the server refuses is explained on the card, not a broken page.
    page.fill("#min-score-input", "")
    page.fill("#min-face-input", "-3")
    page.set_input_files("#file-input", [str(astronaut)])
    page.wait_for_function("() => document.querySelectorAll('.card.failed').length === 2", timeout=60_000)
    assert "min_face" in page.locator(".card.failed .error-box").first.inner_text()
    assert problems == []
    context.close()


# -- live camera: the tally stays after Stop -----------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_camera(astronaut: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .y4m the fake camera plays: two faces (the astronaut and her mirror image) moving, 4 s at 15 fps."""
    pytest.importorskip("trackers")
    pytest.importorskip("av")
    import cv2

    from facial_demographics.detection import DetectorConfig, FaceDetector
    from facial_demographics.evaluation.scenes import pool_from_crops
    from facial_demographics.evaluation.video_scenes import make_video_scene, write_y4m

    head = cv2.resize(astronaut[30:250, 150:320], (200, 200), interpolation=cv2.INTER_AREA)
    pool = pool_from_crops(["astronaut", "mirrored"], [head, np.ascontiguousarray(head[:, ::-1])],
                           FaceDetector(DetectorConfig.single_scale()))
    path = tmp_path_factory.mktemp("camera") / "faces.y4m"
    write_y4m(make_video_scene(pool, 5, seconds=4, fps=15, occlusions=False), path)
    return path


def test_live_tally_stays_after_stop(playwright: Any, server: str, fake_camera: Path) -> None:
    camera = f"--use-file-for-fake-video-capture={fake_camera}"
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, camera])
    try:
        context, page, problems = open_page(browser, server, viewport={"width": 1100, "height": 1000},
                                            accept_downloads=True)
        page.fill("#bands-input", "report")
        page.click("#live-button")
        page.wait_for_function("() => document.querySelector('#live-tally').dataset.people === '2'", timeout=90_000)
        assert page.locator("#live-tally").is_visible()
        assert "2 in view" in page.inner_text("#live-tally-note")
        page.click("#live-stop")
        assert page.locator("#live-panel").is_hidden()
        assert page.inner_text("#status") == "Live camera stopped."
        page.wait_for_function("() => document.querySelector('#live-tally').dataset.final === 'true'")
        assert page.locator("#live-tally").is_visible()
        note = page.inner_text("#live-tally-note")
        assert note.startswith("Final tally: 2 different people seen"), note
        rows = table(page, "#live-tally")
        assert [r[0] for r in rows] == ["0-24", "25-49", "50-74", "75-99", "100+", "All"]
        assert rows[-1][1:] == [str(sum(int(r[c]) for r in rows[:-1])) for c in range(1, 5)] and rows[-1][4] == "2"

        name, text = download(page, "#live-tally-csv")
        lines = list(csv.DictReader(io.StringIO(text)))
        assert name == "live-tally.csv" and text.splitlines()[0] == "band,female,male,unknown,total"
        assert [r["band"] for r in lines][-1] == "all" and lines[-1]["total"] == "2"
        name, text = download(page, "#live-tally-json")
        tally = json.loads(text)
        assert name == "live-tally.json"
        # With re-identification on (dlib installed), the tracks Stop ended joined people: counted by person.
        counted_by = "person" if tally["reid"] else "track"
        assert (tally["people"], tally["open"], tally["ended"], tally["counted_by"]) == (2, 0, True, counted_by)
        # Stop came while a frame was in work: that frame's end gave the open tracks their final answers,
        # which take the plain majority gender (running answers of this untrained model stay undecided).
        assert tally["unknown"] == 0 and tally["female"] + tally["male"] == 2
        assert tally["bands"] == ["0-24", "25-49", "50-74", "75-99", "100+"]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "webapp-live-tally.png"), full_page=True)
        assert problems == []
        context.close()
    finally:
        browser.close()
