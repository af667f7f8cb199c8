r"""Adaptive computation time per node (Graves, arXiv:1603.08983), as the Universal Transformer uses it.

Every node :math:`i` decides after each step :math:`t` how much of its remaining budget of 1 it
spends on that step's state :math:`h_i^t`, from its own halting probability
:math:`p_i^t = \sigma(w^\top h_i^t + b)`:

.. math::

    N_i = \min\Big\{t : \sum_{t' \le t} p_i^{t'} \ge \text{threshold}\Big\} \wedge T, \qquad
    R_i = 1 - \sum_{t < N_i} p_i^t, \qquad
    y_i = \sum_{t < N_i} p_i^t\, h_i^t + R_i\, h_i^{N_i}

and pays the ponder cost :math:`\rho_i = N_i + R_i` (added to the loss with a weight
:math:`\tau`).  Graves' threshold is :math:`1 - \epsilon`; here it is any value in (0, 1].

In the graph view halting is a per-node operation: a node that has halted keeps its state
:math:`h_i^{N_i}` and keeps sending messages along its out-edges, so the nodes still running
attend to it as before; its own later updates are discarded.  Every node is computed at every
step and the updates are masked (no host synchronisation, no data-dependent shapes), so the
result depends only on each node's own halting decisions: decoding on a growing graph equals
recomputation.

:func:`act_step` is the bookkeeping of one step, pure and per node; :class:`HaltingUnit` the
halting probability; :class:`PonderResult` what a run returns per node.

Shapes: N nodes; p, cumulative, running, steps, remainder (N,); states (N, d_model).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["HaltingError", "HaltingUnit", "ACTState", "PonderResult", "act_step", "check_threshold"]


class HaltingError(ValueError):
    """Adaptive computation time configured wrongly: a halting threshold outside (0, 1], or ACT asked of
    a model built without a halting unit.  torch has no counterpart (so, by the rule of
    :mod:`gnn_transformer.errors`, a plain ``ValueError``)."""


def check_threshold(threshold: float) -> float:
    """The halting threshold must lie in (0, 1]; raises :class:`HaltingError`."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise HaltingError(f"act_threshold must lie in (0, 1] (Graves' 1 - epsilon; 0.99 is usual), got {threshold!r}")
    return float(threshold)


class HaltingUnit(nn.Module):
    r"""The halting probability of every node: :math:`p_i = \sigma(w^\top h_i + b)`.

    ``bias_init`` sets :math:`b` at initialisation (1.0, as the Universal Transformer's reference
    implementation: a node first halts after about two steps).

    Shapes: h (N, d_model) -> p (N,).
    """

    def __init__(self, d_model: int, bias_init: float = 1.0, device=None, dtype=None) -> None:
        super().__init__()
        self.bias_init = bias_init
        self.linear = nn.Linear(d_model, 1, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()
        nn.init.constant_(self.linear.bias, self.bias_init)

    def forward(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.linear(h)).squeeze(-1)  # (N,)


@dataclass
class ACTState:
    """The running bookkeeping of ACT over the nodes of one stack.

    Attributes:
        cumulative: (N,) :math:`\\sum p` of the steps taken so far.
        running: (N,) bool, the node has not halted.
        steps: (N,) long, steps taken (:math:`N_i` once halted).
        remainder: (N,) :math:`R_i` once halted, 0 before.
        output: (N, d_model) the weighted sum :math:`y_i` so far.
        state: (N, d_model) what each node sends and continues from: its latest state while
            running, its last state once halted.
    """

    cumulative: Tensor
    running: Tensor
    steps: Tensor
    remainder: Tensor
    output: Tensor
    state: Tensor

    @classmethod
    def start(cls, x: Tensor) -> "ACTState":
        n = x.size(0)
        zeros = x.new_zeros(n)  # (N,)
        return cls(zeros, torch.ones(n, dtype=torch.bool, device=x.device), torch.zeros(n, dtype=torch.long,
                   device=x.device), zeros, torch.zeros_like(x), x)


def act_step(act: ACTState, p: Tensor, new_state: Tensor, threshold: float, last: bool) -> ACTState:
    r"""One step of ACT for every node: spend :math:`p_i` (or the remainder when the node halts now).

    A running node halts at this step when :math:`\sum_{t' \le t} p^{t'} \ge` ``threshold`` or when
    this is the ``last`` step; its weight is then the remainder :math:`R_i = 1 - \sum_{t' < t} p^{t'}`.
    Halted nodes keep everything (weight 0, state unchanged).

    Shapes: p (N,); new_state (N, d_model).
    """
    running = act.running
    total = act.cumulative + p  # (N,)
    halts = running & (total >= threshold) if not last else running  # (N,) halting at this step
    remainder = 1.0 - act.cumulative  # (N,)
    weight = torch.where(halts, remainder, torch.where(running, p, torch.zeros_like(p)))  # (N,)
    output = act.output + weight.unsqueeze(-1) * new_state  # (N, d_model)
    state = torch.where(running.unsqueeze(-1), new_state, act.state)  # (N, d_model)
    return ACTState(
        cumulative=torch.where(running & ~halts, total, act.cumulative),
        running=running & ~halts,
        steps=act.steps + running.long(),
        remainder=torch.where(halts, remainder, act.remainder),
        output=output,
        state=state,
    )


@dataclass
class PonderResult:
    r"""What ACT returns for the nodes of one stack.

    Attributes:
        steps: (N,) long, the steps :math:`N_i` each node took.
        remainder: (N,) :math:`R_i`.
    """

    steps: Tensor
    remainder: Tensor

    @property
    def cost(self) -> Tensor:
        r"""The ponder cost :math:`\rho_i = N_i + R_i` of every node, (N,) (differentiable through :math:`R_i`)."""
        return self.steps.to(self.remainder.dtype) + self.remainder
