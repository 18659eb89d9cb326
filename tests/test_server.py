"""The REST API over real HTTP: uvicorn on a free loopback port, the real pipeline on an untrained model."""

from __future__ import annotations

import base64
import io
import math
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from server_support import GatedAnalyzer, assert_error, post, wait_for_queue

from facial_demographics.imaging import encode_jpeg, encode_png
from facial_demographics.labels import AGE_GROUPS
from facial_demographics.pipeline import FaceAnalyzer
from facial_demographics.server import ServerSettings, create_app, running_server
from facial_demographics.server.settings import API_KEY_ENV
from facial_demographics.types import ImageResult

MAX_UPLOAD = 3 * 2**20
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def analyzer(tiny_bundle: Path) -> FaceAnalyzer:
    return FaceAnalyzer(model=tiny_bundle)


@pytest.fixture(scope="module")
def server(analyzer: FaceAnalyzer) -> Iterator[str]:
    settings = ServerSettings(max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS, max_files=4)
    with running_server(create_app(settings, analyzer=analyzer)) as url:
        yield url


@pytest.fixture(scope="module")
def astronaut_jpeg(astronaut: np.ndarray) -> bytes:
    return encode_jpeg(astronaut)


# -- the happy path -------------------------------------------------------------------------------------
def test_astronaut_has_one_face_with_all_fields(server: str, astronaut_jpeg: bytes) -> None:
    response = post(server, [("astronaut.jpg", astronaut_jpeg)])
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["path"] == "astronaut.jpg"
    assert (result["width"], result["height"]) == (512, 512)
    assert result["error"] is None
    assert "annotated_jpeg" not in result and "error_code" not in result
    (face,) = result["faces"]
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
    assert face["score"] >= 0.8
    assert len(face["landmarks"]) == 5
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face["landmarks"])
    low, high = face["age_interval"]
    assert 0 <= low <= face["age"] <= high <= 100
    assert face["age_group"] in AGE_GROUPS
    assert face["gender"] in ("male", "female")
    assert 0.5 <= face["gender_probability"] <= 1.0


def test_annotate_returns_png_of_same_size(server: str, astronaut_jpeg: bytes, astronaut: np.ndarray) -> None:
    for kwargs in ({"params": {"annotate": "true"}}, {"data": {"annotate": "true"}}):
        response = post(server, [("astronaut.jpg", astronaut_jpeg)], **kwargs)
        assert response.status_code == 200, response.text
        (result,) = response.json()["results"]
        jpeg = Image.open(io.BytesIO(base64.b64decode(result["annotated_jpeg"])))
        assert jpeg.format == "JPEG"
        png = np.asarray(jpeg.convert("RGB"))
        assert png.shape == astronaut.shape  # 512 px is under the annotate size: not downscaled
        x1, y1, x2, y2 = (round(v) for v in result["faces"][0]["box"])
        decoded = np.asarray(Image.open(io.BytesIO(astronaut_jpeg)).convert("RGB"))
        # The box outline changes the pixels along its edge, and (JPEG noise aside) nothing far from it.
        assert np.abs(png[y1:y2, x1 - 1 : x1 + 2].astype(int) - decoded[y1:y2, x1 - 1 : x1 + 2]).mean() > 20
        assert np.abs(png[-20:, :20].astype(int) - decoded[-20:, :20]).mean() < 4


def test_several_files_are_answered_in_order(server: str, astronaut_jpeg: bytes) -> None:
    response = post(
        server, [("a.jpg", astronaut_jpeg), ("notes.jpg", b"just text\n"), ("b.jpg", astronaut_jpeg)]
    )
    assert response.status_code == 200, response.text
    a, bad, b = response.json()["results"]
    assert [a["path"], bad["path"], b["path"]] == ["a.jpg", "notes.jpg", "b.jpg"]
    assert len(a["faces"]) == 1 and a["faces"] == b["faces"]
    assert bad["faces"] == [] and bad["error_code"] == "not_an_image" and "notes.jpg" in bad["error"]


def test_uploaded_names_lose_directories(server: str, astronaut_jpeg: bytes) -> None:
    response = post(server, [("../../etc/C:\\photos\\me.jpg", astronaut_jpeg)])
    assert response.json()["results"][0]["path"] == "me.jpg"


