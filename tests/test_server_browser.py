"""The web page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; skipped without it).

Screenshots go to <repo>/out/screenshots/ (webapp.png at desktop width, webapp-phone.png at 390 px).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facial_demographics.imaging import encode_jpeg
from facial_demographics.pipeline import FaceAnalyzer
from facial_demographics.server import ServerSettings, create_app, running_server

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "out" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A synthetic camera, so the snapshot path can be exercised without hardware or a permission prompt.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
FIRST_BOX_COLOUR = (0xE1, 0x1D, 0x48)  # PALETTE[0] in app.js

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def server(tiny_bundle: Path) -> Iterator[str]:
    with running_server(create_app(ServerSettings(), analyzer=FaceAnalyzer(model=tiny_bundle))) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def photos(tmp_path: Path, astronaut: np.ndarray) -> tuple[Path, Path]:
    good = tmp_path / "astronaut.jpg"
    good.write_bytes(encode_jpeg(astronaut))
    bad = tmp_path / "notes.jpg"
    bad.write_text("This is a shopping list, not a photo.\n")
    return good, bad


def open_page(browser: Any, url: str, **context_options: Any) -> tuple[Any, Any, list[str]]:
    """A fresh page that records (and blocks) any request leaving the app's origin."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    outside: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(url) or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/")
    page.wait_for_function("() => document.querySelector('#model-info').textContent.startsWith('Model:')")
    return context, page, outside + errors


def test_upload_shows_boxes_and_table(browser: Any, server: str, photos: tuple[Path, Path]) -> None:
    context, page, problems = open_page(browser, server, viewport={"width": 1100, "height": 900})
    good, bad = photos
    assert "untrained-test" in page.inner_text("#model-info")
    page.set_input_files("#file-input", [str(good), str(bad)])
    page.wait_for_selector(".card .badge.ok")
    page.wait_for_selector(".card.failed")

    ok_card = page.locator(".card", has=page.locator(".badge.ok"))
    assert ok_card.locator(".card-title").inner_text() == "astronaut.jpg"
    assert ok_card.locator(".badge").inner_text() == "1 face"
    cells = ok_card.locator("tbody tr").first.locator("td").all_inner_texts()
    assert cells[0].strip() == "1"
    age = float(cells[1])
    low, high = (float(v) for v in cells[2].split("–"))
    assert low <= age <= high
    assert cells[4] in ("male", "female") and cells[5].endswith("%")

    # The canvas shows the photo at full size with the first box outline in its palette colour.
    size = page.evaluate(
        "(() => { const c = document.querySelector('.card:not(.failed) canvas');"
        " return [c.width, c.height]; })()"
    )
    assert size == [512, 512]
    pixel = _box_edge_pixel(page, server, good)
    assert all(abs(a - b) <= 40 for a, b in zip(pixel, FIRST_BOX_COLOUR, strict=True)), pixel

    failed = page.locator(".card.failed")
    assert failed.locator(".card-title").inner_text() == "notes.jpg"
    error_text = failed.locator(".error-box").inner_text()
    assert "Rejected" in error_text and "not an image" in error_text and "not_an_image" in error_text

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "webapp.png"), full_page=True)
    assert problems == []
    context.close()


def _box_edge_pixel(page: Any, server: str, photo: Path) -> list[int]:
    """The canvas pixel on the middle of the first box's top edge (box from the API for the same photo)."""
    import httpx

    with photo.open("rb") as fh:
        face = httpx.post(f"{server}/v1/analyze", files={"file": (photo.name, fh)}, timeout=60).json()
    x1, y1, x2, _ = face["results"][0]["faces"][0]["box"]
    return page.evaluate(
        """([x, y]) => Array.from(document.querySelector('.card:not(.failed) canvas')
               .getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3))""",
        [int((x1 + x2) / 2), int(y1)],
    )


def test_phone_width_and_webcam_snapshot(browser: Any, server: str, photos: tuple[Path, Path]) -> None:
    context, page, problems = open_page(
        browser,
        server,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    page.set_input_files("#file-input", [str(photos[0])])
    page.wait_for_selector(".card .badge.ok")
    # Nothing wider than the phone: no sideways scrolling of the page.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    canvas_width = page.evaluate("document.querySelector('.card canvas').getBoundingClientRect().width")
    assert 300 <= canvas_width <= 390

    # The camera button appears because this browser offers getUserMedia (a fake device here).
    camera = page.locator("#camera-button")
    assert camera.is_visible()
    camera.click()
    page.wait_for_function("() => document.querySelector('#camera-video').videoWidth > 0")
    page.click("#snap-button")
    page.wait_for_function("() => document.querySelectorAll('.card .badge.ok').length === 2")
    assert page.locator(".card-title").first.inner_text().startswith("webcam-")
    page.click("#camera-close")
    assert page.locator("#camera-panel").is_hidden()

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "webapp-phone.png"), full_page=True)
    assert problems == []
    context.close()


def test_api_key_prompt(browser: Any, tiny_bundle: Path, photos: tuple[Path, Path]) -> None:
    settings = ServerSettings(api_key="page-key")
    with running_server(create_app(settings, analyzer=FaceAnalyzer(model=tiny_bundle))) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#key-form:not([hidden])")
        page.set_input_files("#file-input", [str(photos[0])])
        page.wait_for_selector(".card.failed")
        assert "unauthorized" in page.inner_text(".card.failed .error-box")
        page.fill("#key-input", "page-key")
        page.click("#key-form button")
        page.wait_for_function("() => document.querySelector('#model-info').textContent.startsWith('Model:')")
        page.set_input_files("#file-input", [str(photos[0])])
        page.wait_for_selector(".card .badge.ok")
        context.close()
