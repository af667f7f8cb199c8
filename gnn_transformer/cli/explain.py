"""``gnn-transformer explain``: print every stage of one forward pass of a small Transformer,
in the order of the paper, with shapes and values: embeddings and positional encodings, per
head the projections q, k, v, per edge the score, weight and message, per node the aggregation,
add & norm, the feed-forward network, the decoder's causal and cross edges, logits and
probabilities.  By default the seeded demo model (d_model 8, 2 heads, 2+2 layers, untrained)
reads "the cat sat" and is fed "<s> le chat"; ``--checkpoint`` explains a model trained with
``gnn-transformer train`` (a seq2seq task) instead."""
from __future__ import annotations

import argparse

from ..demo import DEMO_SOURCE, DEMO_TARGET, DemoConfig

_DEFAULTS = DemoConfig()


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain", help="print every stage of one forward pass with its numbers (or write it as a page)",
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--source", default=" ".join(DEMO_SOURCE), help="source words, separated by spaces")
    parser.add_argument("--target", default=None,
                        help="target words the decoder is fed, starting with <s>; when not given: "
                             f"'{' '.join(DEMO_TARGET)}' for the demo, '<s>' for a checkpoint")
    parser.add_argument("--layers", type=int, default=2, help="layers of each stack shown in full")
    parser.add_argument("--digits", type=int, default=3, help="digits after the decimal point")
    parser.add_argument("--max-features", dest="max_features", type=int, default=16,
                        help="longer vectors show their first values and an ellipsis")
    parser.add_argument("--html", metavar="FILE", default=None, help="also write the explanation as an HTML page")
    parser.add_argument("--quiet", action="store_true", help="with --html: do not print the text")
    demo = parser.add_argument_group("demo model sizes (ignored with --checkpoint)")
    demo.add_argument("--d-model", dest="d_model", type=int, default=_DEFAULTS.d_model)
    demo.add_argument("--nhead", type=int, default=_DEFAULTS.nhead)
    demo.add_argument("--num-layers", dest="num_layers", type=int, default=_DEFAULTS.num_encoder_layers,
                      help="layers of each stack")
    demo.add_argument("--dim-feedforward", dest="dim_feedforward", type=int, default=_DEFAULTS.dim_feedforward)
    demo.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="seed of the demo's weights")
    parser.add_argument("--checkpoint", metavar="DIR", default=None,
                        help="a run folder of 'gnn-transformer train' (or its checkpoint folder) of a seq2seq task")
    parser.set_defaults(func=run)


def _words(text: str, vocabulary, flag: str) -> list[str]:
    words = text.split()
    if not words:
        raise SystemExit(f"gnn-transformer explain: {flag} needs at least one word")
    unknown = [word for word in words if word not in vocabulary.index]
    if unknown:
        raise SystemExit(f"gnn-transformer explain: {flag} has words not in the vocabulary: {unknown}; "
                         f"the vocabulary: {' '.join(vocabulary.symbols)}")
    return words


def _demo(args):
    from ..demo import demo_model

    sizes = dict(d_model=args.d_model, nhead=args.nhead, dim_feedforward=args.dim_feedforward)
    bad = {name: value for name, value in {**sizes, "num_layers": args.num_layers}.items() if value < 1}
    if bad:
        raise SystemExit(f"gnn-transformer explain: model sizes must be positive, got {bad}")
    if args.d_model % args.nhead:
        raise SystemExit(f"gnn-transformer explain: --d-model ({args.d_model}) must be divisible by --nhead "
                         f"({args.nhead})")
    config = DemoConfig(num_encoder_layers=args.num_layers, num_decoder_layers=args.num_layers, seed=args.seed,
                        **sizes)
    model, vocabulary = demo_model(config)
    return model, vocabulary, vocabulary, " ".join(DEMO_TARGET)


def _trained(args):
    from ..tasks.runs import load_seq2seq_run

    try:
        run = load_seq2seq_run(args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"gnn-transformer explain: {error}") from None
    return run.model, run.task.src_vocab, run.task.tgt_vocab, "<s>"


def run(args: argparse.Namespace) -> int:
    import torch

    from ..batching import seq2seq_batch
    from ..explain import explain

    model, source_vocabulary, target_vocabulary, default_target = _trained(args) if args.checkpoint else _demo(args)
    source = _words(args.source, source_vocabulary, "--source")
    target = _words(args.target if args.target is not None else default_target, target_vocabulary, "--target")
    batch = seq2seq_batch([torch.tensor(source_vocabulary.encode(source))],
                          [torch.tensor(target_vocabulary.encode(target))])
    try:
        explanation = explain(model, batch, vocabulary=(source_vocabulary, target_vocabulary), layers=args.layers,
                              digits=args.digits, max_features=args.max_features)
    except ValueError as error:
        raise SystemExit(f"gnn-transformer explain: {error}") from None
    if not (args.quiet and args.html):
        print(explanation.text(), end="")
    if args.html:
        path = explanation.save_html(args.html)
        print(f"wrote {path} ({len(explanation.stages)} stages)")
    return 0
