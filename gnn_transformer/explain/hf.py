"""``explain(hf=...)``: a Hugging Face GPT-2, BERT, BART or T5, saved on disk or imported, on one input.

The model comes as a ``save_pretrained`` directory (nothing is downloaded) or as an imported graph
model (:func:`gnn_transformer.convert.hf.from_hf`).  One sequence is run with the original's call
and recorded; tokens are labelled by a tokenizer (given, or saved beside the model), by their
ids otherwise.  What runs is decided by the model's ``attention_sites()``: with cross-attention
(BART, T5) the decoder reads ``target`` after the start token, or else the model's own greedy
continuation (:func:`gnn_transformer.generation.generate`); without it (GPT-2, BERT) the source
is the one sequence.  ``token_types`` (BERT's segments) need a model whose ``input_parts()``
include a token type embedding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..analysis.recording import record_inference
from ..core.interface import RECORDING, check_token_ids, require_interface
from .trace import Side

__all__ = ["hf_run"]

MAX_NEW_TOKENS = 6


def _has_token_types(model: nn.Module) -> bool:
    parts = getattr(model, "input_parts", None)
    return callable(parts) and any(part.role == "token type" for part in parts())


def hf_run(model, source, target=None, tokenizer=None, token_types: Sequence[int] | None = None):
    """(model, (sides, logits (T, vocab), recording, output words)) of one recorded run of a Hugging Face model."""
    from ..convert.hf.saved import id_labels, load_saved, text_ids
    from ..generation import generate

    if isinstance(model, (str, Path)):
        model, saved = load_saved(model, flag="hf")
        tokenizer = tokenizer if tokenizer is not None else saved
    require_interface(model, RECORDING, "explain")
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"hf must be a save_pretrained directory or a model imported with convert.hf.from_hf (it has "
                        f"the original's config); got a {type(model).__name__} without .config")
    source_ids = text_ids(source, tokenizer, "source")
    if not source_ids:
        raise ValueError("source is empty: give the text (or token ids) the model reads")
    check_token_ids([torch.tensor(source_ids)], config.vocab_size, "source")
    src = torch.tensor([source_ids])  # (1, S)
    seq2seq = any(site.kind == "cross" for site in model.attention_sites())
    types = None
    if token_types is not None:
        if not _has_token_types(model):
            raise ValueError(f"token_types were given but this {type(model).__name__} embeds no token types (its "
                             "input_parts() have no 'token type'); BERT does")
        types = [int(t) for t in token_types]
        if len(types) != len(source_ids):
            raise ValueError(f"token_types has {len(types)} entries for {len(source_ids)} source tokens; give one "
                             "segment per token")
        check_token_ids([torch.tensor(types)], config.type_vocab_size, "token_types")
    if seq2seq:
        start = config.decoder_start_token_id
        if target is None:
            target_ids = generate(model, [src[0]], max_new_tokens=MAX_NEW_TOKENS,
                                  eos=config.eos_token_id)[0].tokens.tolist()
        else:
            target_ids = text_ids(target, tokenizer, "target")
            check_token_ids([torch.tensor(target_ids)], config.vocab_size, "target")
        target_ids = [start] + target_ids
        with record_inference(model) as recording:
            logits = model(input_ids=src, decoder_input_ids=torch.tensor([target_ids])).logits[0]  # (T, vocab)
        sides = {"source": Side(id_labels(source_ids, tokenizer), [len(source_ids)], torch.arange(len(source_ids))),
                 "target": Side(id_labels(target_ids, tokenizer), [len(target_ids)], torch.arange(len(target_ids)))}
    else:
        if target is not None:
            raise ValueError(f"a {type(model).__name__} has one stack and reads one sequence: give it as source, "
                             "without a target")
        call = {"input_ids": src} if types is None else {"input_ids": src, "token_type_ids": torch.tensor([types])}
        with record_inference(model) as recording:
            logits = model(**call).logits[0]  # (S, vocab)
        sides = {"tokens": Side(id_labels(source_ids, tokenizer), [len(source_ids)], torch.arange(len(source_ids)))}
    words = id_labels(range(logits.size(-1)), tokenizer)
    return model, (sides, logits, recording, words)
