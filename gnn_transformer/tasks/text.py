"""Text that ships with Python, for a character language model: the pydoc help topics.

``pydoc_data.topics`` (part of every CPython standard library; ``help("if")`` reads it)
holds about 460,000 characters of English prose and code examples from the Python
reference manual.  Nothing is downloaded.
"""
from __future__ import annotations

import string

import torch

from .base import Vocabulary

__all__ = ["python_help_text", "CharCorpus", "visible_vocabulary"]

ALPHABET = frozenset(string.printable) - set("\r\x0b\x0c")


def python_help_text() -> str:
    """The pydoc help topics, in sorted order of their names, ASCII-printable characters only."""
    try:
        from pydoc_data.topics import topics
    except ImportError as error:  # pragma: no cover - some distributions strip it
        raise RuntimeError("this Python has no pydoc_data.topics (the help texts); install the full "
                           "standard library") from error
    text = "\n\n".join(topics[name] for name in sorted(topics))
    return "".join(c for c in text.replace("\t", "    ") if c in ALPHABET)


class CharCorpus:
    """A text as character ids, with a contiguous held-out tail.

    Attributes:
        vocab: :class:`Vocabulary` of the characters (``<s>``/``</s>`` unused but kept for uniformity).
        train, test: 1-D token tensors, the first ``1 - test_fraction`` of the text and the rest.
    """

    def __init__(self, text: str, test_fraction: float = 0.05) -> None:
        self.vocab = Vocabulary(sorted(set(text)))
        ids = torch.tensor(self.vocab.encode(list(text)), dtype=torch.long)
        cut = int(len(ids) * (1 - test_fraction))
        self.train, self.test = ids[:cut], ids[cut:]

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.vocab.encode(list(text)), dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.vocab.decode(ids, strip_end=False))


VISIBLE = {" ": "\u2423", "\n": "\u23ce"}  # ␣ and ⏎


def visible_vocabulary(vocabulary: Vocabulary) -> Vocabulary:
    """The same token ids with space and newline written as ␣ and ⏎: labels for tables and pictures."""
    return Vocabulary([VISIBLE.get(symbol, symbol) for symbol in vocabulary.symbols[2:]])
