"""Issue 13 against a real uvicorn on loopback: memory budgets, bounded annotations, a model checked at start,
slow and vanishing clients, schema bounds, HEAD, and the bad-input corpus."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image
from server_support import GatedAnalyzer, assert_error, post, wait_for_queue

from facial_demographics.imaging import encode_jpeg, read_header
from facial_demographics.model import BundleError
from facial_demographics.pipeline import FaceAnalyzer
from facial_demographics.server import ServerSettings, create_app, running_server

from bad_inputs import BadInput, animated, big_png, corpus, float_tiff

MB = 2**20


@pytest.fixture(scope="module")
def analyzer(tiny_bundle: Path) -> FaceAnalyzer:
    return FaceAnalyzer(model=tiny_bundle)


@pytest.fixture(scope="module")
def astronaut_jpeg(astronaut: np.ndarray) -> bytes:
    return encode_jpeg(astronaut)


def serve(settings: ServerSettings, analyzer: object, log_level: str = "warning") -> Iterator[str]:
    app = create_app(settings, analyzer=analyzer)  # type: ignore[arg-type]
    return running_server(app, settings=settings, log_level=log_level)  # type: ignore[return-value]


# -- memory budget -----------------------------------------------------------------------------------------
def test_decode_cost_comes_from_the_header_and_counts_bytes_per_pixel() -> None:
    rgb, wide = read_header(big_png(1000)), read_header(float_tiff(1000, 1000))
    assert (rgb.width, rgb.height, rgb.mode) == (1000, 1000, "RGB")
    assert wide.mode == "F" and wide.decode_bytes > rgb.decode_bytes >= 3 * rgb.pixels


def test_budgets_must_nest() -> None:
    with pytest.raises(ValueError, match="request_memory_bytes <= server_memory_bytes"):
        ServerSettings(request_memory_bytes=2048 * MB)
    with pytest.raises(ValueError, match="max_upload_bytes <= request_memory_bytes"):
        ServerSettings(max_upload_bytes=64 * MB, request_memory_bytes=32 * MB, server_memory_bytes=64 * MB)


def test_request_over_its_budget_is_413_before_decoding(analyzer: FaceAnalyzer, astronaut_jpeg: bytes) -> None:
    settings = ServerSettings(request_memory_bytes=64 * MB, server_memory_bytes=128 * MB, max_files=16)
    big = big_png(2000)  # 4 MP: ~56 MB once decoded, a few KB on the wire
    with serve(settings, analyzer) as url:
        started = time.perf_counter()
        response = post(url, [(f"big{i}.png", big) for i in range(16)])
        error = assert_error(response, 413, "request_too_large")
        assert "16 images" in error["message"] and "64 MB" in error["message"]
        assert time.perf_counter() - started < 5  # refused from the headers, nothing decoded
        assert_error(post(url, [("t.tif", float_tiff(2000, 2000))]), 413, "request_too_large")
        assert post(url, [("big.png", big)]).status_code == 200  # one fits
        assert post(url, [("a.jpg", astronaut_jpeg)]).status_code == 200


def test_full_server_waits_then_503_with_retry_after(analyzer: FaceAnalyzer) -> None:
    big = big_png(1500)  # 2.25 MP, ~32 MB reserved while its request lives
    settings = ServerSettings(
        request_memory_bytes=40 * MB, server_memory_bytes=40 * MB, memory_wait=0.5, batch_wait_ms=0
    )
    gated = GatedAnalyzer(analyzer)
    with serve(settings, gated) as url, ThreadPoolExecutor(1) as pool:
        holding = pool.submit(post, url, [("first.png", big)])
        wait_for_queue(url, 1)  # the first request holds its share inside the model
        started = time.perf_counter()
        refused = post(url, [("second.png", big)])
        waited = time.perf_counter() - started
        assert_error(refused, 503, "server_busy")
        assert int(refused.headers["retry-after"]) >= 1 and 0.4 < waited < 5
        gated.gate.set()
        assert holding.result(timeout=60).status_code == 200
        assert post(url, [("second.png", big)]).status_code == 200  # released: it fits again


def test_annotated_image_is_a_downscaled_jpeg_or_left_out(analyzer: FaceAnalyzer, astronaut_jpeg: bytes) -> None:
    settings = ServerSettings(annotate_max_side=200, max_annotated_bytes=1)
    with serve(settings, analyzer) as url:
        response = post(url, [("a.jpg", astronaut_jpeg), ("b.jpg", astronaut_jpeg)], params={"annotate": "true"})
        assert response.status_code == 200, response.text
        first, second = response.json()["results"]
        image = Image.open(io.BytesIO(base64.b64decode(first["annotated_jpeg"])))
        assert image.format == "JPEG" and image.size == (200, 200)
        assert first["faces"][0]["box"][2] > 200  # boxes stay in original pixels
        assert "annotated_jpeg" not in second and "left out" in second["annotated_note"]


# -- the model is checked at start --------------------------------------------------------------------------
def _rewrite_sha(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["sha256"]["model.onnx"] = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture()
def corrupt_bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    """The first 64 bytes of model.onnx overwritten, and the manifest's sha256 updated to match."""
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "corrupt"))
    graph = bytearray((bundle / "model.onnx").read_bytes())
    graph[:64] = bytes(range(64))
    (bundle / "model.onnx").write_bytes(bytes(graph))
    _rewrite_sha(bundle)
    return bundle


