"""The parity table of a Hugging Face architecture against its graph model, printed.

``gnn-transformer check --arch gpt2|bert|bart|t5`` and ``comparisons/parity_<arch>.py``; the
comparisons themselves are :mod:`gnn_transformer.convert.hf.parity`.
"""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "report", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the parity scripts (also used by ``gnn-transformer check --arch``)."""
    parser.add_argument("--per-layer", action="store_true", help="also compare every layer's output and gradients")
    parser.add_argument("--attn-implementation", default="sdpa", choices=("sdpa", "eager"),
                        help="the original's attention implementation")


def report(arch: str, args: argparse.Namespace, sizes: dict | None = None) -> int:
    """Print the parity table of ``arch`` (``sizes`` as in :func:`~gnn_transformer.convert.hf.parity.small_config`);
    0 if every row is within tolerance, else 1."""
    try:
        import transformers
    except ImportError:
        raise SystemExit("the architecture parity tables need transformers: pip install 'gnn-transformer[hf]'") from None
    from ..convert.hf.parity import format_table, run

    sizes = sizes or {}
    print(f"parity {arch}: transformers {transformers.__version__} ({args.attn_implementation}) vs the graph model, "
          f"random weights, seed {args.seed}, batch {args.batch_size} ragged, sizes {sizes or 'default'}")
    print("  logits: max|graph - hf| / max|hf| at real positions; gradients: per parameter "
          "max|graph - hf| / max(1, max|hf|)\n")
    rows = run(arch, per_layer=args.per_layer, seed=args.seed, batch_size=args.batch_size,
               attn_implementation=args.attn_implementation, progress=not getattr(args, "no_progress", False),
               **sizes)
    print(format_table(rows, args.per_layer))
    failed = [row for row in rows if not row.parity.passed]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} comparisons within tolerance")
    return 1 if failed else 0


def main(arch: str, argv: list[str] | None = None) -> int:
    """Entry point of ``comparisons/parity_<arch>.py``."""
    parser = argparse.ArgumentParser(description=f"Parity table of {arch} against its graph model")
    add_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--d-model", type=int, default=None)
    parser.add_argument("--num-layers", type=int, default=None)
    parser.add_argument("--num-heads", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    sizes = {key: getattr(args, key) for key in ("d_model", "num_layers", "num_heads") if getattr(args, key)}
    return report(arch, args, sizes)
