"""Decoding the Hugging Face imports on growing graphs gives Hugging Face ``generate``'s tokens.

Small random-weight models (nothing downloaded), float64, a batch of three inputs of different
lengths (left padding for GPT-2's prompts, right padding for BART's and T5's sources, as
``generate`` expects).  The end token is one the model actually produces, so that sequences end
at different steps.  Hugging Face accumulates scores in float32, so its ``sequences_scores`` are
compared at float32 precision; our scores are also recomputed in float64 from the original's own
forward call on the decoded tokens, and agree within 1e-10.
"""
import pytest
import torch

from gnn_transformer.convert.hf import from_hf
from gnn_transformer.convert.hf.parity import small_model
from gnn_transformer.generation import generate

pytest.importorskip("transformers")

DT = torch.float64
LENGTHS = (5, 2, 7)
MAX_NEW = 6


def _inputs(vocab: int, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=generator) for n in LENGTHS]


def _padded(inputs, pad: int, side: str):
    length = max(t.numel() for t in inputs)
    ids = torch.full((len(inputs), length), pad, dtype=torch.long)
    mask = torch.zeros(len(inputs), length, dtype=torch.long)
    for row, tokens in enumerate(inputs):
        span = slice(length - tokens.numel(), length) if side == "left" else slice(0, tokens.numel())
        ids[row, span], mask[row, span] = tokens, 1
    return ids, mask


def _hf_model(arch: str):
    model = small_model(arch).to(DT).eval()
    with torch.no_grad():  # the libraries' initialisation (std 0.02) makes outputs almost input-independent
        generator = torch.Generator().manual_seed(3)
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=DT) * 0.15)
    for config in (model.config, model.generation_config):
        for name in ("forced_eos_token_id", "forced_bos_token_id", "no_repeat_ngram_size", "min_length"):
            if hasattr(config, name):
                setattr(config, name, None)
    return model


def _hf_generate(model, inputs, **settings):
    decoder_only = not model.config.is_encoder_decoder
    ids, mask = _padded(inputs, settings["pad_token_id"], "left" if decoder_only else "right")
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=MAX_NEW,
                         return_dict_in_generate=True, output_scores=True, **settings)
    start = ids.size(1) if decoder_only else 1
    return out.sequences[:, start:], getattr(out, "sequences_scores", None)


def _eos(model, inputs) -> int:
    """A token the model's greedy decoding produces at its third step: a reachable end token."""
    tokens, _ = _hf_generate(model, inputs, eos_token_id=None, pad_token_id=0, num_beams=1)
    return int(tokens[0, 2])


def _float64_score(model, source, tokens, length_penalty):
    """log P(tokens | source) from the original's forward call in float64, divided by |Y|^alpha."""
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            start = torch.tensor([model.config.decoder_start_token_id])
            logits = model(input_ids=source[None], decoder_input_ids=torch.cat([start, tokens[:-1]])[None]).logits[0]
        else:
            logits = model(input_ids=torch.cat([source, tokens[:-1]])[None]).logits[0, source.numel() - 1:]
    log_p = torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).sum()
    return float(log_p) / tokens.numel() ** length_penalty


def _assert_same_tokens(ours, theirs, pad, ragged=True):
    assert any(h.finished for h in ours)  # the end token is exercised
    assert not ragged or len({h.tokens.numel() for h in ours}) > 1  # sequences end at different steps
    for hypothesis, row in zip(ours, theirs, strict=True):
        n = hypothesis.tokens.numel()
        assert torch.equal(hypothesis.tokens, row[:n]), (hypothesis.tokens, row)
        assert bool((row[n:] == pad).all())


@pytest.mark.parametrize("arch", ["gpt2", "bart", "t5"])
def test_greedy_decoding_gives_the_tokens_of_hf_generate(arch):
    hf = _hf_model(arch)
    inputs = _inputs(hf.config.vocab_size)
    eos, pad = _eos(hf, inputs), 1
    theirs, _ = _hf_generate(hf, inputs, eos_token_id=eos, pad_token_id=pad, num_beams=1)
    ours = generate(from_hf(hf), inputs, strategy="greedy", eos=eos, max_new_tokens=MAX_NEW)
    _assert_same_tokens(ours, theirs, pad)
    for hypothesis, source in zip(ours, inputs):
        assert abs(hypothesis.score - _float64_score(hf, source, hypothesis.tokens, 0.0)) < 1e-10


@pytest.mark.parametrize("arch, length_penalty, early_stopping", [
    ("gpt2", 1.0, False), ("gpt2", 0.5, True), ("bart", 1.0, True), ("bart", 2.0, False), ("t5", 1.0, False),
    ("t5", 0.0, "never"),
])
def test_beam_search_gives_the_tokens_and_scores_of_hf_generate(arch, length_penalty, early_stopping):
    hf = _hf_model(arch)
    inputs = _inputs(hf.config.vocab_size)
    eos, pad = _eos(hf, inputs), 1
    settings = dict(num_beams=3, length_penalty=length_penalty, early_stopping=early_stopping)
    theirs, their_scores = _hf_generate(hf, inputs, eos_token_id=eos, pad_token_id=pad, **settings)
    ours = generate(from_hf(hf), inputs, strategy="beam", beam_scoring="hf", eos=eos, max_new_tokens=MAX_NEW,
                    beam_size=3, length_penalty=length_penalty, early_stopping=early_stopping)
    _assert_same_tokens(ours, theirs, pad, ragged=False)
    for hypothesis, source, their_score in zip(ours, inputs, their_scores):
        assert abs(hypothesis.score - float(their_score)) < 1e-5 * max(1.0, abs(hypothesis.score))  # HF: float32
        assert abs(hypothesis.score - _float64_score(hf, source, hypothesis.tokens, length_penalty)) < 1e-10


@pytest.mark.parametrize("arch", ["gpt2", "bart", "t5"])
def test_sampling_with_a_seed_is_reproducible_and_incremental_equals_recomputed(arch):
    hf = _hf_model(arch)
    model = from_hf(hf)
    inputs = _inputs(model.config.vocab_size)

    def draw(recompute):
        return generate(model, inputs, strategy="sample", top_k=20, temperature=0.8, max_new_tokens=MAX_NEW,
                        generator=torch.Generator().manual_seed(5), recompute=recompute)

    first, again, recomputed = draw(False), draw(False), draw(True)
    assert [h.tokens.tolist() for h in first] == [h.tokens.tolist() for h in again]
    assert [h.tokens.tolist() for h in first] == [h.tokens.tolist() for h in recomputed]
    assert all(abs(a.score - b.score) < 1e-10 for a, b in zip(first, recomputed))
    for hypothesis, source in zip(first, inputs):  # the sampled tokens' log-probabilities are the original's
        assert abs(hypothesis.score - _float64_score(hf, source, hypothesis.tokens, 0.0)) < 1e-10
    other = generate(model, inputs, strategy="sample", max_new_tokens=MAX_NEW, generator=torch.Generator().manual_seed(6))
    assert [h.tokens.tolist() for h in first] != [h.tokens.tolist() for h in other]
