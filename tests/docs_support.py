"""Runnable snippets of the README and the docs: what the tests run, and where."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: A fenced block right after this line is run by the tests (bash or python), in order within its page.
MARKER = "<!-- runnable -->"
_BLOCK = re.compile(re.escape(MARKER) + r"\s*\n```(bash|python)\n(.*?)\n```", re.DOTALL)


@dataclass(frozen=True)
class Snippet:
    page: Path
    language: str
    code: str


def pages() -> list[Path]:
    """The README and every docs page."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def snippets(page: Path) -> list[Snippet]:
    return [Snippet(page, lang, code) for lang, code in _BLOCK.findall(page.read_text(encoding="utf-8"))]


def workspace(where: Path, astronaut: np.ndarray) -> Path:
    """A folder the snippets run in: ``photos/`` (the sample portrait and a picture without a face) and the
    repository's ``scripts/``, as in a fresh clone."""
    from facial_demographics.imaging import encode_jpeg, encode_png

    (where / "photos").mkdir(parents=True)
    (where / "photos" / "astronaut.jpg").write_bytes(encode_jpeg(astronaut))
    (where / "photos" / "wall.png").write_bytes(encode_png(np.full((120, 160, 3), 180, np.uint8)))
    (where / "scripts").symlink_to(ROOT / "scripts")
    return where


def run(snippet: Snippet, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run one snippet with the virtual environment's commands first on PATH; fails on the first error."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
    if snippet.language == "bash":
        cmd = ["bash", "-euo", "pipefail", "-c", snippet.code]
    else:
        cmd = [sys.executable, "-c", snippet.code]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
