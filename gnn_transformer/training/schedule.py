r"""The learning-rate schedule of "Attention Is All You Need" (arXiv:1706.03762, section 5.3).

.. math::

    lrate = \text{factor} \cdot d_\text{model}^{-0.5} \cdot
            \min(\text{step}^{-0.5},\ \text{step} \cdot \text{warmup\_steps}^{-1.5})

"This corresponds to increasing the learning rate linearly for the first warmup_steps
training steps, and decreasing it thereafter proportionally to the inverse square root of
the step number. We used warmup_steps = 4000."  The schedule is a pure function of the
step, so resuming a run needs nothing but the step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["WarmupInverseSqrt", "transformer_lr"]


def transformer_lr(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The paper's learning rate at ``step`` (counted from 1)."""
    if step < 1:
        raise ValueError(f"the schedule counts steps from 1, got step={step}")
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


@dataclass(frozen=True)
class WarmupInverseSqrt:
    """The paper's schedule as an object: ``schedule(step)`` and ``schedule.apply(optimizer, step)``.

    Args:
        d_model: the model width (sets the peak together with ``warmup``).
        warmup: steps of linear warm-up (the paper: 4000).
        factor: a constant multiplier (the paper: 1).
    """

    d_model: int
    warmup: int = 4000
    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.d_model < 1 or self.warmup < 1 or not self.factor > 0:
            raise ValueError(f"d_model and warmup must be positive integers and factor > 0, got {self}")

    def __call__(self, step: int) -> float:
        return transformer_lr(step, self.d_model, self.warmup, self.factor)

    @property
    def peak(self) -> float:
        """The largest learning rate, reached at ``step == warmup``."""
        return self(self.warmup)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's learning rate for ``step``; returns it."""
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
