r"""Multi-process training with ``torch.distributed``: set-up from ``torchrun``'s environment, the
one collective the loss needs, and context parallelism (one sequence split across processes).

``torchrun --nproc-per-node 2 -m gnn_transformer train copy --distributed`` starts two
processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
set; :func:`init_from_env` joins them into a process group (gloo on CPU, NCCL on GPU).

**Context parallel x data parallel.**  With ``context_parallel=C`` the ``W`` processes form a
2-D grid of ``W / C`` data-parallel replicas x ``C`` context-parallel ranks: ranks
``d C, ..., d C + C - 1`` hold replica ``d`` and split the nodes of its batch between them
(:func:`context_parallel_batch`: contiguous ranges of each node type, every edge set a
:class:`~gnn_transformer.backends.distributed.DistributedGraph` on the replica's own process
group, built from the world by :func:`init_from_env`).  Replica ``d`` reads slice ``d`` of
every global batch.  The gradient of the global loss is the *sum* over all ``W`` processes of
their parameter gradients (a context-parallel rank's gradient holds only its nodes' share, the
gradients of remote keys and values having come home through the attention's backward), which
is what ``DistributedDataParallel`` over the world computes from a loss scaled by ``W`` (its
average times ``W``; :meth:`~gnn_transformer.training.Trainer.backward`).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

__all__ = ["Process", "init_from_env", "all_reduce_sum", "barrier", "shutdown", "context_parallel_batch",
           "spawn_local"]


@dataclass(frozen=True)
class Process:
    """Where this process stands: ``rank`` of ``world_size``, and the device it trains on.

    With ``context_parallel`` C > 1 the processes form ``world_size / C`` data-parallel replicas of C
    context-parallel ranks each (module docstring); ``context_group`` is the process group of this
    process's replica and ``strategy`` the attention strategy across it (``"halo"``, ``"ring"``, ``"head"``).
    """

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    context_parallel: int = 1
    context_group: Any = None
    strategy: str = "halo"

    @property
    def is_main(self) -> bool:
        """Rank 0 evaluates, prints and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or (dist.is_available() and dist.is_initialized())

    @property
    def data_rank(self) -> int:
        """Which data-parallel replica this process belongs to, so which slice of every global batch it reads."""
        return self.rank // self.context_parallel

    @property
    def data_world_size(self) -> int:
        """The number of data-parallel replicas."""
        return self.world_size // self.context_parallel


def init_from_env(device: str = "cpu", context_parallel: int = 1, strategy: str = "halo") -> Process:
    """Join the process group described by torchrun's environment variables.

    Uses the gloo backend for ``device="cpu"`` and NCCL for ``"cuda"`` (each process on GPU
    ``LOCAL_RANK``).  With ``context_parallel`` C > 1 it also builds, from the world, the process
    group of each data-parallel replica (C consecutive ranks; every process takes part in building
    every group, as ``new_group`` requires).  Raises a clear error when the variables are missing or
    the world size is not a multiple of C.
    """
    from ..backends.distributed import STRATEGIES

    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(f"--distributed needs the environment torchrun sets ({', '.join(missing)} missing): "
                           f"launch with  torchrun --nproc-per-node N -m gnn_transformer train ... --distributed")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if isinstance(context_parallel, bool) or not isinstance(context_parallel, int) or context_parallel < 1 \
            or world_size % context_parallel:
        raise ValueError(f"context_parallel must be a positive divisor of the world size ({world_size} processes), "
                         f"got {context_parallel!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if device.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    group = None
    if context_parallel > 1:  # its own communicator even when it spans the world: DDP's all-reduces use the world's
        for replica in range(world_size // context_parallel):
            ranks = list(range(replica * context_parallel, (replica + 1) * context_parallel))
            made = dist.new_group(ranks)
            if rank in ranks:
                group = made
    return Process(rank, world_size, device, context_parallel, group, strategy)


def context_parallel_batch(batch, group=None, strategy: str = "halo"):
    """This rank's share of a collated batch whose nodes are split over the ranks of ``group``.

    Every node type's nodes are split into contiguous ranges (rank r of P holds
    ``tensor_split(arange(N), P)[r]``, across sequence boundaries); every node attribute (``x``,
    ``position``, ``y``, ``batch``) keeps this rank's rows, and every edge set becomes a
    :class:`~gnn_transformer.backends.distributed.DistributedGraph` of the whole batch's graph (a
    cross-attention graph of the source and target partitions), which the model's attention runs
    on through the distributed backend.  Every rank of ``group`` must call it with the same batch.

    Args:
        batch: a PyG ``Data`` (one stack: ``x``, ``position``, ``edge_index``) or ``HeteroData``
            (``src``/``tgt`` node types and their three edge types), collated.
        group: the context-parallel process group (default: the world).
        strategy: the attention strategy across the ranks (``"halo"``, ``"ring"``, ``"head"``).

    Returns:
        a batch of the same type with this rank's rows and ``DistributedGraph`` edge sets; the
        model's logits on it are this rank's rows of the logits on ``batch``.

    Raises:
        ValueError: a batch with per-edge biases, or a list of edge sets (one per layer), which the
            distributed backend does not carry.
    """
    from torch_geometric.data import Data, HeteroData

    from ..backends.distributed import DistributedGraph, contiguous_partition

    world_size = dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank(group) if world_size > 1 else 0
    share = HeteroData() if hasattr(batch, "node_types") else Data()
    partitions = {}
    for store in batch.node_stores:
        key = getattr(store, "_key", None)
        num_nodes = store.num_nodes
        partitions[key] = contiguous_partition(num_nodes, world_size, f"{key or 'node'} partition")
        mine = partitions[key].nodes(rank)
        target = share if key is None else share[key]
        for name, value in store.items():
            if name == "ptr" or not store.is_node_attr(name):
                continue
            target[name] = value[mine.to(value.device)]
    for store in batch.edge_stores:
        key = getattr(store, "_key", None)
        if "edge_bias" in store:
            raise ValueError(f"batch{'' if key is None else [key]} carries an edge_bias: attention on a graph split "
                             "across processes supports no per-edge bias")
        edges = store.edge_index
        if not isinstance(edges, torch.Tensor):
            raise ValueError(f"batch{'' if key is None else [key]}.edge_index must be one edge set (2, num_edges) "
                             f"to be split across processes, got {type(edges).__name__}")
        if key is None:
            graph = DistributedGraph(edges, partitions[None].num_nodes, None, partitions[None], None, group,
                                     strategy=strategy)
        else:
            source, _, target_type = key
            cross = source != target_type
            graph = DistributedGraph(edges, partitions[source].num_nodes,
                                     partitions[target_type].num_nodes if cross else None, partitions[source],
                                     partitions[target_type] if cross else None, group, strategy=strategy)
        (share if key is None else share[key]).edge_index = graph
    return share


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(local_rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    fn(*args)


def spawn_local(fn: Callable, nprocs: int, args: tuple = ()) -> None:
    """Run ``fn(*args)`` in ``nprocs`` new processes on this machine with torchrun's environment
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), and wait for them.

    ``fn`` must be importable (a module-level function); an exception in a process is raised here.
    """
    import torch.multiprocessing as mp

    mp.start_processes(_spawned, args=(nprocs, _free_port(), fn, args), nprocs=nprocs, join=True,
                       start_method="spawn")


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
