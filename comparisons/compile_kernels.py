"""Compile the fused backend's Triton kernels ahead of time for a GPU architecture, without a GPU.

The interpreter (``TRITON_INTERPRET=1``) checks what the kernels compute; this checks that they
compile for real hardware: every launch the library makes (forward, both backward kernels, the
weights pass) is intercepted on CPU tensors, its argument types and constants give a kernel
signature, and ``triton.compile`` lowers it to PTX and a cubin for the target (default sm_90,
the H100). It prints, per variant, the launch options, the cubin size and the shared memory
the kernel needs, which must fit the target (227 KiB per block on sm_90).

    python comparisons/compile_kernels.py            # 3 dtypes x 3 head sizes x bias x dropout
    python comparisons/compile_kernels.py --quick    # bfloat16, head size 64, with a bias
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

os.environ.pop("TRITON_INTERPRET", None)  # real JIT functions, compiled rather than interpreted

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

POINTER = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.int32: "*i32",
           torch.int64: "*i64", torch.int8: "*i8", torch.uint8: "*u8", torch.bool: "*i1"}
SHARED_LIMIT = {90: 232448, 80: 166912}  # bytes of shared memory one block may use


def signature_of(kernel: JITFunction, args: tuple, kwargs: dict) -> tuple[dict, dict, dict]:
    """Triton signature, constexprs and launch options of one launch."""
    bound = dict(zip(kernel.arg_names, args))
    bound.update({k: v for k, v in kwargs.items() if k in kernel.arg_names})
    options = {k: v for k, v in kwargs.items() if k in ("num_warps", "num_stages")}
    signature, constants = {}, {}
    for param in kernel.params:
        value = bound[param.name]
        if param.is_constexpr or value is None:
            signature[param.name], constants[param.name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[param.name] = POINTER[value.dtype]
        elif isinstance(value, bool):
            signature[param.name] = "i1"
        elif isinstance(value, int):
            signature[param.name] = "i64" if abs(value) >= 2**31 else "i32"
        elif isinstance(value, float):
            signature[param.name] = "fp32"
        else:
            raise TypeError(f"{kernel.fn.__name__}: argument {param.name} of type {type(value).__name__}")
    return signature, constants, options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100/H200)")
    parser.add_argument("--quick", action="store_true", help="one dtype and head size")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from gnn_transformer import graphs, prepare_graph
    from gnn_transformer.backends.fused import launch as fused

    fused.check_fused_inputs = lambda *a, **k: None  # CPU tensors stand in for CUDA ones: nothing is run
    target, seen, rows = GPUTarget("cuda", args.arch, 32), set(), []

    def compile_launch(self, *launch_args, grid, warmup, **kwargs):
        signature, constants, options = signature_of(self, launch_args, kwargs)
        key = (self.fn.__name__, str(sorted(signature.items())), str(sorted(constants.items(), key=str)))
        if key in seen:
            return
        seen.add(key)
        compiled = triton.compile(triton.compiler.ASTSource(self, signature, constants), target=target,
                                  options=options)
        rows.append((self.fn.__name__, signature[self.arg_names[0]][1:], constants.get("HEAD_DIM"),
                     constants.get("HAS_BIAS"), constants.get("DROPOUT"), options, len(compiled.asm["cubin"]),
                     compiled.metadata.shared))

    JITFunction.run = compile_launch
    dtypes = [torch.bfloat16] if args.quick else [torch.bfloat16, torch.float16, torch.float32]
    head_dims = [64] if args.quick else [32, 64, 128]
    variants = [(True, 0.0)] if args.quick else list(itertools.product([False, True], [0.0, 0.1]))
    lengths = torch.tensor([70, 30])
    graph = prepare_graph(graphs.causal(lengths), int(lengths.sum()))
    for dtype, head_dim, (bias, dropout) in itertools.product(dtypes, head_dims, variants):
        q, k, v = (torch.randn(graph.num_targets, 2, head_dim, dtype=dtype, requires_grad=True) for _ in range(3))
        edge_bias = torch.randn(graph.num_edges, 2, dtype=dtype, requires_grad=True) if bias else None
        out, _ = fused.fused_graph_attention(q, k, v, graph, edge_bias, scale=head_dim ** -0.5, dropout_p=dropout,
                                             need_weights=True)
        out.float().sum().backward()
    limit = SHARED_LIMIT.get(args.arch)
    print(f"{'kernel':20} {'dtype':5} {'head':>4} {'bias':5} {'drop':5} {'warps':>5} {'stages':>6} "
          f"{'cubin B':>9} {'shared B':>9}")
    for name, dtype, head, bias, dropout, options, cubin, shared in rows:
        print(f"{name:20} {dtype:5} {head:4d} {str(bias):5} {str(dropout):5} {options.get('num_warps', 4):5d} "
              f"{options.get('num_stages', 3):6d} {cubin:9d} {shared:9d}")
    too_big = [row for row in rows if limit is not None and row[-1] > limit]
    print(f"{len(rows)} kernel variants compiled for sm_{args.arch}; largest shared memory "
          f"{max(row[-1] for row in rows)} B" + (f" (limit {limit} B)" if limit else ""))
    for row in too_big:
        print(f"TOO MUCH SHARED MEMORY: {row}")
    return 1 if too_big else 0


if __name__ == "__main__":
    raise SystemExit(main())