# -- face filters (min_face, min_score) ------------------------------------------------------------------
def test_face_filters_drop_faces_and_count_them(server: str, astronaut_jpeg: bytes) -> None:
    (plain,) = post(server, [("astronaut.jpg", astronaut_jpeg)]).json()["results"]
    assert "filtered" not in plain  # no filter, no count: the answer is as before
    (face,) = plain["faces"]
    x1, y1, x2, y2 = face["box"]
    size = min(x2 - x1, y2 - y1)
    assert 20 < size < 400 and face["score"] < 1.0
    for params in ({"min_face": math.ceil(size) + 1}, {"min_score": "1.0"}, {"min_face": 9999, "min_score": 0.5}):
        response = post(server, [("a.jpg", astronaut_jpeg), ("b.jpg", astronaut_jpeg)], params=params)
        assert response.status_code == 200, response.text
        for result in response.json()["results"]:
            assert (result["faces"], result["filtered"], result["error"]) == ([], 1, None), params
    for params in ({"min_face": math.floor(size) - 1}, {"min_score": 0.5}, {"min_face": 10, "min_score": "0.8"}):
        response = post(server, [("astronaut.jpg", astronaut_jpeg)], params=params)
        assert response.status_code == 200, response.text
        (result,) = response.json()["results"]
        assert result["faces"] == plain["faces"] and result["filtered"] == 0, params
    # A file that cannot be read has no count; annotated images show only the faces kept.
    response = post(server, [("a.jpg", astronaut_jpeg), ("notes.jpg", b"text")],
                    params={"min_face": 9999, "annotate": "true"})
    kept, bad = response.json()["results"]
    assert kept["filtered"] == 1 and kept["annotated_jpeg"] and "filtered" not in bad and bad["error_code"]
    # Zero is the default and keeps every face: a filter that can drop nothing adds no count.
    (zero,) = post(server, [("a.jpg", astronaut_jpeg)], params={"min_face": 0, "min_score": 0}).json()["results"]
    assert zero["faces"] == plain["faces"] and "filtered" not in zero


def test_face_filter_rule_is_the_shared_one() -> None:
    """The server's per-request filter is FaceFilter's rule on the analysed faces; inputs are not changed."""
    from facial_demographics.server.errors import ApiError
    from facial_demographics.server.face_filters import apply_filter, face_filter
    from facial_demographics.types import Face

    def face(side: float, score: float) -> Face:
        return Face(box=(10, 10, 10 + side, 10 + 2 * side), score=score, landmarks=[(0.0, 0.0)] * 5, age=30,
                    age_interval=(25, 35), age_group="25-34", gender="female", gender_probability=0.9)

    small, big, unsure = face(20, 0.99), face(60, 0.99), face(60, 0.7)
    image = ImageResult(path="a.jpg", width=100, height=200, faces=[small, big, unsure])
    failed = ImageResult(path="b.jpg", error="not an image")
    results = {1: image, 2: failed}
    assert apply_filter(results, face_filter(40, 0.9)) == {1: 2}
    assert results[1].faces == [big] and results[2] is failed and image.faces == [small, big, unsure]
    assert apply_filter({1: image}, face_filter(0, 0)) == {}  # an inactive filter drops nothing, counts nothing
    assert apply_filter({1: image}, face_filter(20, 0.7)) == {1: 0}  # the limits themselves are kept
    for bad in ((-1, 0.0), (0, 1.5)):
        with pytest.raises(ApiError) as caught:
            face_filter(*bad)
        assert caught.value.status == 422 and caught.value.detail.item in ("min_face", "min_score")


@pytest.mark.parametrize(("name", "value"), [
    ("min_face", "-1"), ("min_face", "10001"), ("min_face", "12.5"), ("min_face", "big"), ("min_face", ""),
    ("min_score", "-0.1"), ("min_score", "1.01"), ("min_score", "nan"), ("min_score", "inf"), ("min_score", "high"),
])
def test_bad_face_filters_are_422(server: str, astronaut_jpeg: bytes, name: str, value: str) -> None:
    for path in ("analyze", "summary"):
        parts = [("file", ("a.jpg", astronaut_jpeg, "image/jpeg"))]
        response = httpx.post(f"{server}/v1/{path}", params={name: value}, files=parts, timeout=60)
        error = assert_error(response, 422, "invalid_request")
        assert name in error["message"], error


