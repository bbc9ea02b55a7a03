"""The process group of a multi-process run: gloo on CPU, NCCL on GPUs, created once, before the run folder.

transformers' Trainer (through accelerate's PartialState) would create it too, but only when TrainingArguments
are built; the run folder and the data come earlier and need a barrier (rank 0 creates the folder, the others
wait), so the group starts here and accelerate adopts it (it checks `torch.distributed.is_initialized()`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from tuneforge.distributed.env import World, adopt_slurm

log = logging.getLogger("tuneforge.distributed")


def backend_for_device() -> str:
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def init_world(timeout_s: int = 1800) -> World:
    """This process's World; with more than one process, the default process group joined (env:// rendezvous)."""
    import torch
    import torch.distributed as dist

    world = adopt_slurm()
    if not world.distributed or dist.is_initialized():
        return world
    backend = backend_for_device()
    if backend == "nccl":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    log.info("process group: %s, rank %d of %d (%s)", backend, world.rank, world.world_size, world.launcher)
    return world


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the body first (creates a folder, fills a cache), then the others do."""
    if not world.is_main:
        barrier()
    yield
    if world.is_main:
        barrier()


def all_equal(world: World, value: int) -> bool:
    """Whether every rank holds the same integer (e.g. the training set's length)."""
    if not world.distributed:
        return True
    import torch
    import torch.distributed as dist

    t = torch.tensor([value, -value], dtype=torch.long)
    if backend_for_device() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t[0]) == value and -int(t[1]) == value


def gather_all(world: World, value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank; [value] for a single process.
    torch.distributed.all_gather_object pickles them (gloo on CPU, NCCL on the current GPU)."""
    if not world.distributed:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, value)
    return out
