"""Multi-digit addition, the algorithmic task of the Universal Transformer paper (arXiv:1807.03819, section 3.3).

A source is two decimal numbers joined by ``+`` (``4 7 + 1 2 8``), its target their sum
(``1 7 5``), most significant digit first.  Each number has ``min_digits`` to ``max_digits``
digits (no leading zeros); :meth:`AdditionTask.longer` gives numbers with more digits than any
trained, to measure length generalisation.
"""
from __future__ import annotations

import random

from .base import Seq2SeqTask, Vocabulary
from .digits import DIGITS

__all__ = ["AdditionTask"]


class AdditionTask(Seq2SeqTask):
    """Sources ``a + b`` of ``min_digits`` to ``max_digits`` digits each; targets the digits of ``a + b``."""

    name = "addition"

    def __init__(self, min_digits: int = 1, max_digits: int = 6) -> None:
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got min_digits={min_digits}, "
                             f"max_digits={max_digits}")
        self.min_digits, self.max_digits = min_digits, max_digits
        self.src_vocab, self.tgt_vocab = Vocabulary([*DIGITS, "+"]), Vocabulary(DIGITS)

    def _number(self, rng: random.Random) -> int:
        digits = rng.randint(self.min_digits, self.max_digits)
        return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)

    def sample(self, rng: random.Random) -> tuple[list[str], list[str]]:
        a, b = self._number(rng), self._number(rng)
        return [*str(a), "+", *str(b)], list(str(a + b))

    def longer(self, extra: int = 2) -> "AdditionTask":
        """The same task on numbers of ``max_digits + 1`` to ``max_digits + extra`` digits: none trained on."""
        return AdditionTask(self.max_digits + 1, self.max_digits + extra)

    @property
    def max_target_length(self) -> int:
        return self.max_digits + 1
