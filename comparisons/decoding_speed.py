"""Incremental decoding (the graph grows one node per hypothesis and step, keys and values cached)
against recomputing the whole graph at every step, and against ``torch.nn.Transformer`` recomputing
its padded batch at every step.

    python comparisons/decoding_speed.py                 # d_model 128, 3 + 3 layers, 8 sources, 32 tokens
    python comparisons/decoding_speed.py --tokens 64

Prints, per strategy and path, the median wall time over ``--repeats`` runs, the time per
generated token and the ratio to the incremental path measured in the same run (the paths
decode the same tokens: the script checks it).  Random weights with the end token disabled, so
every sequence decodes exactly ``--tokens`` tokens.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from gnn_transformer import GraphTransformerModel
from gnn_transformer.generation import GrowingSeq2SeqGraph, RecomputedSeq2SeqGraph, beam_search, greedy
from gnn_transformer.testing import torch_reference_mode
from gnn_transformer.testing.dense_decoding import DenseSeq2SeqDecoding

PATHS = {
    "growing graph (cache)": lambda model, sources: GrowingSeq2SeqGraph(model, sources, bos=0),
    "recomputed graph": lambda model, sources: RecomputedSeq2SeqGraph(model, sources, bos=0),
    "torch.nn.Transformer, recomputed": lambda model, sources: DenseSeq2SeqDecoding(model, sources, bos=0),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--source-length", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GraphTransformerModel(100, d_model=args.d_model, nhead=4, num_encoder_layers=args.layers,
                                  num_decoder_layers=args.layers, dim_feedforward=4 * args.d_model, dropout=0.0).eval()
    sources = [torch.randint(2, 100, (args.source_length,)) for _ in range(args.sources)]
    searches = {"greedy": lambda scorer: greedy(scorer, max_new_tokens=args.tokens),
                f"beam {args.beam_size}": lambda scorer: beam_search(scorer, max_new_tokens=args.tokens,
                                                                   beam_size=args.beam_size, length_penalty=0.6)}
    print(f"d_model {args.d_model}, {args.layers} + {args.layers} layers, {args.sources} sources of "
          f"{args.source_length} tokens, {args.tokens} new tokens each, {args.threads} thread(s), "
          f"median of {args.repeats}\n")
    print(f"{'search':8}  {'path':34}  {'seconds':>8}  {'ms/token':>8}  {'x growing':>9}")
    for search_name, search in searches.items():
        baseline, reference_tokens = None, None
        for path_name, make in PATHS.items():
            times = []
            for _ in range(args.repeats):
                scorer = make(model, sources)
                start = time.perf_counter()
                with torch_reference_mode(), torch.no_grad():
                    out = search(scorer)
                times.append(time.perf_counter() - start)
            tokens = [h.tokens.tolist() for h in out]
            if reference_tokens is None:
                reference_tokens = tokens
            elif tokens != reference_tokens:
                print(f"  ({path_name} decoded other tokens than the growing graph)")
            seconds = statistics.median(times)
            baseline = baseline or seconds
            per_token = 1000 * seconds / (args.sources * args.tokens)
            print(f"{search_name:8}  {path_name:34}  {seconds:8.2f}  {per_token:8.2f}  {seconds / baseline:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
