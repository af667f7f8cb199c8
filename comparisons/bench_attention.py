"""Graph attention against dense kernels on the cases of the design notes, in one process.

    python comparisons/bench_attention.py --quick     # small sizes on CPU, float32, under a minute
    python comparisons/bench_attention.py             # full sizes on a GPU, bfloat16, d_model 512, 8 heads

Each row times one attention layer with its projections (q, k, v in, output projection out)
on one case: forward (no grad) and forward + backward (gradients of the input and of every
parameter), medians over ``--repeats`` runs after a warm-up.  Columns:

* ``peak MiB``: extra memory of one forward + backward (CUDA: allocator peak above the
  inputs; CPU: resident-set growth sampled every 0.2 ms, a lower bound);
* ``B/edge``: bytes of the index structures the implementation reads, per edge (the
  user's int64 edge_index is 16; a prepared graph counts its layouts; a dense mask or a
  block mask counts its tensors);
* ``prep ms``: building those structures (graph preparation, mask, block mask), median;
* ``/SDPA``, ``/Flex``: forward + backward time of the row divided by dense SDPA's
  (FlexAttention's) on the same case in the same run (forward times where a backward is
  missing, marked ``f``).

Implementations: ``reference`` (PyG message passing), ``chunked``, ``fused`` (Triton; CUDA
only: the interpreter is for tests), PyG ``TransformerConv``, dense ``SDPA`` (padded
batches; a bool mask for windows; a key-padding mask for ragged batches), ``Flex``
(FlexAttention with the equivalent block mask, compiled; on CPU forward only and behind
``--flex-cpu``, as it compiles for about 20 s per shape), ``varlen`` (varlen_attn on packed
ragged or equal-length complete batches; CUDA only).  A row that cannot run prints why.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from gnn_transformer import graphs
from gnn_transformer.core.attention import GraphMultiheadAttention
from gnn_transformer.backends.prepared import prepare_graph
from gnn_transformer.backends.segment_plan import segment_plan
from gnn_transformer.backends.tile_plan import tile_plan
from gnn_transformer.testing.backends import window_graph
from measure import CLOCK, peak_memory, timed, use_clock


class Skip(Exception):
    """A row that cannot run here; the message says why."""


@dataclass
class Case:
    name: str
    kind: str  # complete | causal | window | ragged
    lengths: list[int]  # sequence lengths (one sequence of all tokens for a window)
    radius: int = 0

    @property
    def num_nodes(self) -> int:
        return sum(self.lengths)

    def edge_index(self, device) -> Tensor:
        if self.kind == "window":
            return window_graph(self.num_nodes, self.radius, device=device)
        lengths = torch.tensor(self.lengths, device=device)
        return graphs.causal(lengths) if self.kind == "causal" else graphs.complete(lengths)


def ragged_lengths(count: int, low: int, high: int) -> list[int]:
    return torch.randint(low, high + 1, (count,), generator=torch.Generator().manual_seed(0)).tolist()


def cases(quick: bool, tiny: bool = False) -> list[Case]:
    if tiny:  # a smoke run of every row kind (gpu_check.py --dry-run)
        return [Case("complete 2 x 16", "complete", [16] * 2), Case("causal 1 x 32", "causal", [32]),
                Case("window r4 @ 64", "window", [64], 4), Case("ragged 4 x 5-20", "complete", ragged_lengths(4, 5, 20))]
    if quick:  # the design notes' cases scaled down for 2 CPU cores
        return [Case("complete 8 x 32", "complete", [32] * 8), Case("complete 4 x 64", "complete", [64] * 4),
                Case("complete 1 x 128", "complete", [128]), Case("causal 1 x 128", "causal", [128]),
                Case("window r8 @ 512", "window", [512], 8), Case("window r8 @ 2048", "window", [2048], 8),
                Case("causal 8 x 32", "causal", [32] * 8), Case("window r16 @ 1024", "window", [1024], 16),
                Case("ragged 32 x 10-50", "complete", ragged_lengths(32, 10, 50))]
    return [Case("complete 8 x 512", "complete", [512] * 8), Case("complete 4 x 1024", "complete", [1024] * 4),
            Case("complete 1 x 4096", "complete", [4096]), Case("causal 1 x 4096", "causal", [4096]),
            Case("window r128 @ 16384", "window", [16384], 128), Case("window r128 @ 65536", "window", [65536], 128),
            Case("causal 8 x 512", "causal", [512] * 8), Case("window r256 @ 65536", "window", [65536], 256),
            Case("ragged 4096 x 10-50", "complete", ragged_lengths(4096, 10, 50)),
            Case("complete 1 x 16384", "complete", [16384])]


@dataclass
class Setup:
    """A callable layer on one case: ``run()`` returns the output to differentiate."""

    run: object
    inputs: list[Tensor]
    structure_bytes: int = 0
    prep_ms: float = 0.0
    backward: bool = True
    note: str = ""


@dataclass
class Context:
    device: torch.device
    dtype: torch.dtype
    d_model: int
    heads: int
    repeats: int
    flex_cpu: bool
    memory_limit: int
    flex: object = field(default=None)


def node_input(case: Case, ctx: Context) -> Tensor:
    return torch.randn(case.num_nodes, ctx.d_model, device=ctx.device, dtype=ctx.dtype, requires_grad=True)


def setup_graph(backend: str):
    def setup(case: Case, ctx: Context) -> Setup:
        interpreted = os.environ.get("TRITON_INTERPRET") == "1"
        if backend == "fused" and ctx.device.type != "cuda" and not interpreted:
            raise Skip("needs CUDA (TRITON_INTERPRET=1 runs it through Triton's interpreter: a check, not a timing)")
        edge_index = case.edge_index(ctx.device)
        if backend == "reference":
            check_memory("reference", edge_index.size(1), ctx)
        attention = GraphMultiheadAttention(ctx.d_model, ctx.heads, backend=backend, device=ctx.device,
                                            dtype=ctx.dtype)
        x = node_input(case, ctx)
        if backend == "reference":
            return Setup(lambda: attention(x, x, x, edge_index), [x], 16 * edge_index.size(1))

        def prepare():
            graph = prepare_graph(edge_index, case.num_nodes, layouts=("tiles",) if backend == "fused" else ("csr",))
            if backend == "chunked":  # the segment, tile or chunk plan for these heads
                graph.prepare("chunked", ctx.heads, ctx.d_model // ctx.heads)
            return graph

        prep_ms = timed(prepare, ctx.device, 3)
        graph = prepare()
        note = "Triton interpreter: timings meaningless" if backend == "fused" and ctx.device.type != "cuda" else ""
        plan = None
        if backend == "chunked":  # the segment or tile plan it runs on counts too
            head_dim = ctx.d_model // ctx.heads
            plan = segment_plan(graph, ctx.heads, head_dim) or tile_plan(graph, ctx.heads, head_dim)
        structure = graph.structure_bytes() + (0 if plan is None else plan.nbytes())
        return Setup(lambda: attention(x, x, x, graph), [x], structure, prep_ms, note=note)
    return setup


def setup_transformer_conv(case: Case, ctx: Context) -> Setup:
    from torch_geometric.nn import TransformerConv

    edge_index = case.edge_index(ctx.device)
    check_memory("reference", edge_index.size(1), ctx)
    conv = TransformerConv(ctx.d_model, ctx.d_model // ctx.heads, heads=ctx.heads, root_weight=False)
    conv = conv.to(ctx.device, ctx.dtype)
    x = node_input(case, ctx)
    return Setup(lambda: conv(x, edge_index), [x], 16 * edge_index.size(1))


class DenseAttention(nn.Module):
    """Projections around a dense attention call on (B, H, L, C) tensors."""

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.heads = ctx.heads
        self.in_proj = nn.Linear(ctx.d_model, 3 * ctx.d_model, device=ctx.device, dtype=ctx.dtype)
        self.out_proj = nn.Linear(ctx.d_model, ctx.d_model, device=ctx.device, dtype=ctx.dtype)

    def forward(self, x: Tensor, attend) -> Tensor:  # x (B, L, E)
        q, k, v = self.in_proj(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # (B, H, L, C) each
        return self.out_proj(attend(q, k, v).transpose(1, 2).flatten(-2))


def padded_input(case: Case, ctx: Context) -> Tensor:
    length = max(case.lengths)
    return torch.randn(len(case.lengths), length, ctx.d_model, device=ctx.device, dtype=ctx.dtype, requires_grad=True)


def setup_sdpa(case: Case, ctx: Context) -> Setup:
    layer, x = DenseAttention(ctx), padded_input(case, ctx)
    length, mask, prep_ms = max(case.lengths), None, 0.0
    if case.kind == "window":
        check_memory("mask", length * length, ctx)

        def build():
            position = torch.arange(length, device=ctx.device)
            return (position[:, None] - position[None, :]).abs() <= case.radius  # (L, L) True = allowed
        prep_ms, mask = timed(build, ctx.device, 3), build()
    elif len(set(case.lengths)) > 1:
        def build():
            lengths = torch.tensor(case.lengths, device=ctx.device)
            return (torch.arange(length, device=ctx.device) < lengths[:, None])[:, None, None, :]  # (B, 1, 1, L)
        prep_ms, mask = timed(build, ctx.device, 3), build()
    causal = case.kind == "causal"
    attend = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # noqa: E731
    structure = 0 if mask is None else mask.numel() * mask.element_size()
    return Setup(lambda: layer(x, attend), [x], structure, prep_ms)


def setup_flex(case: Case, ctx: Context) -> Setup:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if ctx.device.type == "cpu" and not ctx.flex_cpu:
        raise Skip("CPU: forward only, ~20 s compile per shape; --flex-cpu runs it")
    if ctx.flex is None:
        ctx.flex = torch.compile(flex_attention, dynamic=False)
    layer = DenseAttention(ctx)
    ragged = len(set(case.lengths)) > 1
    if ragged:  # one packed sequence with a document mask
        document = torch.repeat_interleave(torch.arange(len(case.lengths), device=ctx.device),
                                           torch.tensor(case.lengths, device=ctx.device))
        x = torch.randn(1, case.num_nodes, ctx.d_model, device=ctx.device, dtype=ctx.dtype, requires_grad=True)
        mask_mod = lambda b, h, i, j: document[i] == document[j]  # noqa: E731
    else:
        x = padded_input(case, ctx)
        mask_mod = {"complete": None, "causal": lambda b, h, i, j: i >= j,
                    "window": lambda b, h, i, j: (i - j).abs() <= case.radius}[case.kind]
    block_mask, prep_ms, length = None, 0.0, x.size(1)
    if mask_mod is not None:
        def build():
            return create_block_mask(mask_mod, None, None, length, length, device=ctx.device, _compile=True)
        build()  # compile once
        prep_ms, block_mask = timed(build, ctx.device, 3), build()
    structure = 0 if block_mask is None else sum(t.numel() * t.element_size() for t in block_mask.as_tuple()
                                                 if isinstance(t, Tensor))
    attend = lambda q, k, v: ctx.flex(q, k, v, block_mask=block_mask)  # noqa: E731
    return Setup(lambda: layer(x, attend), [x], structure, prep_ms, backward=ctx.device.type != "cpu")


def setup_varlen(case: Case, ctx: Context) -> Setup:
    if case.kind != "complete":
        raise Skip("varlen_attn: complete (ragged) graphs only")
    if ctx.device.type != "cuda":
        raise Skip("varlen_attn has no CPU kernel")
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        raise Skip("this torch has no torch.nn.attention.varlen") from None
    layer, x = DenseAttention(ctx), node_input(case, ctx)
    lengths = torch.tensor(case.lengths, device=ctx.device)

    def build():
        return F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    prep_ms, cu = timed(build, ctx.device, 3), build()
    longest = max(case.lengths)

    def attend(q, k, v):  # (1, H, N, C) -> varlen's (N, H, C) and back
        packed = [t[0].transpose(0, 1) for t in (q, k, v)]
        return varlen_attn(*packed, cu, cu, longest, longest).transpose(0, 1)[None]
    return Setup(lambda: layer(x[None], attend), [x], cu.numel() * 4, prep_ms)


IMPLEMENTATIONS = {"reference": setup_graph("reference"), "chunked": setup_graph("chunked"),
                   "fused": setup_graph("fused"), "TransformerConv": setup_transformer_conv, "SDPA": setup_sdpa,
                   "Flex": setup_flex, "varlen": setup_varlen}
BYTES_PER_EDGE = {"reference": 6 * 4, "mask": 1}  # per edge and feature for message passing; per mask entry


def check_memory(what: str, count: int, ctx: Context) -> None:
    """Refuse (with the reason) what would exhaust CPU memory instead of raising an error."""
    need = count * BYTES_PER_EDGE[what] * (ctx.d_model if what == "reference" else 1)
    if ctx.device.type == "cpu" and need > ctx.memory_limit:
        raise Skip(f"needs about {need / 2**30:.0f} GiB (estimated), more than half this machine's memory")


def training_step(setup: Setup):
    """Forward + backward of ``setup`` (one fixed output gradient); the inputs' gradients cleared."""
    grad = None

    def step():
        nonlocal grad
        out = setup.run()
        grad = torch.randn_like(out) if grad is None else grad
        out.backward(grad)
        for t in setup.inputs:
            t.grad = None
    return step


