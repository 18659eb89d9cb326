"""Regenerate the pictures of the README and the docs (docs/images/): run it after a change to the model, the
labels or the page.

- ``annotated_astronaut.jpg``: the bundled public-domain sample photo, analysed and annotated;
- ``web_page.png``: the web page after analysing that photo, in headless Chromium (Debian's
  /usr/bin/chromium driven by Playwright; skipped without it).

Only the public-domain sample is shown: dataset faces (UTKFace) are never committed, not even inside a
generated scene.
docs/population_pyramid.png comes from ``benchmarks/population.py``.

Usage: .venv/bin/python scripts/make_readme_images.py
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from facial_demographics import FaceAnalyzer
from facial_demographics.annotate import draw
from facial_demographics.commands.analyze import SAMPLE_PHOTO
from facial_demographics.imaging import read_image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
CHROMIUM = Path("/usr/bin/chromium")


def annotated(analyzer: FaceAnalyzer, pixels: np.ndarray, target: Path) -> Path:
    """Analyse ``pixels`` and save the annotated copy as a JPEG (small enough for a README)."""
    Image.fromarray(draw(pixels, analyzer.analyze(pixels).faces)).save(target, quality=85)
    print(f"wrote {target}")
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def web_page(photo: Path, target: Path) -> None:
    """Screenshot the page after it analysed ``photo`` (a local server, headless Chromium)."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "facial_demographics", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url)
            page.set_input_files("#file-input", str(photo))
            page.wait_for_selector(".card .badge.ok", timeout=60_000)
            page.wait_for_timeout(500)
            page.locator(".card").first.screenshot(path=str(target))  # the photo, its boxes and its table
            browser.close()
        print(f"wrote {target}")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with FaceAnalyzer() as analyzer:
        annotated(analyzer, read_image(SAMPLE_PHOTO), OUT / "annotated_astronaut.jpg")
    if CHROMIUM.exists():
        web_page(SAMPLE_PHOTO, OUT / "web_page.png")  # the page draws its own labels on the plain photo
    else:
        print(f"{CHROMIUM} not found: web_page.png not made")


if __name__ == "__main__":
    main()
