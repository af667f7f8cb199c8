"""``gnn-transformer train TASK``: train a graph Transformer on a task whose data is generated
(copy, reverse, sort, addition, translate) or ships with Python (charlm), then report exact-match
accuracy with greedy and beam decoding on held-out data (or, for charlm, the held-out
loss and a sample).  ``--distributed`` runs under ``torchrun`` with DistributedDataParallel;
``--context-parallel C`` splits every sequence's nodes over C processes (attention across them
through the distributed backend): under ``torchrun`` the processes form a grid of
world size / C data-parallel replicas x C, without it the command starts C processes on
this machine itself (gloo on CPU)."""
from __future__ import annotations

import argparse
import os

import torch

from .options import (device, fraction, halting_threshold, non_negative_int, output_folder, positive_float,
                      positive_int, probability)

TASKS = ("copy", "reverse", "sort", "addition", "translate", "charlm")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train on copy/reverse/sort/addition/translate/charlm and report held-out accuracy",
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Defaults of the model and run flags come from the task's preset "
               "(gnn_transformer.tasks.runs.PRESETS).  Distributed: torchrun --nproc-per-node 2 "
               "-m gnn_transformer train copy --distributed",
    )
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--steps", type=positive_int, help="optimizer steps")
    parser.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    parser.add_argument("--distributed", action="store_true", help="DistributedDataParallel under torchrun")
    parser.add_argument("--context-parallel", dest="context_parallel", type=positive_int, default=1,
                        help="processes that split each sequence (x data-parallel replicas under torchrun; "
                             "without torchrun this many processes are started here); attention dropout off")
    parser.add_argument("--context-strategy", dest="context_strategy", choices=("halo", "ring", "head"),
                        default="halo", help="how attention reaches keys and values on other processes")
    parser.add_argument("--batch-size", dest="batch_size", type=positive_int, help="examples per (global) batch")
    parser.add_argument("--d-model", dest="d_model", type=positive_int)
    parser.add_argument("--nhead", type=positive_int)
    parser.add_argument("--num-layers", dest="num_layers", type=positive_int, help="layers of each stack")
    parser.add_argument("--dim-feedforward", dest="dim_feedforward", type=positive_int)
    parser.add_argument("--dropout", type=probability)
    parser.add_argument("--architecture", choices=("transformer", "universal"),
                        help="seq2seq tasks: the paper's Transformer, or the Universal Transformer with ACT "
                             "(its preset: tasks.runs.UNIVERSAL_PRESET)")
    parser.add_argument("--num-steps", dest="num_steps", type=positive_int,
                        help="universal: steps of the shared layers (ACT's maximum)")
    parser.add_argument("--act-threshold", dest="act_threshold", type=halting_threshold,
                        help="universal: ACT's halting threshold, in (0, 1]")
    parser.add_argument("--ponder-penalty", dest="ponder_penalty", type=positive_float,
                        help="universal: weight of the ponder cost in the loss")
    parser.add_argument("--warmup", type=positive_int, help="warm-up steps of the learning-rate schedule")
    parser.add_argument("--lr-factor", dest="lr_factor", type=positive_float, help="multiplier of the paper's schedule")
    parser.add_argument("--cooldown", type=fraction,
                        help="share of the steps, at the end, over which the learning rate falls linearly "
                             "towards 0 (0: the paper's schedule throughout)")
    parser.add_argument("--label-smoothing", dest="label_smoothing", type=probability)
    parser.add_argument("--num-train", dest="num_train", type=positive_int, help="seq2seq tasks: training pairs")
    parser.add_argument("--num-test", dest="num_test", type=positive_int, help="seq2seq tasks: held-out pairs")
    parser.add_argument("--beam-size", dest="beam_size", type=positive_int, default=4)
    parser.add_argument("--checkpoint-every", dest="checkpoint_every", type=positive_int, default=500)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest")
    parser.add_argument("--out", type=output_folder, default=None, help="run folder (default: runs/TASK)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads per process (default: torch's choice); 1 is fastest for small "
                             "models and on busy machines")
    parser.add_argument("--prompt", default="The ", help="charlm: the sample's prompt")
    parser.add_argument("--sample-length", dest="sample_length", type=positive_int, default=None,
                        help="charlm: characters to sample (default: up to the trained sequence length)")
    parser.add_argument("--sequence-length", dest="sequence_length", type=positive_int,
                        help="charlm: characters per sequence")
    parser.add_argument("--attention-window", dest="attention_window", type=positive_int,
                        help="charlm: characters each character attends to (sliding-window causal graph)")
    parser.add_argument("--no-plot", dest="no_plot", action="store_true", help="translate: no alignment picture; universal: no ponder picture")
    parser.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.context_parallel > 1:
        if args.dropout not in (None, 0.0):  # the distributed backend computes attention without dropout
            raise SystemExit(f"argument --dropout: --context-parallel trains without dropout, got {args.dropout:g}")
        args.dropout = 0.0
        if "RANK" not in os.environ:  # not under torchrun: start the processes here
            from ..training.distributed import spawn_local

            spawn_local(_process, args.context_parallel, (args,))
            return 0
    return _process(args)


def _process(args: argparse.Namespace) -> int:
    """One process of the run (the only one, or one of those torchrun or ``run`` started)."""
    from ..tasks.runs import run_charlm, run_seq2seq

    if args.context_parallel > 1:
        args.distributed = True
    args.out = args.out or f"runs/{args.task}"
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or threads)
    try:
        (run_charlm if args.task == "charlm" else run_seq2seq)(args, log=print)
    finally:
        torch.set_num_threads(threads)
    return 0
