"""Hugging Face ``transformers`` models rebuilt as message passing on token graphs.

==================================  ===========================================  ============================================
original                            graph model                                  graphs
==================================  ===========================================  ============================================
``GPT2LMHeadModel``                 :class:`GraphGPT2LMHeadModel`                causal
``BertForMaskedLM``                 :class:`GraphBertForMaskedLM`                complete (causal if ``config.is_decoder``)
``BartForConditionalGeneration``    :class:`GraphBartForConditionalGeneration`   complete, causal, bipartite
``T5ForConditionalGeneration``      :class:`GraphT5ForConditionalGeneration`     complete, causal, bipartite; T5
                                                                                 buckets as per-edge biases shared by layers
==================================  ===========================================  ============================================

Each graph model takes the original's call (``input_ids``, ``attention_mask``,
``token_type_ids``, ``position_ids``, ``decoder_input_ids``, ``decoder_attention_mask``,
``labels``) and returns the original's output class with the same ``logits``.  Weights go
through a map that is checked both ways (every tensor of the original is read, every tensor
of the graph model is written, shapes agree); :meth:`~common.HFGraphModel.hf_state_dict`
maps tensors (or gradients) back to the original's names.
"""
from __future__ import annotations

from torch import nn

from .bart import GraphBartForConditionalGeneration
from .bert import GraphBertForMaskedLM
from .common import HFGraphModel
from .gpt2 import GraphGPT2LMHeadModel
from .t5 import GraphT5ForConditionalGeneration

__all__ = ["from_hf", "HFGraphModel", "GraphGPT2LMHeadModel", "GraphBertForMaskedLM",
           "GraphBartForConditionalGeneration", "GraphT5ForConditionalGeneration", "SUPPORTED"]

SUPPORTED: dict[str, type[HFGraphModel]] = {
    name: cls for cls in (GraphGPT2LMHeadModel, GraphBertForMaskedLM, GraphBartForConditionalGeneration,
                          GraphT5ForConditionalGeneration) for name in cls.hf_classes
}


def from_hf(model: nn.Module, **options) -> HFGraphModel:
    """The graph model of a ``transformers`` model (one of :data:`SUPPORTED`), with its weights."""
    name = type(model).__name__
    if name not in SUPPORTED:
        raise TypeError(f"from_hf supports {sorted(SUPPORTED)}, got {name}; load the checkpoint with the class "
                        f"that has the language-model head (e.g. AutoModelForCausalLM for GPT-2)")
    return SUPPORTED[name].from_hf(model, **options)
