"""``gnn-transformer experiment NAME``: run one of the graph-view experiments, print its table, write its plots.

* ``complexity``: Table 1 of "Attention Is All You Need" counted on the graphs, over a
  range of sequence lengths (plot: operations, sequential operations and maximum path
  length against n).
* ``rank-collapse``: "Attention is Not All You Need" (arXiv:2103.03404): the relative
  distance from rank one after each layer of random attention stacks, with and without
  skip connections, MLPs and layer norm, on several graphs (plot: one panel per stack).
"""
from __future__ import annotations

import argparse

from .options import non_negative_int, output_folder, positive_int


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment", help="run a graph-view experiment (complexity, rank-collapse): table and plots",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    experiments = parser.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    defaults = argparse.ArgumentDefaultsHelpFormatter

    complexity = experiments.add_parser("complexity", help="Table 1 measured on the graphs", formatter_class=defaults)
    complexity.add_argument("--lengths", type=positive_int, nargs="+", default=[16, 32, 64, 128, 256, 512],
                            help="sequence lengths n")
    complexity.add_argument("--d-model", type=positive_int, default=64, help="width d")
    complexity.add_argument("--radius", type=non_negative_int, default=4, help="window radius r of restricted self-attention")
    complexity.add_argument("--kernel-size", type=positive_int, default=3, help="kernel width k of the convolutions")
    complexity.add_argument("--devices", type=positive_int, default=4,
                            help="P of the communication column (tokens split into P contiguous ranges)")
    complexity.set_defaults(func=run_complexity)

    collapse = experiments.add_parser("rank-collapse", help="rank collapse of attention stacks on several graphs",
                                      formatter_class=defaults)
    collapse.add_argument("--depth", type=positive_int, default=12, help="layers per stack")
    collapse.add_argument("--n", type=positive_int, default=32, help="tokens per sequence")
    collapse.add_argument("--sequences", type=positive_int, default=8, help="random sequences (results are their mean)")
    collapse.add_argument("--d-model", type=positive_int, default=64)
    collapse.add_argument("--nhead", type=positive_int, default=4)
    collapse.add_argument("--norm", choices=("frobenius", "l1,inf"), default="frobenius")
    collapse.add_argument("--radius", type=non_negative_int, default=2, help="radius of the window graph")
    collapse.add_argument("--num-random", type=non_negative_int, default=3, help="random keys per query of the random graph")
    collapse.add_argument("--seed", type=non_negative_int, default=0)
    collapse.set_defaults(func=run_rank_collapse)

    for sub in (complexity, collapse):
        sub.add_argument("--out", type=output_folder, help="folder for the plot and the table (.txt)")
        sub.add_argument("--formats", nargs="+", choices=("png", "svg"), default=["png", "svg"],
                         help="picture formats written to --out")
        sub.add_argument("--no-progress", action="store_true", help="no progress bar")


def _write(args: argparse.Namespace, name: str, table: str, figure_fn) -> None:
    out = args.out
    if out is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    from ..analysis import viz

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.txt").write_text(table + "\n")
    written = [out / f"{name}.txt"]
    for suffix in args.formats:
        written.append(viz.save(figure_fn(), out / f"{name}.{suffix}"))
    print("\nwrote " + ", ".join(str(path) for path in written))


def run_complexity(args: argparse.Namespace) -> int:
    from ..analysis import complexity_table, format_complexity_table, plot_complexity

    if min(args.lengths) < 2:
        raise SystemExit("gnn-transformer experiment complexity: every --lengths value must be at least 2")
    rows = complexity_table(args.lengths, args.d_model, radius=args.radius, kernel_size=args.kernel_size,
                            devices=args.devices, progress=not args.no_progress)
    table = format_complexity_table(rows, args.d_model)
    print(table)
    _write(args, "complexity", table, lambda: plot_complexity(rows))
    return 0


def run_rank_collapse(args: argparse.Namespace) -> int:
    from ..analysis import default_graphs, format_rank_collapse, plot_rank_collapse, rank_collapse

    if args.d_model % args.nhead:
        raise SystemExit(f"gnn-transformer experiment rank-collapse: --d-model {args.d_model} is not divisible "
                         f"by --nhead {args.nhead}")
    result = rank_collapse(default_graphs(args.radius, args.num_random, args.seed), depth=args.depth,
                           lengths=[args.n] * args.sequences, d_model=args.d_model, nhead=args.nhead, norm=args.norm,
                           seed=args.seed, progress=not args.no_progress)
    table = format_rank_collapse(result)
    print(table)
    _write(args, "rank_collapse", table, lambda: plot_rank_collapse(result))
    return 0
