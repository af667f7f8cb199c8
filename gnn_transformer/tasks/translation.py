"""A small synthetic translation task whose grammar needs reordering and agreement.

Source (English-like, subject-verb-object, adjectives before the noun, past tense so the
verb does not show number)::

    the big red cats chased the small dog

Target (an invented language: subject-object-verb with case particles ``ga``/``o``,
adjectives after the noun in mirrored order, and article, adjectives and verb agreeing in
number -- the plural adds ``-j`` to nouns and adjectives, ``los`` is the plural article and
the verb takes ``-u`` when the *subject* is plural)::

    los katoj rugaj grandaj ga lo hundo malgranda o casisu

So the decoder must find, for every target word, a source word elsewhere in the sentence
(the verb comes last, the adjectives turn around) and carry the subject's number to the
verb at the far end: cross-attention has to learn the alignment.
"""
from __future__ import annotations

import random

from .base import Seq2SeqTask, Vocabulary

__all__ = ["TranslationTask"]

NOUNS = {  # source singular, source plural, target stem
    "cat": ("cats", "kat"), "dog": ("dogs", "hund"), "bird": ("birds", "bird"),
    "fox": ("foxes", "vulp"), "horse": ("horses", "ceval"), "mouse": ("mice", "mus"),
}
ADJECTIVES = {"big": "grand", "small": "malgrand", "red": "rug", "old": "maljun", "young": "jun", "happy": "felic"}
VERBS = {"saw": "vidis", "chased": "casis", "liked": "satis", "bit": "mordis", "followed": "sekvis",
         "heard": "audis"}


class TranslationTask(Seq2SeqTask):
    """Sentences ``the ADJ{0,2} NOUN VERB the ADJ{0,2} NOUN`` and their translations (see the module docs).

    Source lengths run from 5 to 9 words, target lengths from 7 to 11.
    """

    name = "translate"

    def __init__(self, max_adjectives: int = 2) -> None:
        self.max_adjectives = max_adjectives
        nouns = [form for singular, (plural, _) in NOUNS.items() for form in (singular, plural)]
        self.src_vocab = Vocabulary(["the", *nouns, *ADJECTIVES, *VERBS])
        stems = [stem for _, stem in NOUNS.values()]
        self.tgt_vocab = Vocabulary(["lo", "los", "ga", "o",
                                     *(f"{s}o{n}" for s in stems for n in ("", "j")),
                                     *(f"{a}a{n}" for a in ADJECTIVES.values() for n in ("", "j")),
                                     *(f"{v}{n}" for v in VERBS.values() for n in ("", "u"))])

    def sample(self, rng: random.Random) -> tuple[list[str], list[str]]:
        def noun_phrase() -> list[str]:
            noun = rng.choice(list(NOUNS))
            adjectives = rng.sample(list(ADJECTIVES), rng.randint(0, self.max_adjectives))
            return ["the", *adjectives, NOUNS[noun][0] if rng.random() < 0.5 else noun]

        source = [*noun_phrase(), rng.choice(list(VERBS)), *noun_phrase()]
        return source, self.translate(source)

    @staticmethod
    def translate(source: list[str]) -> list[str]:
        """The grammar's translation of a source sentence ``the ADJ* NOUN VERB the ADJ* NOUN``."""
        verbs = [i for i, word in enumerate(source) if word in VERBS]
        if len(verbs) != 1 or source[0] != "the" or source[verbs[0] + 1 : verbs[0] + 2] != ["the"]:
            raise ValueError(f"not a sentence of the grammar: {' '.join(source)!r}")
        verb = verbs[0]
        subject, subject_plural = _noun_phrase(source[1:verb])
        obj, _ = _noun_phrase(source[verb + 2 :])
        return [*subject, "ga", *obj, "o", VERBS[source[verb]] + ("u" if subject_plural else "")]

    @property
    def max_target_length(self) -> int:
        return 2 * (2 + self.max_adjectives) + 3


_PLURALS = {plural: singular for singular, (plural, _) in NOUNS.items()}


def _noun_phrase(words: list[str]) -> tuple[list[str], bool]:
    """``ADJ* NOUN`` -> (``ARTICLE NOUN ADJ*`` with agreement and mirrored adjectives, plural?)."""
    *adjectives, noun = words
    plural = noun in _PLURALS
    stem = NOUNS[_PLURALS.get(noun, noun)][1]
    suffix = "j" if plural else ""
    return ["los" if plural else "lo", f"{stem}o{suffix}",
            *(f"{ADJECTIVES[a]}a{suffix}" for a in reversed(adjectives))], plural