def measure(setup: Setup, ctx: Context) -> dict:
    """The medians of forward + backward and of forward, each after a warm-up call (compilation,
    autotuning, caches)."""
    row = {"prep": setup.prep_ms, "bytes": setup.structure_bytes, "note": setup.note}
    if setup.backward:
        step = training_step(setup)
        step()
        row["fwd+bwd"] = timed(step, ctx.device, ctx.repeats)
    with torch.no_grad():
        setup.run()
        row["fwd"] = timed(setup.run, ctx.device, ctx.repeats)
    return row


def measure_memory(setup: Setup, ctx: Context) -> dict:
    """Peak extra memory (MiB) of one forward + backward (forward where there is no backward), after a warm-up.

    On CPU the sampler switches glibc's allocations above 64 KiB to mmap for good (``mallopt``
    ends its adaptive threshold), which slows later allocations: so :func:`main` measures
    memory in a pass after every timing.
    """
    run = training_step(setup) if setup.backward else setup.run
    with torch.set_grad_enabled(setup.backward):
        run()
        return {"peak": peak_memory(run, ctx.device)}


def run_case(case: Case, implementation: str, ctx: Context, what=measure) -> dict:
    """``what`` (:func:`measure` or :func:`measure_memory`) of one implementation on one case, or why it did not run."""
    try:
        return what(IMPLEMENTATIONS[implementation](case, ctx), ctx)
    except Skip as reason:
        return {"note": str(reason)}
    except (torch.cuda.OutOfMemoryError, MemoryError):
        return {"note": "out of memory"}
    except RuntimeError as error:
        if "out of memory" in str(error) or "can't allocate" in str(error):
            return {"note": "out of memory"}
        return {"note": f"error: {str(error).splitlines()[0][:80]}"}
    finally:
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


