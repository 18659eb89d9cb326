"""Device selection (``--device auto|cpu|cuda``): the provider plan, and real sessions when ONNX Runtime says a
CUDA provider exists but no GPU answers (this machine has neither; the available-provider list is faked)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from facial_demographics import runtime
from facial_demographics.cli import app
from facial_demographics.errors import UserError
from facial_demographics.model import AgeGenderModel
from facial_demographics.pipeline import FaceAnalyzer
from facial_demographics.runtime import CPU, CUDA, DeviceError, make_session, plan_providers
from facial_demographics.server.settings import ServerSettings, SettingsError


@pytest.fixture(autouse=True)
def fresh_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_said", set())  # each test sees the once-per-process line again


def test_plan_for_each_device_and_provider_list() -> None:
    assert plan_providers("cpu", [CUDA, CPU]).providers == (CPU,)
    assert plan_providers("auto", [CUDA, CPU]).providers == (CUDA, CPU)
    assert plan_providers("cuda", ["TensorrtExecutionProvider", CUDA, CPU]).device == "cuda"
    cpu_only = plan_providers("auto", [CPU])
    assert (cpu_only.device, cpu_only.providers) == ("cpu", (CPU,))
    assert "onnxruntime-gpu is not installed" in (cpu_only.reason or "")
    with pytest.raises(DeviceError, match="no CUDA provider.*facial-demographics\\[gpu\\]"):
        plan_providers("cuda", [CPU])
    with pytest.raises(DeviceError, match="auto, cpu, cuda"):
        plan_providers("gpu", [CPU])
    assert issubclass(DeviceError, UserError)


def test_auto_on_a_cpu_build_says_why_once(tiny_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert CUDA not in ort.get_available_providers()  # the CPU build, as installed here
    caplog.set_level(logging.INFO, logger="facial_demographics.runtime")
    analyzer = FaceAnalyzer(tiny_bundle, device="auto")
    analyzer.warm_up()  # two sessions: the model's and the detector's
    lines = [r.getMessage() for r in caplog.records if r.name == "facial_demographics.runtime"]
    assert lines == ["device auto: using the CPU (onnxruntime-gpu is not installed (ONNX Runtime has no CUDA "
                     "provider))"]
    assert runtime.session_device(analyzer.model.session) == "cpu"


def test_cuda_provider_listed_but_no_gpu(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """As on a machine with onnxruntime-gpu but no usable GPU: ONNX Runtime falls back to the CPU by itself;
    auto says so once and goes on, cuda refuses."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    graph = str(tiny_bundle / "model.onnx")
    caplog.set_level(logging.INFO, logger="facial_demographics.runtime")
    session = make_session(graph, device="auto")
    make_session(graph, device="auto")
    assert session.get_providers() == [CPU]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no CUDA GPU could be used; using the CPU" in warnings[0].getMessage()
    with pytest.raises(DeviceError, match="no CUDA GPU could be used"):
        make_session(graph, device="cuda")
    x = np.zeros((1, 3, 64, 64), np.float32)
    assert session.run(None, {"input": x})[0].shape == (1, 101)  # the CPU session works


def test_cuda_without_the_gpu_build_is_a_clear_error(tiny_bundle: Path) -> None:
    model = AgeGenderModel(tiny_bundle, device="cuda")
    with pytest.raises(DeviceError, match="no CUDA provider"):
        model.warm_up()
    with pytest.raises(DeviceError):
        FaceAnalyzer(tiny_bundle, device="tpu")


def test_cli_device_cuda_exits_2_with_one_line(tiny_bundle: Path, astronaut_path: Path) -> None:
    result = CliRunner().invoke(app, ["analyze", str(astronaut_path), "-m", str(tiny_bundle), "--device", "cuda"])
    assert result.exit_code == 2
    assert "no CUDA provider" in result.output and "Traceback" not in result.output
    assert "pip install 'facial-demographics[gpu]'" in result.output
    result = CliRunner().invoke(app, ["analyze", str(astronaut_path), "-m", str(tiny_bundle), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(app, ["analyze", str(astronaut_path), "--device", "gpu"])
    assert bad.exit_code == 2 and "gpu" in bad.output


def test_server_setting_device() -> None:
    assert ServerSettings().device == "auto"
    assert ServerSettings.create(device="cpu").device == "cpu"
    with pytest.raises(SettingsError, match="device"):
        ServerSettings(device="gpu")


@pytest.fixture
def astronaut_path(tmp_path: Path, astronaut: np.ndarray) -> Path:
    from PIL import Image

    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path
