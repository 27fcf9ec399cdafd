"""Data-parallel training: one process per GPU or CPU worker, started by torchrun.

`torchrun --nproc-per-node N -m mt train ...` starts N copies of `mt train`
and gives each its RANK, LOCAL_RANK and WORLD_SIZE (and, across nodes, the
rendezvous address) in the environment. Each process joins the group here
(NCCL between GPUs, gloo between CPU processes), trains a replica of the
model on its own share of every update's batches, and PyTorch's
DistributedDataParallel averages the gradients, so that all replicas take
the same step. Without torchrun there is one worker and every function
here does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from mt.config import MTError

T = TypeVar("T")

# Validation runs on the first worker while the others wait at a collective;
# a long validation must not trip the process group's timeout.
TIMEOUT = timedelta(hours=1)


@dataclass(frozen=True)
class Workers:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """The first worker: the only one that validates and writes files."""
        return self.rank == 0


def current() -> Workers:
    if dist.is_available() and dist.is_initialized():
        return Workers(dist.get_rank(), dist.get_world_size())
    return Workers()


def start(device: torch.device) -> torch.device:
    """Join the process group that torchrun set up (nothing for a plain run).
    Returns the device of this worker: on CUDA, the GPU numbered LOCAL_RANK."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    except ValueError as error:  # WORLD_SIZE set, but not the rest of torchrun's environment
        raise MTError(
            f"cannot join the workers: {error}; start several workers with torchrun, or unset WORLD_SIZE"
        ) from None
    return device


def stop(finished: bool) -> None:
    """Leave the process group. After a finished run the workers first wait for each
    other, so that none tears down its connections while another still writes its
    files (a gloo worker that did once aborted at exit: "terminate called without
    an active exception")."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def main_first() -> Iterator[None]:
    """Run a block on the first worker of each node, then on the others: the
    first one fills the node's `datasets` cache, the others read it."""
    workers = current()
    first_on_node = int(os.environ.get("LOCAL_RANK", workers.rank)) == 0
    if workers.world_size > 1 and not first_on_node:
        dist.barrier()
    yield
    if workers.world_size > 1 and first_on_node:
        dist.barrier()


def sum_over_workers(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all workers (in place)."""
    if current().world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def from_main(value: T) -> T:
    """The first worker's `value` (any picklable object), on every worker."""
    if current().world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
