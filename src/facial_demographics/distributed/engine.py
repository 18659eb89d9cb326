"""``analyze --engine ray``: the same analysis as the local engine, spread over a Ray cluster by Ray Data.

The driver lists the inputs (:mod:`.sources`), leaves out those an earlier run already wrote
(:mod:`.sinks`), and hands the rest to Ray Data as a table of paths; ``map_batches`` sends batches to a
pool of actors that each hold one analyser (:mod:`.actor`) and read the images themselves, so only
paths and results cross the network. The driver streams the results back as they finish (in no
particular order) and writes them, so progress, the summary and the exit code are the local engine's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..types import ImageResult
from .actor import AnalyzeBatch, AnalyzerSpec, unpack
from .sinks import Previous, open_sink
from .sources import InputList, list_inputs


class RayUnavailableError(UserError, ValueError):
    """Ray is not installed, or the cluster at ``address`` cannot be reached."""


@dataclass(frozen=True)
class ClusterOptions:
    """Which cluster, and how many actors of how many CPUs each."""

    address: str | None = None  # None: a running ray.init() in this process, else a new local cluster
    actors: int | None = None  # default: the cluster's CPUs // threads (at least 1)
    images_per_call: int = 64  # images per actor call (one Ray Data batch)


@dataclass(frozen=True)
class RunReport:
    """What one run did; ``previous`` is what earlier runs had written to the same output."""

    inputs: InputList
    analysed: int
    faces: int
    unreadable: int
    seconds: float
    where: str
    previous: Previous = field(default_factory=Previous)

    @property
    def all_unreadable(self) -> int:
        """Unreadable inputs in the whole output, this run and earlier ones (the exit code's basis)."""
        return self.unreadable + self.previous.unreadable


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the data library is a separate import)
    except ImportError as exc:
        raise RayUnavailableError("--engine ray needs the 'distributed' extra: pip install "
                                  f"'facial-demographics[distributed]' ({exc})") from None
    return ray


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) or start a local one.

    Returns:
        True when this call started Ray (so the caller shuts it down), False when it was already running.

    Raises:
        RayUnavailableError: Ray is missing or the cluster cannot be reached.
    """
    ray = _ray()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller shows its own counts
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # e.g. "progress bars disabled"
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailableError(f"cannot connect to the Ray cluster at {address or 'a new local instance'} "
                                  f"({exc})") from None
    return True


def default_actors(threads: int) -> int:
    """One actor per ``threads`` CPUs of the cluster."""
    cpus = float(_ray().cluster_resources().get("CPU", 1))
    return max(1, int(cpus // threads))


def results_dataset(paths: Sequence[str], spec: AnalyzerSpec, options: ClusterOptions) -> Any:
    """The Ray Dataset of ``{"path", "result"}`` rows for ``paths`` (lazy: nothing runs until consumed).

    Args:
        paths: local paths (readable on every node) or URIs.
        spec: how each actor builds its analyser.
        options: pool size and batch size.

    Returns:
        A ``ray.data.Dataset``; ``result`` holds :class:`ImageResult` objects.
    """
    ray = _ray()
    import pyarrow as pa

    table = pa.table({"path": pa.array(list(paths), pa.string())})
    actors = options.actors or default_actors(spec.threads)
    # Small runs still give every actor work; large ones send images_per_call paths per call.
    rows = max(1, min(options.images_per_call, -(-len(table) // actors)))
    blocks = [table.slice(i, rows) for i in range(0, len(table), rows)] or [table]
    return ray.data.from_arrow(blocks).map_batches(
        AnalyzeBatch, fn_constructor_kwargs={"spec": spec}, batch_size=rows, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=spec.threads,
    )


def iter_results(paths: Sequence[str], spec: AnalyzerSpec | None = None,
                 options: ClusterOptions | None = None) -> Iterator[ImageResult]:
    """Analyse ``paths`` on Ray and yield each result as it arrives (in no particular order).

    The Python entry point for callers that keep the results themselves; ``FaceAnalyzer``'s types.

    Raises:
        RayUnavailableError: Ray is missing or the cluster cannot be reached.
    """
    spec, options = spec or AnalyzerSpec(), options or ClusterOptions()
    if not paths:
        return
    started = connect(options.address)
    try:
        dataset = results_dataset(paths, spec, options)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            yield from (unpack(cell) for cell in batch["result"])
    finally:
        if started:
            _ray().shutdown()


def analyze_on_ray(
    items: Sequence[str], output: str | None, fmt: str = "jsonl", *, recursive: bool = False,
    path_lists: Sequence[str] = (), resume: bool = True, spec: AnalyzerSpec | None = None,
    options: ClusterOptions | None = None, on_start: Callable[[InputList, int, Previous], None] | None = None,
    on_result: Callable[[ImageResult], None] | None = None,
) -> RunReport:
    """List the inputs, skip those already in ``output``, analyse the rest on Ray and write them.

    Args:
        items: files, folders, globs or URIs; ``path_lists``: text files of paths (see :func:`list_inputs`).
        output: a JSON Lines file (None: stdout) or a Parquet folder (local or URI).
        fmt: "jsonl" or "parquet".
        recursive: scan folders recursively.
        resume: skip inputs whose records ``output`` already holds; False starts over.
        spec, options: the actors' analyser and the cluster (defaults: bundled model, local cluster).
        on_start: called once with the inputs, how many are left to do, and what was done before.
        on_result: called with each result after it is written (progress, error lines).

    Returns:
        The counts of this run and of the earlier ones.

    Raises:
        SourceError, SinkError, RayUnavailableError: bad inputs, output or cluster (all ``UserError``).
    """
    started_at = time.perf_counter()
    inputs = list_inputs(items, recursive, path_lists)
    sink, previous = open_sink(output, fmt, resume)
    todo = [p for p in inputs.paths if p not in previous.paths]
    analysed = faces = unreadable = 0
    try:
        if on_start is not None:
            on_start(inputs, len(todo), previous)
        for result in iter_results(todo, spec, options):
            sink.write(result.to_dict())
            analysed += 1
            faces += len(result.faces)
            unreadable += not result.ok
            if on_result is not None:
                on_result(result)
    finally:
        sink.close()
    return RunReport(inputs, analysed, faces, unreadable, time.perf_counter() - started_at, sink.where, previous)