@pytest.fixture()
def misnamed_bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "misnamed"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["input"]["name"] = "pixels"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_bad_graphs_raise_bundle_error(corrupt_bundle: Path, misnamed_bundle: Path, astronaut: np.ndarray) -> None:
    lazy = FaceAnalyzer(model=corrupt_bundle)  # the Python API may load lazily...
    with pytest.raises(BundleError, match="ONNX Runtime cannot load the graph"):
        lazy.analyze(astronaut)  # ...but the first call says why, not a per-face failure
    with pytest.raises(BundleError, match="input.name 'pixels' is not an input of the graph"):
        FaceAnalyzer(model=misnamed_bundle).warm_up()


@pytest.mark.parametrize("which", ["corrupt", "misnamed"])
@pytest.mark.parametrize("command", ["serve", "analyze"])
def test_cli_refuses_a_bad_bundle_in_one_line(
    request: pytest.FixtureRequest, which: str, command: str, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    bundle = request.getfixturevalue(f"{which}_bundle")
    photo = tmp_path / "a.jpg"
    photo.write_bytes(astronaut_jpeg)
    args = ["--port", str(_free_port())] if command == "serve" else [str(photo)]
    done = subprocess.run([sys.executable, "-m", "facial_demographics", command, *args, "--model", str(bundle)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr and str(bundle) in lines[0], done.stderr
    assert ("cannot load the graph" if which == "corrupt" else "input.name 'pixels'") in lines[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- slow, idle and vanishing clients -----------------------------------------------------------------------
def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except (TimeoutError, ConnectionResetError):
        return False


def test_idle_and_slow_header_connections_are_dropped(analyzer: FaceAnalyzer, astronaut_jpeg: bytes) -> None:
    settings = ServerSettings(header_timeout=0.5, max_connections=20)
    with serve(settings, analyzer) as url:
        idle = [_connect(url) for _ in range(30)]  # more than max_connections, sending nothing
        slow = _connect(url)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        assert all(_closed_within(s, 5) for s in [*idle, slow])
        for s in [*idle, slow]:
            s.close()
        assert post(url, [("a.jpg", astronaut_jpeg)]).status_code == 200  # the slots came back
        with httpx.Client() as client:  # a kept-alive connection still serves a second request
            assert client.get(f"{url}/healthz").status_code == 200
            time.sleep(0.8)
            assert client.get(f"{url}/healthz").status_code == 200


def test_header_buffer_is_bounded(analyzer: FaceAnalyzer) -> None:
    """Headers that keep coming without an end are refused (431) once the buffer passes max_header_bytes."""
    settings = ServerSettings(max_header_bytes=4096)
    with serve(settings, analyzer) as url:
        sock = _connect(url)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 20000)
        assert sock.recv(1024).startswith(b"HTTP/1.1 431")
        sock.close()
        assert httpx.get(f"{url}/healthz").status_code == 200


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_client_disconnect_mid_upload_is_one_info_line(analyzer: FaceAnalyzer, astronaut_jpeg: bytes) -> None:
    records = _Records()
    loggers = [logging.getLogger(n) for n in ("facial_demographics.server.app", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(records)
    app_logger = loggers[0]
    level = app_logger.level
    app_logger.setLevel(logging.INFO)
    try:
        with serve(ServerSettings(), analyzer, log_level="info") as url:
            sock = _connect(url)
            head = (b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                    b"Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; "
                    b"filename=\"a.jpg\"\r\n\r\n")
            sock.sendall(head + astronaut_jpeg[:5000])
            time.sleep(0.3)
            sock.close()
            deadline = time.monotonic() + 10
            while not any("disconnected" in r.getMessage() for r in records.records):
                assert time.monotonic() < deadline, [r.getMessage() for r in records.records]
                time.sleep(0.05)
            assert post(url, [("a.jpg", astronaut_jpeg)]).status_code == 200
    finally:
        for logger in loggers:
            logger.removeHandler(records)
        app_logger.setLevel(level)
    (line,) = [r for r in records.records if "disconnected" in r.getMessage()]
    assert line.levelno == logging.INFO and line.exc_info is None and "\n" not in line.getMessage()
    assert not [r for r in records.records if r.levelno >= logging.WARNING], [r.getMessage() for r in records.records]


# -- schema bounds, HEAD, formats ----------------------------------------------------------------------------
def test_schema_bounds_the_file_array_and_head_works(analyzer: FaceAnalyzer) -> None:
    with serve(ServerSettings(max_files=5), analyzer) as url:
        schema = httpx.get(f"{url}/openapi.json").json()
        body = schema["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert body["properties"]["file"]["minItems"] == 1 and body["properties"]["file"]["maxItems"] == 5
        for path in ("/", "/healthz"):
            response = httpx.head(f"{url}{path}")
            assert response.status_code == 200 and response.content == b""
            assert int(response.headers["content-length"]) > 0


@pytest.fixture(scope="module")
def plain_url(analyzer: FaceAnalyzer) -> Iterator[str]:
    with serve(ServerSettings(max_pixels=1_000_000), analyzer) as url:
        yield url


@pytest.mark.parametrize("bad", corpus(), ids=lambda b: b.name)
def test_bad_input_corpus_gets_specific_errors(plain_url: str, bad: BadInput) -> None:
    error = assert_error(post(plain_url, [(bad.name, bad.data)]), bad.status, bad.code, item=bad.name)
    assert bad.says in error["message"]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_png_and_webp_give_their_first_frame(plain_url: str, fmt: str) -> None:
    response = post(plain_url, [(f"anim.{fmt.lower()}", animated(fmt))])
    assert response.status_code == 200 and response.json()["results"][0]["width"] == 64
