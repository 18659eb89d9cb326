"""Helpers for the server tests: requests, error checks and an analyzer whose batches wait for a gate."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from facial_demographics.pipeline import FaceAnalyzer
from facial_demographics.types import ImageResult


def post(url: str, files: Sequence[tuple[str, bytes]], **kwargs: Any) -> httpx.Response:
    parts = [("file", (name, data, "application/octet-stream")) for name, data in files]
    return httpx.post(f"{url}/v1/analyze", files=parts, timeout=60, **kwargs)


def assert_error(response: httpx.Response, status: int, code: str, item: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if item is not None:
        assert error["item"] == item
        assert item in error["message"]
    return error


class GatedAnalyzer:
    """The real analyzer, but each batch waits until the test opens ``gate``: makes "busy" deterministic."""

    def __init__(self, inner: FaceAnalyzer) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.batch_sizes: list[int] = []

    @property
    def manifest(self) -> dict[str, Any]:
        return self.inner.manifest

    def warm_up(self) -> None:
        self.inner.warm_up()

    def analyze_batch(self, sources: Sequence[Any]) -> list[ImageResult]:
        self.batch_sizes.append(len(sources))
        if not self.gate.wait(timeout=60):
            raise TimeoutError("the test never opened the gate")
        return self.inner.analyze_batch(sources)


def wait_for_queue(url: str, queued: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/healthz").json()["queued"] != queued:
        assert time.monotonic() < deadline, f"queue never reached {queued}"
        time.sleep(0.02)
