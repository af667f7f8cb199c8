"""Graph attention split across processes: time, bytes sent (measured and predicted), memory.

    python comparisons/bench_distributed.py --quick        # CPU, gloo, 1 / 2 / 4 processes, a minute or two
    python comparisons/bench_distributed.py --device cuda  # NCCL, one GPU per process (needs P GPUs)

For each graph kind (one sequence of ``--tokens`` nodes: complete, causal, sliding window,
random), each number of processes P in ``--world-sizes`` and each strategy (halo exchange,
ring, head-parallel), every rank attends for its contiguous share of the nodes
(:func:`gnn_transformer.backends.distributed.distributed_graph_attention`, float32, no
projections).  Columns:

* ``fwd ms``, ``fwd+bwd ms``: medians over ``--repeats`` runs after a warm-up (the slowest rank);
* ``sent KiB/rank``: bytes one rank sent to the others in one forward + backward, the largest
  over the ranks, measured by the strategy's communication calls;
* ``predicted``: the same from the plan (halo: the distinct remote sources referenced across
  the cut x heads x (key + value size) x element size, both ways; ring: the P - 1 blocks
  passed on; head: the all-to-all volumes); ``=`` says measured equals predicted on every rank;
* ``cut``: the edge cut's distinct (source, receiving rank) pairs, counted here from the graph;
* ``peak MiB``: CUDA allocator peak of the rank, or the process's peak resident set on CPU
  (includes the interpreter and torch: compare rows, not absolute values).

Side by side, on the complete and causal graphs, torch's own ``context_parallel``
(``torch.distributed.tensor.experimental``: the sequence dimension of dense (1, H, n, C) q, k, v
sharded over a device mesh, SDPA dispatched to its ring) runs where it can, each case in its
own process group with a deadline; the script prints what ran (its time and its largest
difference from one process's SDPA) and what did not (torch's error).  On CPU with gloo
(torch 2.13) only the forward of the complete graph runs: its CPU SDPA backward and the causal
forward have no sharding strategy.  torch does not report its bytes.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gnn_transformer.backends.distributed import STRATEGIES, DistributedGraph, distributed_graph_attention  # noqa: E402
from gnn_transformer.graphs import causal, complete  # noqa: E402
from gnn_transformer.graphs.patterns import sliding_window  # noqa: E402


def graphs(n: int, radius: int, degree: int) -> dict:
    g = torch.Generator().manual_seed(0)
    random = torch.stack([torch.randint(0, n, (n * degree,), generator=g), torch.arange(n).repeat(degree)])
    return {"complete": complete([n]), "causal": causal([n]), f"window r={radius}": sliding_window([n], radius),
            f"random {degree}/node": random}


def cut_pairs(edge_index, n: int, world_size: int) -> int:
    owner = torch.empty(n, dtype=torch.int64)
    for rank, part in enumerate(torch.tensor_split(torch.arange(n), world_size)):
        owner[part] = rank
    src, tgt = edge_index
    crossing = owner[src] != owner[tgt]
    return torch.unique(src[crossing] * world_size + owner[tgt[crossing]]).numel()


def _time(fn, repeats: int, device) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _worker(rank: int, world_size: int, init: str, args, queue) -> None:
    torch.set_num_threads(max(1, args.threads // world_size))
    device = torch.device(args.device if args.device == "cpu" else f"cuda:{rank}")
    dist.init_process_group("gloo" if device.type == "cpu" else "nccl", init_method=f"file://{init}", rank=rank,
                            world_size=world_size)
    rows = []
    try:
        n, h, c = args.tokens, args.heads, args.head_dim
        for name, edges in graphs(n, args.radius, args.degree).items():
            graph = DistributedGraph(edges, n)
            mine = graph.targets.nodes(rank)
            g = torch.Generator().manual_seed(1)
            q, k, v = (torch.randn(n, h, c, generator=g)[mine].to(device).requires_grad_() for _ in range(3))
            for strategy in STRATEGIES:
                def forward():
                    with torch.no_grad():
                        distributed_graph_attention(q, k, v, graph, strategy=strategy)

                def forward_backward():
                    distributed_graph_attention(q, k, v, graph, strategy=strategy).sum().backward()

                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                fwd = _time(forward, args.repeats, device)
                both = _time(forward_backward, args.repeats, device)
                graph.traffic.reset()
                forward_backward()
                measured = graph.traffic.forward + graph.traffic.backward
                predicted = graph.predicted_bytes(strategy, h, c, c, q.element_size())
                peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
                rows.append((name, strategy, fwd, both, measured, predicted["forward"] + predicted["backward"], peak))
        gathered = [None] * world_size
        dist.all_gather_object(gathered, rows)
        if rank == 0:
            queue.put(gathered)
    finally:
        dist.destroy_process_group()


def _torch_context_parallel(rank: int, world_size: int, init: str, args, queue) -> None:
    """torch's context_parallel on dense (1, H, n, C) tensors: complete and causal, forward and forward + backward."""
    import torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.experimental import context_parallel
    from torch.distributed.tensor.experimental._attention import context_parallel_unshard

    torch.set_num_threads(max(1, args.threads // world_size))
    device = torch.device(args.device if args.device == "cpu" else f"cuda:{rank}")
    dist.init_process_group("gloo" if device.type == "cpu" else "nccl", init_method=f"file://{init}", rank=rank,
                            world_size=world_size)
    rows = []
    try:
        mesh = init_device_mesh(device.type, (world_size,))
        g = torch.Generator().manual_seed(1)
        q, k, v = (torch.randn(1, args.heads, args.tokens, args.head_dim, generator=g).to(device) for _ in range(3))
        for name, is_causal in (("complete", False), ("causal", True)):
            expected = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
            for what in ("fwd", "fwd+bwd"):
                buffers = [t.clone() for t in (q, k, v)]  # sharded in place by the context

                def attend():
                    leaves = [b.clone().requires_grad_(what != "fwd") for b in buffers]
                    out = F.scaled_dot_product_attention(*leaves, is_causal=is_causal)
                    if what != "fwd":
                        out.sum().backward()
                    return out.detach()

                try:
                    with context_parallel(mesh, buffers=buffers, buffer_seq_dims=[2, 2, 2]):
                        milliseconds = _time(attend, args.repeats, device)
                        out = attend()
                    (full,) = context_parallel_unshard(mesh, [out], [2])
                    rows.append((name, what, f"ran: {milliseconds:.2f} ms, max |diff| from one process "
                                 f"{float((full - expected).abs().max()):.1e}"))
                except Exception as error:  # noqa: BLE001 -- report what torch refused, and go on
                    rows.append((name, what, f"did not run: {type(error).__name__}: {str(error).splitlines()[0][:110]}"))
        if rank == 0:
            queue.put(rows)
    finally:
        dist.destroy_process_group()


def run_torch_context_parallel(world_size: int, args, deadline_s: float = 300.0):
    """The rows of :func:`_torch_context_parallel`, or ``None`` when it did not finish within the deadline."""
    ctx = mp.get_context("fork")
    queue = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        processes = mp.start_processes(_torch_context_parallel, args=(world_size, os.path.join(tmp, "init"), args,
                                                                      queue), nprocs=world_size, join=False,
                                       start_method="fork")
        start = time.perf_counter()
        while not processes.join(timeout=2):
            if time.perf_counter() - start > deadline_s:
                for process in processes.processes:
                    process.kill()
                return None
    return queue.get()


def run(world_size: int, args) -> list:
    ctx = mp.get_context("fork")
    queue = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_worker, args=(world_size, os.path.join(tmp, "init"), args, queue), nprocs=world_size,
                           join=True, start_method="fork")
    return queue.get()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="512 tokens, 4 heads of 16, 3 repeats")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--radius", type=int, default=64)
    parser.add_argument("--degree", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--world-sizes", default="1,2,4")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.heads, args.head_dim, args.radius, args.degree, args.repeats = 512, 4, 16, 16, 8, 3
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run on CPU (--device cpu)")
        return 1
    print(f"{args.tokens} tokens, {args.heads} heads of {args.head_dim}, float32, {args.device} "
          f"({'gloo' if args.device == 'cpu' else 'nccl'}); median of {args.repeats}")
    header = (f"{'graph':<16} {'P':>2} {'strategy':<8} {'fwd ms':>8} {'fwd+bwd ms':>11} {'sent KiB/rank':>14} "
              f"{'predicted':>10} {'':>1} {'cut':>6} {'peak MiB':>9}")
    print(header)
    print("-" * len(header))
    all_equal = True
    for world_size in (int(p) for p in args.world_sizes.split(",")):
        if args.device == "cuda" and world_size > torch.cuda.device_count():
            print(f"P={world_size}: not run, {torch.cuda.device_count()} GPU(s) here")
            continue
        per_rank = run(world_size, args)
        edges = graphs(args.tokens, args.radius, args.degree)
        for i, (name, strategy, *_rest) in enumerate(per_rank[0]):
            rows = [ranks[i] for ranks in per_rank]
            equal = all(r[4] == r[5] for r in rows)
            all_equal &= equal
            print(f"{name:<16} {world_size:>2} {strategy:<8} {max(r[2] for r in rows):>8.2f} "
                  f"{max(r[3] for r in rows):>11.2f} {max(r[4] for r in rows) / 1024:>14.1f} "
                  f"{max(r[5] for r in rows) / 1024:>10.1f} {'=' if equal else '!':>1} "
                  f"{cut_pairs(edges[name], args.tokens, world_size):>6} {max(r[6] for r in rows):>9.1f}")
    for world_size in (int(p) for p in args.world_sizes.split(",")):
        if world_size < 2 or (args.device == "cuda" and world_size > torch.cuda.device_count()):
            continue
        rows = run_torch_context_parallel(world_size, args)
        if rows is None:
            print(f"torch context_parallel, P={world_size}: did not finish within 300 s")
            continue
        for name, what, result in rows:
            print(f"torch context_parallel  {name:<9} P={world_size} {what:<8} {result}")
    print("measured bytes equal predicted bytes on every rank of every row" if all_equal
          else "MISMATCH: some rows sent other than predicted ('!')")
    return 0 if all_equal else 1


if __name__ == "__main__":
    sys.exit(main())
