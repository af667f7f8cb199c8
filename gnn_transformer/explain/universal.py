"""The ponder map of a model whose nodes take their own number of steps (adaptive computation time).

A Universal Transformer (``model.ponder_steps``, :mod:`gnn_transformer.core.interface`) applies
one encoder layer and one decoder layer T times with shared weights; :func:`trace_stages` shows
each shared layer at its last step, and after each stack the stage here: per node the steps it
took and its halting probability at every step.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from ..analysis.recording import Recording
from .document import Stage, Table

__all__ = ["ponder_stage", "ponder_stages"]

_STACKS = (("encoder", "source"), ("decoder", "target"))  # (stack key and module name, side of its tokens)


def ponder_stage(key: str, title: str, labels: Sequence[str], steps: Tensor, halting: list[Tensor],
                 max_steps: int) -> Stage:
    """The ponder map of one side: per node the steps it took and its halting probability at every step.

    Shapes: steps (N,); halting: one (N,) per step run.
    """
    columns = ["i", "token", "steps", *[f"p{t + 1}" for t in range(len(halting))]]
    rows = [[node, label, int(steps[node]), *[float(p[node]) for p in halting]] for node, label in enumerate(labels)]
    return Stage(
        key, title, "N_i = min{t : p_i^1 + ... + p_i^t ≥ threshold} (at most T),   y_i = Σ_{t<N_i} p_i^t h_i^t + R_i h_i^N_i",
        "Adaptive computation time: after each step every node computes its halting probability p = σ(w·h + b) "
        "and stops once the sum reaches the threshold (or at the last step); its output is the weighted sum of "
        "its states, the last with the remainder R. A node that has halted keeps its state and keeps sending "
        f"messages to the nodes still running. At most {max_steps} steps; the halting probabilities after a "
        "node halted are computed but not used. The layers above show the shared layer at its last step.",
        [f"steps: (N,) = ({len(labels)},)"],
        [Table("ponder map: steps per node, halting probability per step", columns, rows)])


def ponder_stages(recording: Recording, ponder: dict, sides: dict) -> dict[str, list[Stage]]:
    """The ponder map stage of each stack, by stack key; ``ponder`` is ``model.ponder_steps(batch)``,
    ``sides`` the :class:`~gnn_transformer.explain.trace.Side` of each side's tokens."""
    stages = {}
    for stack, side in _STACKS:
        halting = [call.output for call in recording.calls_of(f"{stack}.halting")]  # one (N,) per step, or none
        title = f"{stack.capitalize()} ponder map: the steps each token took"
        stages[stack] = [ponder_stage(f"{stack}.ponder", title, sides[side].labels, ponder[side], halting,
                                      ponder["max_steps"])]
    return stages
