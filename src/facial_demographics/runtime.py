"""ONNX Runtime sessions, shared by the detector and the age/gender model: the one session factory.

``device="auto"`` uses an NVIDIA GPU through CUDA when the ``onnxruntime-gpu`` build is installed (the
``gpu`` extra) and a GPU answers, else the CPU, saying why in one log line per process; ``"cuda"``
insists (a :class:`DeviceError` when it cannot be had), ``"cpu"`` never tries.

CPU sessions are tuned for a small memory footprint: no memory arena (an arena keeps the largest
batch's activations for the session's life, hundreds of MB per session at batch 64 that one call
needed once) and no memory-pattern cache (one plan per input shape, and batch sizes vary); both cost
a few per cent of speed on this CNN (measured: README, "Speed and footprint").
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import UserError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
GPU_INSTALL = ("pip uninstall -y onnxruntime && pip install 'facial-demographics[gpu]' "
               "(onnxruntime-gpu replaces onnxruntime; both install the same module)")


class DeviceError(UserError, ValueError):
    """The device asked for cannot be used (unknown name, no CUDA build, no GPU)."""


@dataclass(frozen=True)
class ProviderPlan:
    """The execution providers to ask ONNX Runtime for, and why the CPU when a GPU was wanted."""

    device: str  # "cpu" or "cuda": what the session will try
    providers: tuple[str, ...]
    reason: str | None = None  # set when "auto" settled for the CPU


def check_device(device: str) -> str:
    """``device`` when it is one of :data:`DEVICES`.

    Raises:
        DeviceError: any other value.
    """
    if device not in DEVICES:
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return device


def plan_providers(device: str, available: Sequence[str]) -> ProviderPlan:
    """Which providers a session on ``device`` should use, given ONNX Runtime's available providers.

    Raises:
        DeviceError: ``device`` is unknown, or "cuda" without the CUDA provider.
    """
    check_device(device)
    has_cuda = CUDA in available
    if device == "cpu":
        return ProviderPlan("cpu", (CPU,))
    if has_cuda:
        return ProviderPlan("cuda", (CUDA, CPU))
    if device == "cuda":
        raise DeviceError(f"--device cuda: this ONNX Runtime has no CUDA provider (it has {', '.join(available)}); "
                          f"install the GPU build: {GPU_INSTALL}")
    return ProviderPlan("cpu", (CPU,), "onnxruntime-gpu is not installed (ONNX Runtime has no CUDA provider)")


_said: set[str] = set()
_said_lock = threading.Lock()


def _say_once(level: int, message: str) -> None:
    """Log ``message`` once per process (the detector and the model each make a session)."""
    with _said_lock:
        if message in _said:
            return
        _said.add(message)
    log.log(level, message)


def _options(threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    # Idle spinning threads burn a core between calls and starve the pipeline's other stages.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_cpu_mem_arena = False
    opts.enable_mem_pattern = False
    if threads:
        opts.intra_op_num_threads = threads
    return opts


def make_session(model: str | bytes, threads: int | None = None, device: str = "auto") -> Any:
    """An ``InferenceSession`` with full graph optimisation on ``device`` ("auto", "cpu" or "cuda").

    Args:
        model: a graph's path or its serialised bytes.
        threads: intra-op threads on the CPU (``None``: all cores).
        device: see the module docstring.

    Raises:
        DeviceError: "cuda" asked for and not usable.
        Exception: ONNX Runtime's own, for a graph it cannot load.
    """
    import onnxruntime as ort

    plan = plan_providers(device, ort.get_available_providers())
    if plan.reason is not None:
        _say_once(logging.INFO, f"device auto: using the CPU ({plan.reason})")
    if plan.device == "cpu":
        return ort.InferenceSession(model, _options(threads), providers=list(plan.providers))
    cuda_options = {"arena_extend_strategy": "kSameAsRequested", "cudnn_conv_algo_search": "HEURISTIC"}
    with warnings.catch_warnings():  # ONNX Runtime's own warning when it falls back; ours follows, once
        warnings.simplefilter("ignore", UserWarning)
        session = ort.InferenceSession(model, _options(threads), providers=[(CUDA, cuda_options), CPU])
    if CUDA not in session.get_providers():  # ONNX Runtime falls back silently when no GPU answers
        if device == "cuda":
            raise DeviceError("--device cuda: onnxruntime-gpu is installed but no CUDA GPU could be used "
                              "(driver, CUDA or cuDNN libraries missing?); use --device cpu")
        _say_once(logging.WARNING, "device auto: onnxruntime-gpu is installed but no CUDA GPU could be used; "
                                   "using the CPU")
    return session


def cpu_session(model: str | bytes, threads: int | None = None) -> Any:
    """An ``InferenceSession`` on the CPU (see :func:`make_session`)."""
    return make_session(model, threads, "cpu")


def session_device(session: Any) -> str:
    """"cuda" when the session runs on the GPU, else "cpu"."""
    return "cuda" if CUDA in session.get_providers() else "cpu"
