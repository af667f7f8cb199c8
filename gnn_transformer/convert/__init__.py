"""Importers: models of other libraries rebuilt on the core.

:func:`from_hf` rebuilds Hugging Face ``transformers`` models (GPT-2, BERT, BART, T5) as
message passing on token graphs, through a weight map checked key by key and shape by shape.
"""
from __future__ import annotations

from torch import nn

from ..core.conversion import TorchCounterpart  # where it used to live; torch conversion is part of the core

__all__ = ["TorchCounterpart", "from_hf"]


def from_hf(model: nn.Module, **options) -> nn.Module:
    """The graph model of a Hugging Face ``transformers`` model: same weights, same call, same logits.

    Supported: ``GPT2LMHeadModel``, ``BertForMaskedLM``, ``BartForConditionalGeneration`` and
    ``T5ForConditionalGeneration`` (see :mod:`gnn_transformer.convert.hf`).  A checkpoint on disk
    goes the same way: ``from_hf(AutoModelFor...from_pretrained(local_dir))``.  ``options``
    (keyword-only extras such as ``backend``) go to every attention layer.
    """
    from .hf import from_hf as _from_hf  # transformers is an optional dependency

    return _from_hf(model, **options)
