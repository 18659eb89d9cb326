"""The command layer: serve options come from ServerSettings (CLI and FD_* environment), expected failures
are one line with exit 2, and bugs keep their traceback."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import facial_demographics.server as server
from facial_demographics.cli import app
from facial_demographics.commands._common import user_errors
from facial_demographics.errors import UserError
from facial_demographics.server.settings import ServerSettings

runner = CliRunner()


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch) -> list[ServerSettings]:
    """Replace uvicorn: record the settings ``serve`` would run with."""
    seen: list[ServerSettings] = []
    monkeypatch.setattr(server, "serve_command", lambda settings, **_: seen.append(settings))
    for f in fields(ServerSettings):  # an FD_* variable from the developer's shell must not leak in
        monkeypatch.delenv(f"FD_{(f.metadata.get('cli') or f.name).upper()}", raising=False)
    return seen


def test_every_setting_has_a_serve_option() -> None:
    result = runner.invoke(app, ["serve", "-h"], terminal_width=200)
    assert result.exit_code == 0
    for f in fields(ServerSettings):
        option = "--" + (f.metadata.get("cli") or f.name).replace("_", "-")
        assert option in result.output, option


def test_options_and_environment_reach_the_settings(captured: list[ServerSettings], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FD_MAX_FILES", "3")
    monkeypatch.setenv("FD_API_KEY", "k")
    args = ["serve", "--port", "9001", "--inference-threads", "2", "--batch-wait-ms", "0", "--max-upload-mb", "2",
            "--cors-origin", "http://a.test/", "--cors-origin", "http://b.test", "-m", str(tmp_path), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    [s] = captured
    assert (s.port, s.max_files, s.inference_threads, s.batch_wait_ms, s.api_key) == (9001, 3, 2, 0.0, "k")
    assert s.max_upload_bytes == 2 * 2**20 and s.model == str(tmp_path) and s.device == "cpu"
    assert s.cors_origins == ("http://a.test", "http://b.test")
    untouched = {f.name for f in fields(ServerSettings)} - {
        "port", "max_files", "inference_threads", "batch_wait_ms", "api_key", "max_upload_bytes", "model",
        "cors_origins", "device"}
    assert all(getattr(s, n) == getattr(ServerSettings(), n) for n in untouched)


def test_bad_setting_is_one_line_and_exit_2(captured: list[ServerSettings]) -> None:
    result = runner.invoke(app, ["serve", "--request-memory-mb", "1", "--max-upload-mb", "2"])
    assert result.exit_code == 2 and not captured
    assert "need max_upload_bytes <= request_memory_bytes" in result.stderr
    assert "Traceback" not in result.stderr


def _raise(exc: Exception) -> Any:
    with user_errors():
        raise exc


def test_user_error_exits_2_and_a_bug_keeps_its_traceback() -> None:
    with pytest.raises(typer.Exit) as stop:
        _raise(UserError("cache/x: not an aligned-face cache"))
    assert stop.value.exit_code == 2
    with pytest.raises(typer.Exit):
        _raise(FileNotFoundError("photo.jpg"))
    # A plain ValueError is no longer taken for bad input: it is a bug and must surface.
    with pytest.raises(ValueError, match="internal"):
        _raise(ValueError("internal"))
