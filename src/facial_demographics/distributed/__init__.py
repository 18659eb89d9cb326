"""Scale-out: batch inference on a Ray cluster (Ray Data) — the ``distributed`` extra.

>>> from facial_demographics.distributed import analyze_on_ray
>>> report = analyze_on_ray(["photos/"], "results.jsonl", recursive=True)   # a local Ray instance
>>> report = analyze_on_ray(["s3://bucket/photos/"], "s3://bucket/results/", "parquet",
...                         options=ClusterOptions(address="auto"))          # an existing cluster

Re-running the same call skips the inputs already in the output (see :mod:`.sinks`).
``iter_results`` yields :class:`~facial_demographics.types.ImageResult` objects instead of writing them.
Multi-process training lives in :mod:`facial_demographics.training.distributed`.
"""

from __future__ import annotations

from .actor import AnalyzerSpec
from .engine import ClusterOptions, RayUnavailableError, RunReport, analyze_on_ray, iter_results, results_dataset
from .sinks import SinkError
from .sources import InputList, SourceError, list_inputs

__all__ = ["AnalyzerSpec", "ClusterOptions", "InputList", "RayUnavailableError", "RunReport", "SinkError",
           "SourceError", "analyze_on_ray", "iter_results", "list_inputs", "results_dataset"]
