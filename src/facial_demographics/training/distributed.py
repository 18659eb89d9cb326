"""Multi-process training with torch ``DistributedDataParallel``: ``train --nproc N`` or ``torchrun``.

One process per rank (gloo on CPU, NCCL on GPUs, one GPU per process), started either by
:func:`launch` (``train --nproc N`` on this machine) or by ``torchrun`` (any number of nodes), which
both leave the standard variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ...)
that :func:`init_from_env` reads.

What a rank does differently from a single process is gathered in :class:`DistContext`; the training
loop calls it at a few marked places ("DDP hook") and gets the identity when it runs alone, so a
single-process run is unchanged, bit for bit:

- data: ``train.batch_size`` stays the **global** batch; :class:`DistributedBatchSampler` cuts every
  global batch of today's order (``FaceBatches.order``: a permutation of ``(seed, epoch)``) into one
  slice per rank, so the ranks together see exactly the single-process batches, step by step;
- model: wrapped in DDP (gradients averaged over ranks each step), placed on the rank's GPU if any;
- numbers: the per-step loss sums are all-reduced, so every rank logs the global train loss;
- files: rank 0 alone writes metrics, curves and checkpoints; a checkpoint keeps every rank's RNG
  state, so ``--resume`` continues each rank's augmentation stream where it stopped.

Not identical to one process (see the README's tolerance): BatchNorm statistics come from each rank's
slice (``SyncBatchNorm`` needs GPUs), augmentation draws come from each rank's own RNG stream, and a
weighted loss is averaged per rank before the ranks are averaged.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Sampler

from ..errors import UserError
from .data import FaceBatches, Labels

M = TypeVar("M", bound=nn.Module)


class DistributedError(UserError, ValueError):
    """A multi-process setting that cannot work (e.g. a global batch the ranks cannot share evenly)."""


class DistributedBatchSampler(Sampler[np.ndarray]):
    """Positions (into ``FaceBatches.rows``) of this rank's slice of each global batch.

    The role of ``torch.utils.data.DistributedSampler``, keeping the project's deterministic order: the
    global order is ``FaceBatches.order(epoch)``, the same permutation a single process uses, and rank
    ``r`` of ``W`` takes positions ``r, r + W, ...`` of every global batch. A last global batch too small
    to give every rank two faces (BatchNorm needs two) is dropped.
    """

    def __init__(self, batches: FaceBatches, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        b = self.batches
        full = len(b)
        last = len(b.rows) - (full - 1) * b.batch_size if full * b.batch_size > len(b.rows) else b.batch_size
        return full - 1 if full and last < 2 * self.world_size else full

    def __iter__(self) -> Iterator[np.ndarray]:
        order, size = self.batches.order(self.epoch), self.batches.batch_size
        for step in range(len(self)):
            yield order[step * size:(step + 1) * size][self.rank::self.world_size]


class ShardedBatches(FaceBatches):
    """``FaceBatches`` that yields only this rank's slice of each global batch (same ``len`` on every rank)."""

    def __init__(self, base: FaceBatches, rank: int, world_size: int) -> None:
        super().__init__(base.cache, base.rows, base.batch_size, shuffle=base.shuffle, seed=base.seed,
                         limit_batches=base.limit_batches)
        self.sample_weight = base.sample_weight  # class weights, as the base computed them
        self.draw_p = base.draw_p  # the sampler's draw probabilities: every rank draws the base's order
        self.teacher = base.teacher  # [teacher] descriptors, indexed by cache row
        self.sampler = DistributedBatchSampler(base, rank, world_size)

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Labels]]:
        self.sampler.set_epoch(epoch)
        for pos in self.sampler:
            yield self.batch_at(pos)


