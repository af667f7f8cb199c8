"""``gnn-transformer check``: prove, on random weights and ragged batches, that the graph
modules compute what ``torch.nn.Transformer`` computes (outputs and gradients).

With ``--arch gpt2|bert|bart|t5`` it instead prints the parity table of that Hugging Face
architecture against its graph model (``comparisons/parity_<arch>.py``)."""
from __future__ import annotations

import argparse
import time
import warnings

import torch

from .options import device, non_negative_int, positive_int

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "check", help="run the equivalence suite against torch.nn.Transformer and print the parity table",
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--d-model", type=positive_int, default=512)
    parser.add_argument("--nhead", type=positive_int, default=8)
    parser.add_argument("--num-encoder-layers", type=positive_int, default=6)
    parser.add_argument("--num-decoder-layers", type=positive_int, default=6)
    parser.add_argument("--dim-feedforward", type=positive_int, default=2048)
    parser.add_argument("--activation", choices=("relu", "gelu"), default="relu")
    parser.add_argument("--norm-first", action="store_true", help="pre-norm layers (norm_first=True)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float64")
    parser.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=4, help="sequences per random ragged batch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--arch", choices=("gpt2", "bert", "bart", "t5"), default=None,
                        help="compare a Hugging Face architecture (small random model) with its graph model instead; "
                             "uses --seed, --batch-size, --no-progress, --per-layer and --attn-implementation, "
                             "not the nn.Transformer sizes")
    from .parity import add_arguments

    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "arch", None):
        from .parity import report

        return report(args.arch, args)
    from ..testing.equivalence import CheckConfig, format_table, run_suite

    if args.d_model % args.nhead:
        raise SystemExit(f"gnn-transformer check: --d-model {args.d_model} is not divisible by --nhead {args.nhead}")
    config = CheckConfig(
        d_model=args.d_model, nhead=args.nhead, num_encoder_layers=args.num_encoder_layers,
        num_decoder_layers=args.num_decoder_layers, dim_feedforward=args.dim_feedforward,
        norm_first=args.norm_first, activation=args.activation, dtype=DTYPES[args.dtype], device=args.device,
        seed=args.seed, batch_size=args.batch_size,
    )
    print(f"gnn-transformer check: graph modules vs torch {torch.__version__} (MATH SDPA, fast path off)")
    print(f"  d_model={config.d_model} nhead={config.nhead} layers={config.num_encoder_layers}+"
          f"{config.num_decoder_layers} dim_feedforward={config.dim_feedforward} activation={config.activation} "
          f"norm_first={config.norm_first} dtype={args.dtype} device={config.device} seed={config.seed}")
    print("  tolerance per tensor: max|graph - torch| <= tol * max(1, max|torch|)\n")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nested.*|.*mismatched key_padding_mask.*")
        rows = run_suite(config, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    print(format_table(rows))
    failed = [row for row in rows if not row.report.passed]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} comparisons within tolerance in {elapsed:.1f} s")
    if failed:
        for row in failed:
            print(f"MISMATCH {row.module} [{row.graph}, {row.call}]: {row.report}")
        return 1
    return 0
