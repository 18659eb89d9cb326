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
PALETTE = [(0xE1, 0x1D, 0x48), (0x25, 0x63, 0xEB), (0x16, 0xA3, 0x4A), (0xD9, 0x77, 0x06)]  # app.js, first four
FIRST_BOX_COLOUR = PALETTE[0]

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


def block_outside(page: Any, url: str) -> list[str]:
    """Abort every request that leaves the app's origin (as if offline); the list fills with their URLs."""
    outside: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(url) or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return outside


def open_page(browser: Any, url: str, **context_options: Any) -> tuple[Any, Any, list[str]]:
    """A fresh page that records (and blocks) any request leaving the app's origin."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    outside = block_outside(page, url)
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

    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Done')")
    assert page.inner_text("#status") == "Done, 1 rejected"
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


def four_in_a_row(astronaut: np.ndarray) -> np.ndarray:
    """Four copies of the astronaut's head and shoulders side by side (1000x300): four real faces whose
    labels are wider than the gap between them."""
    return np.concatenate([astronaut[0:300, 100:350]] * 4, axis=1)


def test_labels_of_a_row_of_faces_do_not_overlap(
    browser: Any, server: str, astronaut: np.ndarray, tmp_path: Path
) -> None:
    photo = tmp_path / "row.jpg"
    photo.write_bytes(encode_jpeg(four_in_a_row(astronaut)))
    context, page, problems = open_page(browser, server, viewport={"width": 1100, "height": 900})
    page.set_input_files("#file-input", [str(photo)])
    page.wait_for_selector(".card .badge.ok")
    assert page.inner_text(".card .badge") == "4 faces"
    labels = page.evaluate("JSON.parse(document.querySelector('.card canvas').dataset.labels)")
    width, height = page.evaluate("[document.querySelector('.card canvas').width, "
                                  "document.querySelector('.card canvas').height]")
    assert [label["n"] for label in labels] == [1, 2, 3, 4]
    # Numbered in reading order: one row, so left to right.
    lefts = [label["box"][0] for label in labels]
    assert lefts == sorted(lefts) and len(set(lefts)) == 4
    rects = [label["rect"] for label in labels]
    for x1, y1, x2, y2 in rects:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)
    # None hidden: each label's own colour shows at its top-left corner (PALETTE in app.js).
    for (x1, y1, _, _), colour in zip(rects, PALETTE[:4], strict=True):
        pixel = page.evaluate(
            "([x, y]) => Array.from(document.querySelector('.card canvas').getContext('2d')"
            ".getImageData(x, y, 1, 1).data.slice(0, 3))", [int(x1) + 1, int(y1) + 1])
        assert all(abs(p - c) <= 8 for p, c in zip(pixel, colour, strict=True)), (pixel, colour)
    # The table lists the faces in the same order, with the same numbers.
    numbers = page.locator(".card tbody tr td:first-child").all_inner_texts()
    assert [n.strip() for n in numbers] == ["1", "2", "3", "4"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "webapp-row.png"), full_page=True)
    assert problems == []
    context.close()


def test_small_photo_is_not_upscaled(browser: Any, server: str, astronaut: np.ndarray, tmp_path: Path) -> None:
    from PIL import Image

    photo = tmp_path / "small.png"
    Image.fromarray(astronaut).resize((256, 256)).save(photo)
    context, page, problems = open_page(browser, server, viewport={"width": 1100, "height": 900})
    page.set_input_files("#file-input", [str(photo)])
    page.wait_for_selector(".card .badge.ok")
    shown = page.evaluate("document.querySelector('.card canvas').getBoundingClientRect().width")
    card = page.evaluate("document.querySelector('.card').getBoundingClientRect().width")
    assert shown == pytest.approx(256, abs=1) and card > 600  # room to stretch, yet natural size
    assert page.inner_text("#status") == "Done."
    assert problems == []
    context.close()


def test_drag_over_highlights_the_drop_zone(browser: Any, server: str) -> None:
    context, page, problems = open_page(browser, server)
    style = "(() => { const s = getComputedStyle(document.querySelector('#drop-zone'));" \
            " return [s.borderTopStyle, s.backgroundColor, s.boxShadow]; })()"
    before = page.evaluate(style)
    data = page.evaluate_handle("new DataTransfer()")
    page.dispatch_event("#drop-zone", "dragenter", {"dataTransfer": data})
    page.dispatch_event(".drop-text", "dragenter", {"dataTransfer": data})  # crossing into a child...
    page.dispatch_event("#drop-zone", "dragleave", {"dataTransfer": data})  # ...and out of the zone itself
    page.wait_for_timeout(300)  # the CSS transition
    during = page.evaluate(style)
    assert before[0] == "dashed" and during[0] == "solid"
    assert during[1] != before[1] and during[2] != "none"
    page.dispatch_event("#drop-zone", "dragleave", {"dataTransfer": data})
    page.wait_for_timeout(300)
    assert page.evaluate(style) == before
    assert problems == []
    context.close()


@pytest.mark.parametrize(("path", "operation"), [("/docs", ".opblock"), ("/redoc", '[data-section-id^="operation/"]')])
def test_api_docs_render_offline(browser: Any, server: str, path: str, operation: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    outside = block_outside(page, server)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + path)
    # Selectors, not wait_for_function: the docs' CSP (rightly) forbids the eval that would need.
    page.locator(operation).nth(2).wait_for(timeout=20_000)  # three operations rendered
    text = page.text_content("body") or ""
    assert "/v1/analyze" in text and "/v1/model" in text and "/healthz" in text
    assert outside == [] and errors == []  # no CDN, fonts or favicon from elsewhere
    context.close()