class OnDevice(nn.Module):
    """Runs ``module`` on ``device`` for callers that hold CPU tensors: inputs go there, logits come back
    (autograd follows the copies), so the loop, its loss and its metrics stay on the CPU."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.module, self.device = module, device

    def forward(self, x: Tensor) -> Any:
        out = self.module(x.to(self.device, non_blocking=True))
        return tuple(None if t is None else t.cpu() for t in out)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; the default (one process) makes every hook the identity."""

    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and logs."""
        return self.rank == 0

    def threads(self, configured: int) -> int:
        """CPU threads for this rank: the config's, shared by the ranks on this node."""
        return max(1, configured // self.local_world_size)

    def log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        return log if self.is_main else (lambda _: None)

    def shard(self, batches: FaceBatches) -> FaceBatches:
        """This rank's share of the training batches.

        Raises:
            DistributedError: the global batch cannot be split evenly over the ranks.
        """
        if not self.enabled:
            return batches
        if batches.batch_size % self.world_size:
            raise DistributedError(f"train.batch_size {batches.batch_size} is the global batch: it must be a "
                                   f"multiple of the {self.world_size} processes")
        return ShardedBatches(batches, self.rank, self.world_size)

    def place(self, model: M) -> M:
        """The model on this rank's device (before the optimiser and the EMA copy are made)."""
        return model.to(self.device) if self.device != "cpu" else model

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the training step calls: ``model`` itself alone, else DDP (averaging gradients)."""
        net: nn.Module = model
        if self.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [torch.device(self.device).index] if self.device != "cpu" else None
            net = DistributedDataParallel(model, device_ids=ids)
        return OnDevice(net, torch.device(self.device)) if self.device != "cpu" else net

    def for_eval(self, model: nn.Module) -> Any:
        """The evaluated model, fed from the CPU."""
        return OnDevice(model, torch.device(self.device)) if self.device != "cpu" else model

    def reduce_sums(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sums over all ranks (per-step loss sums and counts)."""
        if not self.enabled:
            return values
        tensor = torch.as_tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.to(self.device)
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    def barrier(self) -> None:
        """Wait for every rank (e.g. until rank 0 has written a checkpoint the others read)."""
        if self.enabled:
            dist.barrier()

    def seed_rank(self, seed: int) -> None:
        """Give ranks other than 0 their own augmentation stream (rank 0 keeps the single-process one)."""
        if self.rank > 0:
            mixed = int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])
            random.seed(mixed)
            np.random.seed(mixed)
            torch.manual_seed(mixed)

    def gather_rng(self, state: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint's ``rng``: rank 0's state (what a single process reads), plus ``ranks``, every
        rank's, so that each resumes its own stream. Collective: every rank calls it."""
        if not self.enabled:
            return state
        states: list[Any] = [None] * self.world_size
        dist.all_gather_object(states, state)
        return {**states[0], "ranks": states}

    def own_rng(self, state: dict[str, Any]) -> dict[str, Any]:
        """This rank's state out of a checkpoint's ``rng`` (a different world size: rank 0's, re-seeded)."""
        ranks = state.get("ranks")
        if self.enabled and ranks is not None and len(ranks) == self.world_size:
            return dict(ranks[self.rank])
        return state


_CONTEXT = DistContext()


def current() -> DistContext:
    """The context of this process (single-process unless :func:`init_from_env` joined a group)."""
    return _CONTEXT


def init_from_env() -> DistContext:
    """Join the process group that ``torchrun`` or :func:`launch` described in the environment.

    Returns:
        The context (single-process when ``WORLD_SIZE`` is unset or 1).
    """
    global _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or _CONTEXT.enabled:
        return _CONTEXT
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    gpu = torch.cuda.is_available() and torch.cuda.device_count() > local_rank
    backend = "nccl" if gpu else "gloo"
    device = f"cuda:{local_rank}" if gpu else "cpu"
    if gpu:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method="env://")
    _CONTEXT = DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                           local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world)), device=device)
    return _CONTEXT


def resolve_device(device: str) -> str:
    """The torch device a single-process run trains on: ``"auto"`` is the first GPU when PyTorch sees
    one, else the CPU; ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` as given.

    Raises:
        DistributedError: a GPU was asked for and PyTorch sees none (or not that many), or the name is not
            a device.
    """
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        index = int(device[5:]) if device != "cuda" else 0
        seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= seen:
            raise DistributedError(f"--device {device}: PyTorch sees {seen} CUDA device(s) "
                                   "(a CPU-only torch build, or no GPU here); use --device cpu or auto")
        return f"cuda:{index}"
    raise DistributedError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")


def use_device(device: str) -> DistContext:
    """Make this (single, not distributed) process train on ``device`` (a :func:`resolve_device` name):
    the model, the batch augmentation and the forward pass run there; the loss and metrics stay on the CPU
    (:class:`OnDevice`).

    Raises:
        DistributedError: inside a multi-process group, whose ranks take their device from their rank.
    """
    global _CONTEXT
    if _CONTEXT.enabled:
        raise DistributedError("--device is for one process; the ranks of --nproc/torchrun use their own GPU")
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        # Fixed input shapes: let cuDNN time its convolution algorithms once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    _CONTEXT = DistContext(device=device)
    return _CONTEXT


def shutdown() -> None:
    """Leave the process group (end of a rank's work)."""
    global _CONTEXT
    if dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = DistContext()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_from_env()
    try:
        fn(**kwargs)
    finally:
        shutdown()


def launch(nproc: int, fn: Callable[..., Any], **kwargs: Any) -> None:
    """Run ``fn(**kwargs)`` in ``nproc`` new processes on this machine, as ranks 0..nproc-1 of one group
    (``torchrun --standalone --nproc-per-node nproc`` does the same from a shell).

    Raises:
        torch.multiprocessing.ProcessRaisedException: a rank failed (the others are stopped).
    """
    import torch.multiprocessing as mp

    mp.start_processes(_rank_main, args=(nproc, _free_port(), fn, kwargs), nprocs=nproc, join=True,
                       start_method="spawn")
