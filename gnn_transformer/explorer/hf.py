"""The explorer's data of a Hugging Face model (GPT-2, BERT, BART, T5) imported as token graphs.

The model comes as a directory written by ``save_pretrained`` (nothing is downloaded) or as an
imported graph model (:func:`gnn_transformer.convert.hf.from_hf`).  One sequence is run with the
original's call; every attention call is recorded (:mod:`gnn_transformer.analysis.recording`),
its kind and layer named by the model's ``attention_sites()``.  Tokens are labelled by the
tokenizer saved beside the model when there is one, by their ids otherwise.  An
encoder-decoder model (BART, T5) reads ``target`` when given, else its own greedy continuation
of the start token (:func:`gnn_transformer.generation.generate`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..analysis.recording import record_inference
from ..core.interface import RECORDING, require_interface
from ..convert.hf.saved import id_labels as _labels, load_saved, text_ids as _ids
from .data import KINDS, recording_views

__all__ = ["load_hf", "hf_data"]


def load_hf(path: str | Path):
    """The graph model of the ``save_pretrained`` directory ``path`` and its tokenizer (``None`` if none is saved)."""
    return load_saved(path)


def hf_data(model, source, target=None, *, tokenizer=None, title: str | None = None, max_new_tokens: int = 6) -> dict:
    """Record one run of ``model`` (a ``save_pretrained`` path or an imported graph model) and return the explorer's data.

    Args:
        source: the text (tokenized by ``tokenizer``; without one, token ids separated by spaces) or a
            list of token ids: the prompt or sentence of a single stack, the source of an encoder-decoder.
        target: the decoder's input of an encoder-decoder model, after its start token (default: its
            greedy continuation, at most ``max_new_tokens`` tokens).
    """
    from ..generation import generate

    if isinstance(model, (str, Path)):
        model, saved = load_hf(model)
        tokenizer = tokenizer or saved
    require_interface(model, RECORDING, "explore")
    source_ids = _ids(source, tokenizer, "source")
    if not source_ids:
        raise ValueError("source is empty: give the text (or token ids) the model reads")
    vocab = model.config.vocab_size
    bad = [i for i in source_ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(f"source holds token id {bad[0]}, outside the model's vocabulary of {vocab} tokens")
    sites = model.attention_sites()
    seq2seq = any(site.kind == "cross" for site in sites)
    src = torch.tensor([source_ids])  # (1, S)
    if seq2seq:
        start = model.config.decoder_start_token_id
        if target is None:
            target_ids = generate(model, [src[0]], max_new_tokens=max_new_tokens,
                                  eos=model.config.eos_token_id)[0].tokens.tolist()
        else:
            target_ids = _ids(target, tokenizer, "target")
        target_ids = [start] + target_ids
        with record_inference(model) as recording:
            logits = model(input_ids=src, decoder_input_ids=torch.tensor([target_ids])).logits[0]  # (T, vocab)
    else:
        target_ids = []
        with record_inference(model) as recording:
            logits = model(input_ids=src).logits[0]  # (S, vocab)
    views = recording_views(recording)
    if not seq2seq:
        for view in views:
            view["keys"] = view["queries"] = "source"
    labels = {"source": _labels(source_ids, tokenizer), "target": _labels(target_ids, tokenizer)}
    kinds = [{"kind": kind, "label": kind if seq2seq else "self"} for kind in KINDS
             if any(view["kind"] == kind for view in views)]
    default = " ".join(labels["source"]) + (" \u2192 " + " ".join(labels["target"]) if seq2seq else "")
    return {"title": title or f"{model.config.model_type}: {default}", "layout": "line", "grid": None,
            "text_length": 0, "center": [], "tokens": labels,
            "predictions": {"side": "target" if seq2seq else "source",
                            "labels": _labels(logits.argmax(-1).tolist(), tokenizer)},
            "kinds": kinds, "views": views}
