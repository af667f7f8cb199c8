"""The checks at the top of :func:`~gnn_transformer.generation.generate`: every decoding option at once.

Made before the model runs (and before a training run's decoding starts), each error names
the argument, what was given and what is expected.  Python values and tensor metadata only:
token ids are not read back here (the model's embedding checks their range).
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["check_generate_arguments", "check_early_stopping", "STRATEGIES", "BEAM_SCORING", "EARLY_STOPPING"]

STRATEGIES = ("greedy", "beam", "sample")
BEAM_SCORING = ("paper", "hf")  # the paper's search (Wu et al.'s length penalty) or Hugging Face generate's
EARLY_STOPPING = (True, False, "never")  # Hugging Face's early_stopping (beam_scoring="hf")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int(value, name: str, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    expected = ("a positive integer" if minimum == 1 else f"an integer >= {minimum}") + (" or None" if optional else "")
    if not _is_int(value):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {expected}, got {value}")


def _real(value, name: str, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)) or (positive and value <= 0):
        raise ValueError(f"{name} must be {'> 0 and ' if positive else ''}finite, got {value!r}")


def check_early_stopping(early_stopping) -> None:
    """Hugging Face's ``early_stopping``: True, False or ``"never"``."""
    if not isinstance(early_stopping, (bool, str)) or early_stopping not in EARLY_STOPPING:
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")


def check_generate_arguments(inputs, *, strategy: str, max_new_tokens, bos, eos, beam_size, length_penalty,
                             temperature, top_k, attention_window, beam_scoring: str = "paper",
                             early_stopping=False) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first bad argument of ``generate``.

    ``inputs``: a non-empty list or tuple of 1-D integer tensors (one per sequence);
    ``strategy`` one of greedy, beam, sample; ``beam_scoring`` one of paper, hf, and
    ``early_stopping`` (Hugging Face's, so only with ``beam_scoring="hf"``) True, False or "never";
    ``max_new_tokens`` >= 1; ``bos``/``eos`` token ids
    >= 0 or ``None``; ``beam_size`` >= 1; ``length_penalty`` finite; ``temperature`` finite and
    positive; ``top_k`` and ``attention_window`` >= 1 or ``None``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if beam_scoring not in BEAM_SCORING:
        raise ValueError(f"beam_scoring must be one of {BEAM_SCORING}, got {beam_scoring!r}")
    check_early_stopping(early_stopping)
    if early_stopping is not False and not (strategy == "beam" and beam_scoring == "hf"):
        raise ValueError(f"early_stopping={early_stopping!r} is Hugging Face's beam-search setting: it needs "
                         f"strategy='beam' and beam_scoring='hf', got strategy={strategy!r}, "
                         f"beam_scoring={beam_scoring!r}")
    if isinstance(inputs, Tensor) or not isinstance(inputs, (list, tuple)):
        raise TypeError(f"inputs must be a list of 1-D token-id tensors (one per sequence), got "
                        f"{type(inputs).__name__}" + (f" of shape {tuple(inputs.shape)}: pass list(inputs)"
                                                      if isinstance(inputs, Tensor) else ""))
    if len(inputs) == 0:
        raise ValueError("inputs is empty: give at least one sequence")
    for index, sequence in enumerate(inputs):
        if not isinstance(sequence, Tensor):
            raise TypeError(f"inputs[{index}] must be a 1-D tensor of token ids, got {type(sequence).__name__}")
        if sequence.dtype.is_floating_point or sequence.is_complex() or sequence.dtype == torch.bool:
            raise TypeError(f"inputs[{index}] must hold integer token ids, got dtype {sequence.dtype}")
        if sequence.dim() != 1:
            raise ValueError(f"inputs[{index}] must be 1-D (the token ids of one sequence), got shape "
                             f"{tuple(sequence.shape)}")
    _int(max_new_tokens, "max_new_tokens", 1)
    _int(bos, "bos", 0, optional=True)
    _int(eos, "eos", 0, optional=True)
    _int(beam_size, "beam_size", 1)
    _real(length_penalty, "length_penalty", positive=False)
    _real(temperature, "temperature", positive=True)
    _int(top_k, "top_k", 1, optional=True)
    _int(attention_window, "attention_window", 1, optional=True)
