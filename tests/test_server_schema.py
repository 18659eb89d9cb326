"""Schemathesis against the live server's OpenAPI document: generated requests never get a 5xx and every
answer matches the documented status codes, content types and response schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from facial_demographics.pipeline import FaceAnalyzer  # noqa: E402
from facial_demographics.server import ServerSettings, create_app, running_server  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def live_url(tiny_bundle: Path) -> Iterator[str]:
    app = create_app(
        ServerSettings(max_upload_bytes=2**20, max_pixels=1_000_000), analyzer=FaceAnalyzer(model=tiny_bundle)
    )
    with running_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(live_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{live_url}/openapi.json")


# Driven through Hypothesis directly: schemathesis' pytest plugin (from_fixture) breaks on pytest 9.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/analyze"), ("GET", "/v1/model"), ("GET", "/healthz")]
)
def test_no_server_errors(
    api_schema: Any, live_url: str, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    if (
        mode is GenerationMode.NEGATIVE
        and not operation.path_parameters
        and method == "GET"
        and not operation.query
    ):
        pytest.skip("no inputs to get wrong")
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call_and_validate(base_url=live_url, checks=CHECKS, timeout=60)
        statuses.append(response.status_code)
        assert response.status_code < 500

    run()
    assert statuses and max(statuses) < 500
