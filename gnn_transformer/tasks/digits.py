"""Copy, reverse and sort digit sequences of variable length."""
from __future__ import annotations

import random

from .base import Seq2SeqTask, Vocabulary

__all__ = ["DigitTask"]

DIGITS = [str(d) for d in range(10)]
TRANSFORMS = {"copy": lambda s: list(s), "reverse": lambda s: s[::-1], "sort": sorted}


class DigitTask(Seq2SeqTask):
    """Sources are ``min_length`` to ``max_length`` random digits; targets their copy, reversal or sort.

    Training leaves out the lengths ``left_out_lengths`` (inside the range), the held-out
    data has every length.
    """

    def __init__(self, name: str, min_length: int = 1, max_length: int = 12,
                 left_out_lengths: tuple[int, ...] = (6, 9)) -> None:
        if name not in TRANSFORMS:
            raise ValueError(f"unknown digit task {name!r}; choose from {sorted(TRANSFORMS)}")
        self.name, self.transform = name, TRANSFORMS[name]
        self.min_length, self.max_length, self.left_out_lengths = min_length, max_length, tuple(left_out_lengths)
        self.src_vocab = self.tgt_vocab = Vocabulary(DIGITS)

    def sample(self, rng: random.Random) -> tuple[list[str], list[str]]:
        source = [rng.choice(DIGITS) for _ in range(rng.randint(self.min_length, self.max_length))]
        return source, self.transform(source)

    def longer(self, extra: int = 4) -> "DigitTask":
        """The same task on ``max_length + 1`` to ``max_length + extra`` digits: lengths never trained on."""
        return DigitTask(self.name, self.max_length + 1, self.max_length + extra, left_out_lengths=())

    @property
    def max_target_length(self) -> int:
        return self.max_length
