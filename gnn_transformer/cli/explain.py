"""``gnn-transformer explain``: print every stage of one forward pass of a small Transformer,
in the order of the paper, with shapes and values: embeddings and positional encodings, per
head the projections q, k, v, per edge the score, weight and message, per node the aggregation,
add & norm, the feed-forward network, the decoder's causal and cross edges, logits and
probabilities.  By default the seeded demo model (d_model 8, 2 heads, 2+2 layers, untrained)
reads "the cat sat" and is fed "<s> le chat"; ``--checkpoint`` explains a model trained with
``gnn-transformer train`` instead (a seq2seq task, or charlm on a text); ``--hf DIR`` a Hugging Face
GPT-2, BERT, BART or T5 written by ``save_pretrained`` (``--source``: text for its saved tokenizer,
else token ids separated by spaces; ``--token-types`` for BERT's segments)."""
from __future__ import annotations

import argparse

from ..tasks.demo import DEMO_SOURCE, DEMO_TARGET, DemoConfig
from .options import non_negative_int, output_file, positive_int

_DEFAULTS = DemoConfig()


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain", help="print every stage of one forward pass with its numbers (or write it as a page)",
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--source", default=None,
                        help=f"source words, separated by spaces (demo: '{' '.join(DEMO_SOURCE)}'; checkpoint: a "
                             "held-out sentence); for a charlm checkpoint the text it reads (default: held-out text)")
    parser.add_argument("--target", default=None,
                        help="target words the decoder is fed, starting with <s>; when not given: "
                             f"'{' '.join(DEMO_TARGET)}' for the demo, '<s>' for a checkpoint")
    parser.add_argument("--layers", type=non_negative_int, default=2, help="layers of each stack shown in full")
    parser.add_argument("--digits", type=non_negative_int, default=3, help="digits after the decimal point")
    parser.add_argument("--max-features", dest="max_features", type=positive_int, default=16,
                        help="longer vectors show their first values and an ellipsis")
    parser.add_argument("--html", metavar="FILE", type=output_file, default=None, help="also write the explanation as an HTML page")
    parser.add_argument("--quiet", action="store_true", help="with --html: do not print the text")
    demo = parser.add_argument_group("demo model sizes (ignored with --checkpoint)")
    demo.add_argument("--d-model", dest="d_model", type=positive_int, default=_DEFAULTS.d_model)
    demo.add_argument("--nhead", type=positive_int, default=_DEFAULTS.nhead)
    demo.add_argument("--num-layers", dest="num_layers", type=positive_int, default=_DEFAULTS.num_encoder_layers,
                      help="layers of each stack")
    demo.add_argument("--dim-feedforward", dest="dim_feedforward", type=positive_int, default=_DEFAULTS.dim_feedforward)
    demo.add_argument("--seed", type=non_negative_int, default=_DEFAULTS.seed, help="seed of the demo's weights")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", metavar="DIR", default=None,
                       help="a run folder of 'gnn-transformer train' (or its checkpoint folder)")
    model.add_argument("--hf", metavar="DIR", default=None,
                       help="a Hugging Face GPT-2, BERT, BART or T5 folder written by save_pretrained")
    parser.add_argument("--token-types", dest="token_types", metavar="IDS", default=None,
                        help="with --hf (BERT): the segment of every source token, e.g. '0 0 1 1'")
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
    from ..tasks.demo import demo_model

    sizes = dict(d_model=args.d_model, nhead=args.nhead, dim_feedforward=args.dim_feedforward)
    if args.d_model % args.nhead:
        raise SystemExit(f"gnn-transformer explain: --d-model ({args.d_model}) must be divisible by --nhead "
                         f"({args.nhead})")
    config = DemoConfig(num_encoder_layers=args.num_layers, num_decoder_layers=args.num_layers, seed=args.seed,
                        **sizes)
    return demo_model(config)


def _seq2seq(model, vocabularies, args, default_source: str, default_target: str):
    """The batch of one sentence pair from --source/--target (words of the two vocabularies)."""
    import torch

    from ..graphs.batching import seq2seq_batch

    source = _words(args.source if args.source is not None else default_source, vocabularies[0], "--source")
    target = _words(args.target if args.target is not None else default_target, vocabularies[1], "--target")
    batch = seq2seq_batch([torch.tensor(vocabularies[0].encode(source))],
                          [torch.tensor(vocabularies[1].encode(target))])
    return model, batch, vocabularies


def _trained(args):
    """A model of ``gnn-transformer train`` and its input: a sentence pair, or a text for charlm."""
    from ..tasks.runs import load_run
    from ..tasks.text import visible_vocabulary

    run = load_run(args.checkpoint)
    if run.is_seq2seq:
        vocabularies = (run.task.src_vocab, run.task.tgt_vocab)
        default_source = " ".join(vocabularies[0].decode(run.held_out_example()))
        return _seq2seq(run.model, vocabularies, args, default_source, "<s>")
    if args.target is not None:
        raise ValueError("a charlm model reads one text: give it with --source, without --target")
    text = run.held_out_example(12) if args.source is None else args.source
    return run.model, run.language_model_data(text), visible_vocabulary(run.vocabulary)


def _demo_input(args):
    model, vocabulary = _demo(args)
    return _seq2seq(model, (vocabulary, vocabulary), args, " ".join(DEMO_SOURCE), " ".join(DEMO_TARGET))


def _token_types(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(word) for word in text.split()]
    except ValueError:
        raise ValueError(f"--token-types {text!r}: give one integer segment per token, e.g. '0 0 1 1'") from None


def run(args: argparse.Namespace) -> int:
    from ..explain import explain

    options = dict(layers=args.layers, digits=args.digits, max_features=args.max_features)
    try:
        if args.hf is not None:
            if not args.source:
                raise ValueError("--hf needs --source: the text (or token ids) the model reads")
            explanation = explain(hf=args.hf, source=args.source, target=args.target,
                                  token_types=_token_types(args.token_types), **options)
        else:
            if args.token_types is not None:
                raise ValueError("--token-types goes with --hf (a BERT's segments)")
            model, batch, vocabulary = _trained(args) if args.checkpoint else _demo_input(args)
            explanation = explain(model, batch, vocabulary=vocabulary, **options)
    except (FileNotFoundError, ValueError, TypeError) as error:
        raise SystemExit(f"gnn-transformer explain: {error}") from None
    if not (args.quiet and args.html):
        print(explanation.text(), end="")
    if args.html:
        path = explanation.save_html(args.html)
        print(f"wrote {path} ({len(explanation.stages)} stages)")
    return 0
