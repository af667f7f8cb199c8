"""Tasks that run on any machine (data generated or shipped with Python, nothing downloaded).

* ``copy``, ``reverse``, ``sort`` -- digit sequences of 1 to 12 digits (:class:`DigitTask`);
* ``addition`` -- two numbers of 1 to 6 digits and their sum (:class:`AdditionTask`, the Universal
  Transformer paper's algorithmic task);
* ``translate`` -- a synthetic language pair with reordering and agreement (:class:`TranslationTask`);
* ``charlm`` -- a character language model on Python's help texts (:class:`CharCorpus`).
"""
from .addition import AdditionTask
from .base import Seq2SeqTask, Vocabulary
from .digits import DigitTask
from .text import CharCorpus, python_help_text
from .translation import TranslationTask

__all__ = ["Seq2SeqTask", "Vocabulary", "DigitTask", "AdditionTask", "TranslationTask", "CharCorpus", "python_help_text",
           "SEQ2SEQ_TASKS", "get_task"]

SEQ2SEQ_TASKS = ("copy", "reverse", "sort", "addition", "translate")


def get_task(name: str) -> Seq2SeqTask:
    """The seq2seq task called ``name`` (one of :data:`SEQ2SEQ_TASKS`)."""
    if name == "translate":
        return TranslationTask()
    if name in ("copy", "reverse", "sort"):
        return DigitTask(name)
    if name == "addition":
        return AdditionTask()
    raise ValueError(f"unknown task {name!r}; choose from {SEQ2SEQ_TASKS} (or charlm for the language model)")
