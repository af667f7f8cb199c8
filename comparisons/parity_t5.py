"""Parity table of t5 (Hugging Face transformers, random weights) against its graph model.

Prints, per dtype and padding side, the largest logit difference relative to the largest logit
and the worst parameter gradient difference; ``--per-layer`` adds every layer's output and
gradients.  Same as ``gnn-transformer check --arch t5``.

    python comparisons/parity_t5.py [--per-layer] [--attn-implementation eager] [--d-model 128]
"""
import sys

from gnn_transformer.cli.parity import main

if __name__ == "__main__":
    sys.exit(main("t5"))
