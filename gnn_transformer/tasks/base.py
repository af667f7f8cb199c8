"""Vocabularies and the seq2seq task protocol: generated examples, a disjoint held-out split."""
from __future__ import annotations

from abc import ABC, abstractmethod
import random
import zlib
from typing import Sequence

__all__ = ["Vocabulary", "vocabulary_pair", "token_labels", "Seq2SeqTask", "BOS", "EOS"]

BOS, EOS = "<s>", "</s>"


class Vocabulary:
    """Symbols <-> token ids; id 0 is the start token ``<s>``, id 1 the end token ``</s>``."""

    def __init__(self, symbols: Sequence[str]) -> None:
        symbols = [BOS, EOS, *symbols]
        if len(set(symbols)) != len(symbols):
            raise ValueError("a vocabulary's symbols must be distinct (and not <s> or </s>)")
        self.symbols = symbols
        self.index = {symbol: i for i, symbol in enumerate(symbols)}

    bos, eos = 0, 1

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, symbols: Sequence[str]) -> list[int]:
        unknown = [s for s in symbols if s not in self.index]
        if unknown:
            raise ValueError(f"symbols not in the vocabulary: {unknown[:5]}")
        return [self.index[s] for s in symbols]

    def decode(self, ids: Sequence[int], strip_end: bool = True) -> list[str]:
        """Token ids -> symbols; with ``strip_end`` stops at the end token."""
        out = []
        for i in ids:
            i = int(i)
            if strip_end and i == self.eos:
                break
            out.append(self.symbols[i])
        return out



def vocabulary_pair(vocabulary) -> tuple[Vocabulary | None, Vocabulary | None]:
    """``None``, one :class:`Vocabulary` for both sides, or a (source, target) pair -> (source, target)."""
    if vocabulary is None or isinstance(vocabulary, Vocabulary):
        return vocabulary, vocabulary
    if isinstance(vocabulary, (tuple, list)) and len(vocabulary) == 2 and all(
            isinstance(v, Vocabulary) for v in vocabulary):
        return vocabulary[0], vocabulary[1]
    raise TypeError("vocabulary must be a Vocabulary, a (source, target) pair of them, or None (token ids are "
                    f"shown as numbers), got {type(vocabulary).__name__}")


def token_labels(ids: Sequence[int], vocabulary: Vocabulary | None, side: str) -> list[str]:
    """The symbol of every token id (its number without a vocabulary); ids the vocabulary lacks are named."""
    ids = [int(i) for i in ids]
    if vocabulary is None:
        return [str(i) for i in ids]
    outside = sorted({i for i in ids if not 0 <= i < len(vocabulary)})
    if outside:
        raise ValueError(f"the {side} tokens hold ids {outside} but the {side} vocabulary has only "
                         f"{len(vocabulary)} symbols; pass the vocabulary the model was trained with")
    return [vocabulary.symbols[i] for i in ids]


class Seq2SeqTask(ABC):
    """A task whose examples are generated: subclasses define the vocabularies and :meth:`sample`.

    The held-out split is decided by the source itself (a CRC32 hash), so no test source
    is ever a training source; training also leaves out the source lengths in
    ``left_out_lengths``, which the held-out data keeps.
    """

    name = "task"
    src_vocab: Vocabulary
    tgt_vocab: Vocabulary
    left_out_lengths: tuple[int, ...] = ()
    held_out_fraction = 5  # one source in this many is held out

    @abstractmethod
    def sample(self, rng: random.Random) -> tuple[list[str], list[str]]:
        """One (source, target) pair of symbols."""

    def is_held_out(self, source: Sequence[str]) -> bool:
        return zlib.crc32(" ".join(source).encode()) % self.held_out_fraction == 0

    def splits(self, num_train: int, num_test: int, seed: int = 0) -> tuple[list, list]:
        """``num_train`` training pairs and ``num_test`` distinct held-out pairs, as token ids."""
        rng = random.Random(seed)
        train, test, seen = [], [], set()
        attempts = 0
        while len(train) < num_train or len(test) < num_test:
            attempts += 1
            if attempts > 50 * (num_train + num_test) + 10_000:
                raise RuntimeError(f"{self.name}: could not draw {num_test} distinct held-out examples; "
                                   f"ask for fewer")
            source, target = self.sample(rng)
            if self.is_held_out(source):
                if len(test) < num_test and tuple(source) not in seen:
                    seen.add(tuple(source))
                    test.append((source, target))
            elif len(train) < num_train and len(source) not in self.left_out_lengths:
                train.append((source, target))
        return [self.encode(pair) for pair in train], [self.encode(pair) for pair in test]

    def longer(self) -> "Seq2SeqTask | None":
        """The same task on sources longer than any trained (length generalisation), or ``None``."""
        return None

    def encode(self, pair) -> tuple[list[int], list[int]]:
        return self.src_vocab.encode(pair[0]), self.tgt_vocab.encode(pair[1])

    @property
    @abstractmethod
    def max_target_length(self) -> int:
        """The longest target the task can generate (bounds decoding)."""