def test_openapi_documents_the_face_filters(server: str) -> None:
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    for path in ("/v1/analyze", "/v1/summary"):
        params = {p["name"]: p for p in paths[path]["post"]["parameters"]}
        assert "pixels" in params["min_face"]["description"] and "scored" in params["min_score"]["description"]
        assert (params["min_face"]["schema"]["minimum"], params["min_face"]["schema"]["maximum"]) == (0, 10_000)
        assert (params["min_score"]["schema"]["minimum"], params["min_score"]["schema"]["maximum"]) == (0, 1)


# -- bad input ----------------------------------------------------------------------------------------------
def _gif(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("empty", 422, "empty_file"),
        ("truncated", 422, "truncated_image"),
        ("text", 415, "not_an_image"),
        ("too_many_pixels", 413, "image_too_large"),
        ("gif", 415, "unsupported_format"),
    ],
)
def test_bad_file_gets_its_4xx(
    server: str, astronaut_jpeg: bytes, astronaut: np.ndarray, kind: str, status: int, code: str
) -> None:
    name, data = {
        "empty": ("empty.jpg", b""),
        "truncated": ("cut.jpg", astronaut_jpeg[: len(astronaut_jpeg) // 2]),
        "text": ("notes.jpg", b"Dear diary, this is not a photo.\n" * 20),
        "too_many_pixels": ("huge.png", encode_png(np.zeros((1000, 1001, 3), np.uint8))),
        "gif": ("anim.gif", _gif(astronaut)),
    }[kind]
    assert_error(post(server, [(name, data)]), status, code, item=name)


def test_all_files_bad_reports_each(server: str) -> None:
    response = post(server, [("a.txt", b"hello"), ("b.jpg", b"")])
    assert_error(response, 415, "not_an_image", item="a.txt")
    errors = response.json()["errors"]
    assert [(e["item"], e["code"]) for e in errors] == [("a.txt", "not_an_image"), ("b.jpg", "empty_file")]


def test_oversize_upload_is_413(server: str) -> None:
    big = b"\xff" * (MAX_UPLOAD + 1024)
    # Declared size (Content-Length) is refused before the body is read...
    assert_error(post(server, [("big.jpg", big)]), 413, "upload_too_large")

    # ...and a chunked body without Content-Length is cut off while counting.
    def chunks() -> Iterator[bytes]:
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
        for start in range(0, len(big), 256 * 1024):
            yield big[start : start + 256 * 1024]
        yield b"\r\n--xyz--\r\n"

    response = httpx.post(
        f"{server}/v1/analyze",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=xyz"},
        timeout=60,
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "upload_too_large")


def test_request_shape_errors(server: str, astronaut_jpeg: bytes) -> None:
    assert_error(httpx.post(f"{server}/v1/analyze", json={"file": "x"}), 415, "unsupported_media_type")
    assert_error(
        httpx.post(f"{server}/v1/analyze", data={"annotate": "false"}, files={"other": ("x", b"")}),
        422,
        "unexpected_file",
    )
    only_field = httpx.post(f"{server}/v1/analyze", files={"annotate": (None, "true")})
    assert_error(only_field, 422, "no_files")
    assert_error(post(server, [("a.jpg", astronaut_jpeg)] * 5), 422, "too_many_files")
    assert_error(
        post(server, [("a.jpg", astronaut_jpeg)], params={"annotate": "maybe"}), 422, "invalid_request"
    )
    body = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\nabc'
    unterminated = httpx.post(
        f"{server}/v1/analyze", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert_error(unterminated, 400, "invalid_multipart")
    assert_error(httpx.get(f"{server}/no/such/page"), 404, "not_found")
    assert_error(httpx.get(f"{server}/v1/analyze"), 405, "method_not_allowed")


def test_uploads_never_touch_the_disk(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2 MB photo is well over Starlette's 1 MB spooling threshold; no temporary file may be made."""
    import starlette.formparsers

    made: list[str] = []

    def recorder(name: str, original: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            made.append(name)
            return original(*args, **kwargs)

        return wrapped

    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, recorder(name, getattr(tempfile, name)))
    monkeypatch.setattr(
        starlette.formparsers,
        "SpooledTemporaryFile",
        recorder("starlette", starlette.formparsers.SpooledTemporaryFile),
    )
    noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)
    png = encode_png(noise)
    assert 1.5 * 2**20 < len(png) < MAX_UPLOAD
    response = post(server, [("noise.png", png)])
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["width"] == 800
    assert made == []


# -- other routes ------------------------------------------------------------------------------------------
def test_health_model_and_page(server: str, tiny_bundle: Path) -> None:
    health = httpx.get(f"{server}/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok", "queued": 0, "max_queue": 64}

    model = httpx.get(f"{server}/v1/model")
    assert model.status_code == 200
    info = model.json()
    assert info["name"] == "untrained-test" and info["input"]["size"] == 64
    assert str(tiny_bundle) not in model.text and str(tiny_bundle.parent) not in model.text

    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<meta name="viewport"' in page.text
    for asset, kind in (("static/app.js", "javascript"), ("static/live.js", "javascript"),
                        ("static/files.js", "javascript"), ("static/style.css", "text/css")):
        response = httpx.get(f"{server}/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
        # Offline: no external URLs in the page or its assets.
        assert "http://" not in response.text and "https://" not in response.text
    assert "http://" not in page.text and "https://" not in page.text

    openapi = httpx.get(f"{server}/openapi.json").json()
    assert {"/v1/analyze", "/v1/model", "/healthz"} <= set(openapi["paths"])
    assert httpx.get(f"{server}/docs").status_code == 200


class CrashingAnalyzer(GatedAnalyzer):
    """A crash injected inside inference (a bug, not bad input): the secret must not reach the client."""

    def analyze_batch(self, sources: Sequence[Any]) -> list[ImageResult]:
        raise RuntimeError("onnx session exploded at /secret/path/model.onnx")


def test_unexpected_failure_is_a_json_500_without_details(analyzer: FaceAnalyzer, astronaut_jpeg: bytes) -> None:
    app = create_app(ServerSettings(), analyzer=CrashingAnalyzer(analyzer))
    with running_server(app, log_level="critical") as url:
        response = post(url, [("astronaut.jpg", astronaut_jpeg)])
        assert_error(response, 500, "internal_error")
        assert "Traceback" not in response.text and "onnx" not in response.text.lower()
        assert "/secret/path" not in response.text
        assert httpx.get(f"{url}/healthz").json()["queued"] == 0


# -- API key and CORS ------------------------------------------------------------------------------------
def test_api_key_and_cors(analyzer: FaceAnalyzer, astronaut_jpeg: bytes) -> None:
    key = "s3cret-Key"
    origin = "http://localhost:5173"
    settings = ServerSettings(api_key=key, cors_origins=(origin,))
    with running_server(create_app(settings, analyzer=analyzer)) as url:
        for headers in (
            {},
            {"X-API-Key": "wrong"},
            {"Authorization": "Bearer wrong"},
            {"Authorization": key},
        ):
            response = post(url, [("a.jpg", astronaut_jpeg)], headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        assert_error(httpx.get(f"{url}/v1/model"), 401, "unauthorized")
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
            assert post(url, [("a.jpg", astronaut_jpeg)], headers=headers).status_code == 200
        assert httpx.get(f"{url}/v1/model", headers={"X-API-Key": key}).status_code == 200
        # Public routes.
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/").status_code == 200
        assert httpx.get(f"{url}/static/app.js").status_code == 200
        # The schema documents both ways to authenticate.
        schemes = httpx.get(f"{url}/openapi.json").json()["components"]["securitySchemes"]
        assert {s["type"] for s in schemes.values()} == {"apiKey", "http"}
        # CORS for the configured origin only.
        preflight = httpx.options(
            f"{url}/v1/analyze",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        other = httpx.get(f"{url}/healthz", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_default_server_has_no_key_and_no_cors(server: str, astronaut_jpeg: bytes) -> None:
    response = post(server, [("a.jpg", astronaut_jpeg)], headers={"Origin": "http://localhost:5173"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert "securitySchemes" not in httpx.get(f"{server}/openapi.json").json().get("components", {})


def test_settings_from_cli_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    settings = ServerSettings.create(max_upload_mb=2.5, cors_origins=["http://a.test/", " "], port=9000)
    assert settings.api_key == "from-env"
    assert settings.max_upload_bytes == int(2.5 * 2**20)
    assert settings.cors_origins == ("http://a.test",)
    assert settings.host == "127.0.0.1"
    assert ServerSettings.from_json(settings.to_json()) == settings
    assert ServerSettings.create(api_key="explicit").api_key == "explicit"
    monkeypatch.setenv(API_KEY_ENV, "")
    assert ServerSettings.create().api_key is None
    assert ServerSettings.create(api_key="").api_key is None
    with pytest.raises(ValueError, match="max_queue"):
        ServerSettings(max_queue=0)
    with pytest.raises(ValueError, match="api_key"):
        ServerSettings(api_key="  ")


# -- concurrency -----------------------------------------------------------------------------------------
def test_health_stays_responsive_and_full_queue_gives_503(
    analyzer: FaceAnalyzer, astronaut_jpeg: bytes
) -> None:
    gated = GatedAnalyzer(analyzer)
    settings = ServerSettings(max_queue=1, batch_wait_ms=0)
    with running_server(create_app(settings, analyzer=gated)) as url, ThreadPoolExecutor(1) as pool:
        busy = pool.submit(post, url, [("a.jpg", astronaut_jpeg)])
        wait_for_queue(url, 1)  # the batch is inside analyze_batch, blocked on the gate
        started = time.perf_counter()
        health = httpx.get(f"{url}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["queued"] == 1
        assert time.perf_counter() - started < 2.0
        refused = post(url, [("b.jpg", astronaut_jpeg)])
        assert_error(refused, 503, "queue_full")
        assert int(refused.headers["retry-after"]) >= 1
        gated.gate.set()
        response = busy.result(timeout=60)
        assert response.status_code == 200 and len(response.json()["results"][0]["faces"]) == 1
        wait_for_queue(url, 0)
        assert post(url, [("b.jpg", astronaut_jpeg)]).status_code == 200


def test_concurrent_requests_share_a_batch(analyzer: FaceAnalyzer, astronaut_jpeg: bytes) -> None:
    gated = GatedAnalyzer(analyzer)
    settings = ServerSettings(max_queue=8, batch_size=8, batch_wait_ms=0)
    with running_server(create_app(settings, analyzer=gated)) as url, ThreadPoolExecutor(4) as pool:
        first = pool.submit(post, url, [("first.jpg", astronaut_jpeg)])
        wait_for_queue(url, 1)
        rest = [pool.submit(post, url, [(f"{i}.jpg", astronaut_jpeg)]) for i in range(3)]
        wait_for_queue(url, 4)
        gated.gate.set()
        responses = [f.result(timeout=60) for f in [first, *rest]]
    assert [r.status_code for r in responses] == [200] * 4
    assert [r.json()["results"][0]["path"] for r in responses] == ["first.jpg", "0.jpg", "1.jpg", "2.jpg"]
    assert gated.batch_sizes == [1, 3]  # the three waiting requests went to the model together


def test_slow_analysis_times_out_with_504(analyzer: FaceAnalyzer, astronaut_jpeg: bytes) -> None:
    gated = GatedAnalyzer(analyzer)
    settings = ServerSettings(request_timeout=0.5, batch_wait_ms=0)
    with running_server(create_app(settings, analyzer=gated)) as url:
        assert_error(post(url, [("a.jpg", astronaut_jpeg)]), 504, "timeout")
        gated.gate.set()
        wait_for_queue(url, 0)
        assert post(url, [("a.jpg", astronaut_jpeg)]).status_code == 200


# -- the serve command ------------------------------------------------------------------------------------
def test_serve_refuses_a_bad_model_before_listening(tmp_path: Path) -> None:
    from facial_demographics.model import BundleError
    from facial_demographics.server import serve_command

    for workers in (1, 2):
        with pytest.raises(BundleError, match="not a model bundle"):
            serve_command(ServerSettings(port=free_port(), workers=workers, model=tmp_path / "missing"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_with_two_worker_processes(tiny_bundle: Path, astronaut_jpeg: bytes) -> None:
    port = free_port()
    code = (
        "import sys; from facial_demographics.server import ServerSettings, serve_command; "
        "serve_command(ServerSettings.create(port=int(sys.argv[1]), workers=2, model=sys.argv[2], max_upload_mb=1), "
        "log_level='warning')"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(port), str(tiny_bundle)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        response = post(url, [("astronaut.jpg", astronaut_jpeg)])
        assert response.status_code == 200 and len(response.json()["results"][0]["faces"]) == 1
        # The settings reached the worker processes.
        assert_error(post(url, [("big.jpg", b"\0" * 2**20)]), 413, "upload_too_large")
    finally:
        process.terminate()
        process.wait(timeout=30)
