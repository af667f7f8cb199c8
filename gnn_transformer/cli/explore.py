"""``gnn-transformer explore --out page.html``: one self-contained page of a model's token graphs.

Shows the attention of every kind (encoder self, decoder self, cross), layer and head of one
model run as weighted edges between tokens, beside the dense matrix; hover an edge for its
score and weight.  The page opens offline (everything is inline).  Without options: the
demo model (``--source``/``--target`` words of its vocabulary); ``--pattern NAME``: a small
encoder on the edges of a pattern of ``gnn-transformer graph`` (same options);
``--checkpoint DIR``: a model trained by ``gnn-transformer train`` on one held-out sentence;
``--hf DIR``: a Hugging Face GPT-2, BERT, BART or T5 written by ``save_pretrained`` (``--source``:
text for its saved tokenizer, else token ids separated by spaces).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .graph import PATTERNS, add_pattern_options, pattern_arguments
from .options import output_file


def page_file(text: str) -> Path:
    """``--out`` of ``explore``: a writable file path ending in .html."""
    path = Path(output_file(text))
    if path.suffix.lower() not in (".html", ".htm"):
        raise argparse.ArgumentTypeError(f"the page must end in .html, got {path.name!r}")
    return path


def run_folder(text: str) -> Path:
    """``--checkpoint`` of ``explore``: a folder that exists (what is in it is checked when it is loaded)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no folder {text!r}" if not path.exists() else f"{text!r} is not a folder")
    return path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "explore", help="write an HTML page of a model's attention as token graphs (hover for the numbers)",
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=page_file, default=Path("explorer.html"), help="the page to write (.html)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--pattern", metavar="NAME", choices=PATTERNS,
                       help=f"a pattern's edges: one of {', '.join(PATTERNS)}")
    group.add_argument("--checkpoint", metavar="DIR", type=run_folder,
                       help="a run folder of 'gnn-transformer train' (copy, reverse, sort, translate, charlm)")
    group.add_argument("--hf", metavar="DIR", type=Path,
                       help="a Hugging Face GPT-2, BERT, BART or T5 folder written by save_pretrained")
    parser.add_argument("--source", metavar="TEXT",
                        help="source words, e.g. 'the cat sat' (demo model, seq2seq checkpoint); the text a charlm "
                             "checkpoint reads")
    parser.add_argument("--target", metavar="TEXT",
                        help="the words the decoder is fed, starting with <s>, e.g. '<s> le chat' (default: the "
                             "demo's; for a checkpoint its own greedy translation)")
    parser.add_argument("--title", help="the page's heading")
    add_pattern_options(parser.add_argument_group("pattern options (with --pattern, as in 'gnn-transformer graph')"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..explorer import explore

    if args.pattern is not None and (args.source or args.target):
        raise SystemExit("gnn-transformer explore: --source/--target name words of a model; a pattern's tokens "
                         "are t0 .. tN")
    options = pattern_arguments(args) if args.pattern is not None else {}  # checked: only the pattern's own
    try:
        if args.hf is not None:
            if not args.source:
                raise ValueError("--hf needs --source: the text (or token ids) the model reads")
            explorer = explore(hf=args.hf, source=args.source, target=args.target, title=args.title)
        else:
            explorer = explore(pattern=args.pattern, checkpoint=args.checkpoint, source=args.source,
                               target=args.target, title=args.title, pattern_options=options)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise SystemExit(f"gnn-transformer explore: {error}") from None
    path = explorer.save(args.out)
    views = explorer.data["views"]
    print(f"wrote {path}: {explorer.data['title']}; {len(views)} attention views "
          f"({', '.join(kind['label'] for kind in explorer.data['kinds'])}); open it in a browser")
    return 0
