"""The ponder picture of a trained model with adaptive computation time: steps per token.

:func:`draw_ponder_map` decodes held-out sources greedily, feeds the decoder ``<s>`` and its own
output (as in decoding), and draws ``model.ponder_steps`` (:mod:`gnn_transformer.core.interface`):
one row per example, one cell per token, the number of steps it took written in the cell; source
tokens (encoder) on the left, target tokens (decoder, each on the node that predicted it) on the right.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..generation import generate
from ..graphs import seq2seq_batch

__all__ = ["ponder_rows", "draw_ponder_map"]


@torch.no_grad()
def ponder_rows(model, task, pairs) -> list[dict]:
    """Per source: its symbols, the greedy output's symbols and the steps of every source and target node."""
    vocab = task.tgt_vocab
    rows = []
    for source, _ in pairs:
        tokens = generate(model, [torch.tensor(source)], strategy="greedy", bos=vocab.bos, eos=vocab.eos,
                          max_new_tokens=task.max_target_length + 2)[0].tokens.tolist()
        fed = [vocab.bos, *tokens[:-1]]  # node k is fed the tokens before tokens[k], and predicted it
        steps = model.ponder_steps(seq2seq_batch([torch.tensor(source)], [torch.tensor(fed)]))
        rows.append({"source": task.src_vocab.decode(source, strip_end=False),
                     "output": vocab.decode(tokens, strip_end=False), "source_steps": steps["source"].tolist(),
                     "target_steps": steps["target"].tolist(), "max_steps": steps["max_steps"]})
    return rows


def draw_ponder_map(model, task, pairs, path: str | Path, title: str = "") -> Path:
    """Draw the ponder map of ``pairs`` (held-out (source, target) ids) decoded by ``model``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..analysis.viz import save

    was_training = model.training
    try:
        rows = ponder_rows(model.eval(), task, pairs)
    finally:
        model.train(was_training)
    max_steps = rows[0]["max_steps"]
    width = max(len(r["source"]) for r in rows), max(len(r["output"]) for r in rows)
    figure, axes = plt.subplots(1, 2, figsize=(0.42 * (width[0] + width[1]) + 2.5, 0.5 * len(rows) + 1.4),
                                gridspec_kw={"width_ratios": list(width)})
    for ax, side, labels, span in ((axes[0], "source_steps", "source", width[0]),
                                   (axes[1], "target_steps", "output", width[1])):
        grid = torch.full((len(rows), span), float("nan"))
        for r, row in enumerate(rows):
            grid[r, : len(row[side])] = torch.tensor(row[side], dtype=torch.float)
            for c, (symbol, steps) in enumerate(zip(row[labels], row[side])):
                ax.text(c, r - 0.13, symbol, ha="center", va="center", fontsize=9, weight="bold",
                        color="white" if steps > 0.6 * max_steps else "black")
                ax.text(c, r + 0.25, str(steps), ha="center", va="center", fontsize=7,
                        color="white" if steps > 0.6 * max_steps else "dimgray")
        image = ax.imshow(grid.numpy(), cmap="Blues", vmin=0, vmax=max_steps, aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("source tokens (encoder nodes)" if side == "source_steps" else
                     "output tokens (decoder nodes that predicted them)", fontsize=10)
    figure.colorbar(image, ax=list(axes), label=f"ACT steps (at most {max_steps})", shrink=0.8,
                    ticks=list(range(max_steps + 1)))
    if title:
        figure.suptitle(title, fontsize=11)
    return save(figure, path, dpi=90)