def ratio(row: dict, base: dict) -> str:
    for key, mark in (("fwd+bwd", ""), ("fwd", "f")):
        if key in row and key in base:
            return f"{row[key] / base[key]:.2f}{mark}"
    return "-"


def table(results: dict, cases_: list[Case]) -> str:
    """Rows that ran, then one line per implementation and reason for the rows that did not."""
    header = (f"{'case':22} {'edges':>10} {'implementation':15} {'fwd ms':>9} {'fwd+bwd ms':>10} {'peak MiB':>9} "
              f"{'B/edge':>7} {'prep ms':>8} {'/SDPA':>6} {'/Flex':>6}  note")
    lines, skipped = [header, "-" * len(header)], {}
    for case in cases_:
        rows = results[case.name]
        for name, row in rows.items():
            if name == "edges":
                continue
            if "fwd" not in row:
                skipped.setdefault((name, row["note"]), []).append(case.name)
                continue
            both = f"{row['fwd+bwd']:.2f}" if "fwd+bwd" in row else "-"
            lines.append(
                f"{case.name:22} {rows['edges']:>10,} {name:15} {row['fwd']:>9.2f} {both:>10} {row['peak']:>9.1f} "
                f"{row['bytes'] / rows['edges']:>7.2f} {row['prep']:>8.2f} {ratio(row, rows.get('SDPA', {})):>6} "
                f"{ratio(row, rows.get('Flex', {})):>6}  {'' if 'fwd+bwd' in row else 'forward only '}{row['note']}")
    for (name, note), names in skipped.items():
        where = "every case" if len(names) == len(cases_) else "; ".join(names)
        lines.append(f"not run: {name} ({where}): {note}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes on CPU in float32 (under a minute)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU: a smoke run of every row (seconds)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                        help="cpu: the process's CPU time (all its threads), steadier than wall time on a shared "
                             "CPU machine; wall otherwise")
    parser.add_argument("--device", default=None, help="default: cpu with --quick, else cuda")
    parser.add_argument("--dtype", default=None, help="default: float32 with --quick, else bfloat16")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row (default 7 quick, 10 full)")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--cases", default=None, help="comma-separated substrings of case names")
    parser.add_argument("--flex-cpu", action="store_true", help="run FlexAttention on CPU (forward only, slow compile)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default 1 with --quick: on a shared machine one thread times steadily)")
    args = parser.parse_args()
    args.quick = args.quick or args.tiny
    use_clock(args.clock)
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    device = torch.device(args.device or ("cpu" if args.quick else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: the full-size cases need a GPU; run with --quick (CPU) or --device cpu")
        return 0
    dtype = getattr(torch, args.dtype or ("float32" if args.quick else "bfloat16"))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    ctx = Context(device, dtype, 32 if args.tiny else 64 if args.quick else 512, 2 if args.tiny else 4 if args.quick else 8,
                  args.repeats or (2 if args.tiny else 7 if args.quick else 10), args.flex_cpu, memory // 2)
    selected = [c for c in cases(args.quick, args.tiny) if args.cases is None or any(s in c.name for s in args.cases.split(","))]
    names = args.implementations.split(",")
    torch.manual_seed(0)
    results: dict = {}
    start = time.perf_counter()
    with tqdm(total=2 * len(selected) * len(names), desc="bench", file=sys.stderr) as progress:
        for case in selected:  # times first, then memory (see measure_memory)
            results[case.name] = {"edges": case.edge_index("cpu").size(1) if device.type == "cpu"
                                  else case.edge_index(device).size(1)}
            for name in names:
                progress.set_postfix_str(f"{case.name}: {name}")
                results[case.name][name] = run_case(case, name, ctx)
                progress.update()
        for case in selected:
            for name in names:
                progress.set_postfix_str(f"memory: {case.name}: {name}")
                row = results[case.name][name]
                if "fwd" in row:
                    memory = run_case(case, name, ctx, measure_memory)
                    row["peak"] = memory.get("peak", float("nan"))  # nan: the memory pass failed
                progress.update()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device_name}; {str(dtype)[6:]}; d_model {ctx.d_model}, {ctx.heads} heads; median of "
          f"{ctx.repeats}, {args.clock} time; torch {torch.__version__}; {time.perf_counter() - start:.0f} s in all")
    print(table(results, selected))
    if args.json:
        import json

        kinds = {case.name: case.kind + (" ragged" if len(set(case.lengths)) > 1 else "") for case in selected}
        with open(args.json, "w") as f:
            json.dump({"device": device_name, "dtype": str(dtype)[6:], "d_model": ctx.d_model, "heads": ctx.heads,
                       "cases": {name: {"kind": kinds[name], **rows} for name, rows in results.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
