"""ONNX Runtime sessions tuned for CPU, shared by the detector and the age/gender model."""

from __future__ import annotations

from typing import Any


def cpu_session(model: str | bytes, threads: int | None = None) -> Any:
    """An ``InferenceSession`` on the CPU provider with full graph optimisation.

    Intra-op threads default to all cores; spinning is off because idle spinning threads burn a core
    between calls and starve the pipeline's other stages (decoding, the thread pool).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
