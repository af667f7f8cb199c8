"""Multi-process training with ``torch.distributed``: set-up from ``torchrun``'s environment and the
one collective the loss needs.

``torchrun --nproc-per-node 2 -m gnn_transformer train copy --distributed`` starts two
processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
set; :func:`init_from_env` joins them into a process group (gloo on CPU, NCCL on GPU).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Process", "init_from_env", "all_reduce_sum", "barrier", "shutdown"]


@dataclass(frozen=True)
class Process:
    """Where this process stands: ``rank`` of ``world_size``, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0 evaluates, prints and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or (dist.is_available() and dist.is_initialized())


def init_from_env(device: str = "cpu") -> Process:
    """Join the process group described by torchrun's environment variables.

    Uses the gloo backend for ``device="cpu"`` and NCCL for ``"cuda"`` (each process on GPU
    ``LOCAL_RANK``).  Raises a clear error when the variables are missing.
    """
    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(f"--distributed needs the environment torchrun sets ({', '.join(missing)} missing): "
                           f"launch with  torchrun --nproc-per-node N -m gnn_transformer train ... --distributed")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return Process(rank, world_size, device)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes (in place) when a process group is running; returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
