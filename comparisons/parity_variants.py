"""Parity table of the variant options against their dense reference in plain torch.

Every option of ``gnn_transformer.variants.GraphVariantModel`` (norm placement and kind,
feed-forward, position scheme, tied embeddings) and three combinations (LLaMA-, T5 v1.1- and
BERT-like) are run on a ragged batch as message passing and compared with
``gnn_transformer.testing.dense_variants`` (padded tensors, boolean masks, formulas written
again): logits and the worst parameter gradient, per tensor max|graph - dense| / max(1, max|dense|).

    python comparisons/parity_variants.py [--dtype float32]
"""
import argparse
import sys

import torch

from gnn_transformer.testing import default_tolerance
from gnn_transformer.testing.dense_variants import variant_config, variant_parity
from gnn_transformer.variants import FEED_FORWARDS, POSITIONS, GraphVariantModel

SIZES = dict(vocab_size=97, d_model=32, nhead=4, num_layers=2, dim_feedforward=48, dropout=0.0, max_positions=32,
             num_buckets=8, max_distance=12)
PRESETS = {
    "LLaMA-like (rms, swiglu, rotary, untied, no bias)": dict(norm="rms", feed_forward="swiglu", positions="rotary",
                                                              tie_weights=False, bias=False),
    "T5 v1.1-like (rms, geglu, t5 buckets, untied)": dict(norm="rms", feed_forward="geglu", positions="t5",
                                                          tie_weights=False, bias=False),
    "BERT-like (post-norm, gelu, learned)": dict(norm_first=False, feed_forward="gelu", positions="learned"),
}


def cases():
    for norm_first in (True, False):
        for norm in ("layer", "rms"):
            yield f"norm_first={norm_first}, norm={norm}", dict(norm_first=norm_first, norm=norm), True
    for feed_forward in sorted(FEED_FORWARDS):
        yield f"feed_forward={feed_forward}", dict(feed_forward=feed_forward), True
    for positions in POSITIONS:
        for causal in (True, False):
            yield f"positions={positions}", dict(positions=positions, bidirectional=not causal), causal
    for tie in (True, False):
        yield f"tie_weights={tie}, scale_embedding={not tie}", dict(tie_weights=tie, scale_embedding=not tie), True
    for name, options in PRESETS.items():
        yield name, {**options, "bidirectional": False}, True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    tolerance = default_tolerance(dtype)
    print(f"variants vs dense plain-torch reference, {args.dtype}, d_model {SIZES['d_model']}, "
          f"{SIZES['num_layers']} layers, lengths 6, 3, 1; tolerance {tolerance:.0e}\n")
    rows, failed = [], 0
    for name, options, causal in cases():
        torch.manual_seed(args.seed)
        kwargs = {**SIZES, **options, "dtype": dtype}
        logits, gradient, worst = variant_parity(GraphVariantModel(**kwargs), variant_config(**kwargs), causal,
                                                 seed=args.seed)
        passed = logits <= tolerance and gradient <= tolerance
        failed += not passed
        rows.append((name, "causal" if causal else "complete", f"{logits:.2e}", f"{gradient:.2e}", worst,
                     "pass" if passed else "FAIL"))
    header = ("option", "graph", "logits", "worst gradient", "parameter", "result")
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    for line in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
    print(f"\n{len(rows) - failed}/{len(rows)} options within tolerance")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
