import pytest
import torch

from gnn_transformer import GraphDecoderModel, GraphEncoderModel, GraphTransformerModel, graphs
from gnn_transformer.generation import (
    GrowingCausalGraph, GrowingSeq2SeqGraph, RecomputedCausalGraph, RecomputedSeq2SeqGraph, beam_search,
    generate, greedy, length_penalty_factor, sample,
)
from gnn_transformer.testing import relative_difference, torch_reference_mode
from gnn_transformer.variants import GraphVariantModel
from gnn_transformer.testing.dense_decoding import DenseCausalDecoding, DenseSeq2SeqDecoding
from gnn_transformer.testing.dense_models import DenseTransformerModel

DT = torch.float64
SMALL = dict(d_model=16, nhead=4, dim_feedforward=32, dropout=0.0, dtype=DT)
BOS, EOS = 0, 1


def seq2seq_model(norm_first=False):
    model = GraphTransformerModel(13, 11, num_encoder_layers=2, num_decoder_layers=2, norm_first=norm_first,
                                  **SMALL).eval()
    with torch.no_grad():  # random weights end almost at once; make the end token rarer
        model.generator.bias[EOS] -= 1.5
    return model


def decoder_model():
    model = GraphDecoderModel(11, num_layers=2, **SMALL).eval()
    with torch.no_grad():
        model.generator.bias[EOS] -= 1.5
    return model


def sources(lengths=(5, 1, 3, 7), low=2, high=13, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(low, high, (n,), generator=generator) for n in lengths]


def decode_three_ways(search, model, inputs, **options):
    """The same search on the growing graph, the recomputed graph and the dense torch.nn model."""
    if isinstance(model, GraphTransformerModel):
        scorers = [GrowingSeq2SeqGraph(model, inputs, BOS), RecomputedSeq2SeqGraph(model, inputs, BOS),
                   DenseSeq2SeqDecoding(model, inputs, BOS)]
    else:
        scorers = [GrowingCausalGraph(model, inputs), RecomputedCausalGraph(model, inputs),
                   DenseCausalDecoding(model, inputs)]
    results = []
    for scorer in scorers:
        if "generator" in options:
            options["generator"] = torch.Generator().manual_seed(7)
        with torch_reference_mode():
            results.append(search(scorer, **options))
    return results


def assert_same_hypotheses(results):
    grown, *others = results
    assert sum(h.tokens.numel() for h in grown) > 2 * len(grown)  # the comparison decodes real sequences
    for other in others:
        for a, b in zip(grown, other, strict=True):
            assert torch.equal(a.tokens, b.tokens)
            assert a.finished == b.finished
            assert relative_difference(a.token_log_probs, b.token_log_probs) < 1e-10
            assert abs(a.score - b.score) < 1e-10 * max(1.0, abs(b.score))


SEARCHES = [
    pytest.param(greedy, dict(max_new_tokens=9, eos=EOS), id="greedy"),
    pytest.param(beam_search, dict(max_new_tokens=9, eos=EOS, beam_size=3), id="beam3"),
    pytest.param(beam_search, dict(max_new_tokens=7, eos=EOS, beam_size=4, length_penalty=0.0), id="beam4-nolp"),
    pytest.param(sample, dict(max_new_tokens=9, eos=EOS, temperature=0.8, top_k=5, generator=None), id="sample"),
]


@pytest.mark.parametrize("search, options", SEARCHES)
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_decoder_growing_recomputed_and_torch_decode_alike(search, options, norm_first):
    assert_same_hypotheses(decode_three_ways(search, seq2seq_model(norm_first), sources(), **options))


@pytest.mark.parametrize("search, options", SEARCHES)
def test_decoder_only_growing_recomputed_and_torch_decode_alike(search, options):
    assert_same_hypotheses(decode_three_ways(search, decoder_model(), sources((4, 1, 6), 0, 11), **options))


def test_greedy_matches_a_plain_torch_nn_transformer_loop():
    model = seq2seq_model()
    dense = DenseTransformerModel(model).eval()
    src = sources((6,))[0]
    tokens = [BOS]
    with torch_reference_mode(), torch.no_grad():
        for _ in range(8):
            tgt = torch.tensor([tokens])
            logits = dense(src[None], tgt, torch.tensor([src.numel()]), torch.tensor([tgt.size(1)]))
            tokens.append(int(logits[0, -1].argmax()))
            if tokens[-1] == EOS:
                break
    grown = greedy(GrowingSeq2SeqGraph(model, [src], BOS), max_new_tokens=8, eos=EOS)[0]
    assert grown.tokens.tolist() == tokens[1:]


def test_a_decoding_step_adds_one_node_per_hypothesis_and_caches_only_grow():
    model = seq2seq_model()
    scorer = GrowingSeq2SeqGraph(model, sources(), BOS)
    log_probs = scorer.start()
    assert scorer.num_nodes == 4 and scorer.cache[0]["self"].num_sources == 4
    first_keys = scorer.cache[0]["self"].key.clone()
    scorer.extend(torch.tensor([0, 0, 2]), log_probs[[0, 0, 2]].topk(2, -1).indices[[0, 1, 2], [0, 1, 0]])
    # two children of hypothesis 0 share its start node: a prefix tree, not copies
    assert scorer.path.tolist() == [[0, 4], [0, 5], [2, 6]]
    assert scorer.num_nodes == 7 and scorer.cache[1]["self"].num_sources == 7
    assert torch.equal(scorer.cache[0]["self"].key[:4], first_keys)
    assert scorer.cache[0]["cross"].num_sources == 16  # the memory, projected once


def test_beam_search_never_copies_a_cache():
    model = seq2seq_model()
    scorer = GrowingSeq2SeqGraph(model, sources(), BOS)
    beam_search(scorer, max_new_tokens=6, beam_size=3, eos=EOS)
    for layer in scorer.cache:
        assert layer["self"].num_sources == scorer.num_nodes  # one cache row per node ever added
    assert scorer.num_nodes <= 4 + 4 * 3 * 5


def test_beam_of_one_is_greedy():
    model = seq2seq_model()
    one = beam_search(GrowingSeq2SeqGraph(model, sources(), BOS), max_new_tokens=9, beam_size=1, eos=EOS,
                      length_penalty=0.0)
    best = greedy(GrowingSeq2SeqGraph(model, sources(), BOS), max_new_tokens=9, eos=EOS)
    for a, b in zip(one, best):
        assert torch.equal(a.tokens, b.tokens)


def test_beam_search_scores_are_length_normalised_log_probabilities():
    out = beam_search(GrowingSeq2SeqGraph(seq2seq_model(), sources(), BOS), max_new_tokens=9, beam_size=3,
                      eos=EOS, length_penalty=0.6)
    for hypothesis in out:
        expected = hypothesis.log_prob / length_penalty_factor(hypothesis.tokens.numel(), 0.6)
        assert abs(hypothesis.score - expected) < 1e-12
    assert length_penalty_factor(1, 0.6) == 1.0 and length_penalty_factor(7, 0.0) == 1.0


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_per_step_attention_equals_the_full_graphs_attention(strategy):
    model = seq2seq_model()
    src = sources()
    out = generate(model, src, strategy=strategy, bos=BOS, eos=EOS, max_new_tokens=9, beam_size=3,
                   return_attention=True)
    for source, hypothesis in zip(src, out):
        target = torch.cat([torch.tensor([BOS]), hypothesis.tokens[:-1]])  # the nodes that predicted them
        batch = graphs.seq2seq_batch([source], [target])
        with torch.no_grad():
            _, weights = model.decode(batch, model.encode(batch), return_attention_weights=True)
        for layer, full in zip(hypothesis.attention, weights):
            for kind, store in (("self", ("tgt", "to", "tgt")), ("cross", ("src", "to", "tgt"))):
                assert torch.equal(layer[kind].edge_index, batch[store].edge_index)
                assert relative_difference(layer[kind].weights, full[kind]) < 1e-12
        cross = hypothesis.attention[-1]["cross"].matrix()  # (H, T, S)
        assert cross.shape == (4, target.numel(), source.numel())
        assert torch.allclose(cross.sum(-1), torch.ones((), dtype=DT))


def test_decoder_only_attention_covers_prompt_and_continuation():
    model = decoder_model()
    prompts = sources((4, 2), 0, 11)
    out = generate(model, prompts, max_new_tokens=5, return_attention=True)
    for prompt, hypothesis in zip(prompts, out):
        sequence = torch.cat([prompt, hypothesis.tokens[:-1]])
        _, weights = model.hidden(graphs.sequence_data(sequence, "causal"), return_attention_weights=True)
        assert relative_difference(hypothesis.attention[0]["self"].weights, weights[0]) < 1e-12
        assert "cross" not in hypothesis.attention[0]


def test_seeded_sampling_is_reproducible_and_top_k_restricts_the_support():
    model = decoder_model()
    prompts = sources((3, 3, 3), 0, 11)
    first, second = (generate(model, prompts, strategy="sample", max_new_tokens=6, top_k=2,
                              generator=torch.Generator().manual_seed(5)) for _ in range(2))
    assert [h.tokens.tolist() for h in first] == [h.tokens.tolist() for h in second]
    scorer = GrowingCausalGraph(model, prompts)
    top2 = scorer.start().topk(2, dim=-1).indices
    for prompt_top, hypothesis in zip(top2, first):
        assert int(hypothesis.tokens[0]) in prompt_top.tolist()


def test_generate_restores_training_mode_and_leaves_no_graph():
    model = seq2seq_model().train()
    out = generate(model, sources(), bos=BOS, eos=EOS, max_new_tokens=3)
    assert model.training and not out[0].token_log_probs.requires_grad


def test_bad_decoding_requests_name_the_problem():
    model = seq2seq_model()
    with pytest.raises(ValueError, match="pass bos="):
        generate(model, sources(), max_new_tokens=3)
    with pytest.raises(ValueError, match="attends over complete, not a causal graph"):
        generate(GraphEncoderModel(11, num_layers=1, **SMALL), sources(), max_new_tokens=3)
    with pytest.raises(ValueError, match="strategy must be one of"):
        generate(model, sources(), strategy="nucleus", bos=BOS, max_new_tokens=3)
    with pytest.raises(ValueError, match="smaller than the vocabulary"):
        generate(model, sources(), strategy="beam", beam_size=11, bos=BOS, max_new_tokens=3)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        generate(model, sources(), strategy="sample", temperature=0.0, bos=BOS, max_new_tokens=3)
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        generate(model, sources(), bos=BOS, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"inputs\[1\] is empty"):
        generate(model, [torch.tensor([3]), torch.tensor([], dtype=torch.long)], bos=BOS, max_new_tokens=3)
    with pytest.raises(ValueError, match="call model.eval"):
        GrowingSeq2SeqGraph(model.train(), sources(), BOS)
    with pytest.raises(ValueError, match="incremental path"):
        generate(model.eval(), sources(), bos=BOS, max_new_tokens=3, recompute=True, return_attention=True)


@pytest.mark.parametrize("search, options", SEARCHES[:2])
def test_sliding_window_decoding_grows_the_windowed_graph(search, options):
    model, prompts = decoder_model(), sources((4, 1, 6), 0, 11)
    grown = search(GrowingCausalGraph(model, prompts, attention_window=3), **options)
    recomputed = search(RecomputedCausalGraph(model, prompts, attention_window=3), **options)
    assert_same_hypotheses([grown, recomputed])
    full = search(GrowingCausalGraph(model, prompts), **options)
    assert any(not torch.equal(a.token_log_probs, b.token_log_probs) for a, b in zip(grown, full))
    scorer = GrowingCausalGraph(model, prompts, attention_window=3, record_attention=True)
    out = greedy(scorer, max_new_tokens=5, return_attention=True)
    sequence = torch.cat([prompts[2], out[2].tokens[:-1]])
    edges = out[2].attention[0]["self"].edge_index
    assert torch.equal(edges, graphs.causal([sequence.numel()], window=3))
    with pytest.raises(ValueError, match="decoder-only models"):
        generate(seq2seq_model(), sources(), bos=BOS, max_new_tokens=2, attention_window=3)
    with pytest.raises(ValueError, match="attention_window must be a positive integer"):
        GrowingCausalGraph(model, prompts, attention_window=0)


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_generation_asks_the_model_for_its_graph_so_a_variant_on_the_causal_graph_decodes(positions):
    """A GraphVariantModel declared on the causal graph decodes like a GraphDecoderModel: growing == recomputed."""
    torch.manual_seed(0)
    model = GraphVariantModel(11, 16, 4, num_layers=2, dim_feedforward=32, dropout=0.0, positions=positions,
                              dtype=DT, graph=graphs.causal).eval()
    prompts = sources((3, 1, 4), high=11)
    grown = generate(model, prompts, strategy="beam", beam_size=3, max_new_tokens=4)
    recomputed = generate(model, prompts, strategy="beam", beam_size=3, max_new_tokens=4, recompute=True)
    assert [h.tokens.tolist() for h in grown] == [h.tokens.tolist() for h in recomputed]
    assert all(abs(a.score - b.score) < 1e-10 for a, b in zip(grown, recomputed))
    undeclared = GraphVariantModel(11, 16, 4, num_layers=1, dim_feedforward=32, dtype=DT)
    with pytest.raises(ValueError, match="attends over None, not a causal graph"):
        generate(undeclared, prompts, max_new_tokens=2)


VARIANT_OPTIONS = [dict(positions=p) for p in ("sinusoidal", "learned", "rotary", "alibi", "t5", "none")] + [
    dict(norm="rms"), dict(norm_first=False), dict(feed_forward="swiglu"), dict(feed_forward="relu"),
    dict(scale_embedding=True), dict(tie_weights=False, bias=False), dict(positions="t5", bidirectional=False),
]


@pytest.mark.parametrize("options", VARIANT_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_variant_decodes_incrementally_as_it_recomputes(options):
    """Growing graph == whole graph recomputed at every step (tokens exactly, scores within 1e-10), for every
    GraphVariantModel option: relative biases (ALiBi, T5) are computed for the new edges only, rotary
    positions per new node; and a step over a whole prompt gives the model's own forward logits."""
    torch.manual_seed(0)
    model = GraphVariantModel(11, 16, 4, num_layers=2, dim_feedforward=32, dropout=0.0, dtype=DT,
                              graph=graphs.causal, **options).eval()
    prompts = sources((3, 1, 4), high=11)
    for strategy in ("greedy", "beam"):
        grown = generate(model, prompts, strategy=strategy, beam_size=3, max_new_tokens=5)
        recomputed = generate(model, prompts, strategy=strategy, beam_size=3, max_new_tokens=5, recompute=True)
        assert [h.tokens.tolist() for h in grown] == [h.tokens.tolist() for h in recomputed]
        assert all(abs(a.score - b.score) < 1e-10 for a, b in zip(grown, recomputed))
    state, first = model.begin_decoding(prompts)
    lengths = [p.numel() for p in prompts]
    owner = torch.arange(3).repeat_interleave(torch.tensor(lengths))
    stepped, _ = model.decode_step(state, torch.cat(first), graphs.positions(lengths), graphs.causal(lengths), owner)
    from torch_geometric.data import Batch

    whole = model(Batch.from_data_list([graphs.sequence_data(p, "causal") for p in prompts]))
    assert relative_difference(stepped, whole) < 1e-12

def test_decoder_settings_the_search_cannot_honour_are_named():
    """Settings of one search given to another are refused, not ignored: each error names the setting,
    what was given and what it needs."""
    model, prompts = decoder_model(), sources((3, 2), 0, 11)
    with pytest.raises(ValueError, match=r"early_stopping=True is Hugging Face's beam-search setting: it needs "
                                         r"strategy='beam' and beam_scoring='hf', got strategy='greedy'"):
        generate(model, prompts, early_stopping=True, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"early_stopping='never' .* got strategy='beam', beam_scoring='paper'"):
        generate(model, prompts, strategy="beam", early_stopping="never", max_new_tokens=2)
    with pytest.raises(ValueError, match=r"beam_scoring must be one of \('paper', 'hf'\), got 'fairseq'"):
        generate(model, prompts, strategy="beam", beam_scoring="fairseq", max_new_tokens=2)
    with pytest.raises(ValueError, match=r"beam_size \(6\) keeps 2 \* beam_size candidates, more than the "
                                         r"vocabulary \(11 tokens\)"):
        generate(model, prompts, strategy="beam", beam_scoring="hf", beam_size=6, max_new_tokens=2)
    hf = generate(model, prompts, strategy="beam", beam_scoring="hf", beam_size=3, early_stopping=True,
                  length_penalty=1.0, max_new_tokens=3)  # honoured where it applies
    assert len(hf) == 2


@pytest.mark.parametrize("options", [dict(positions="t5", bidirectional=False), dict(positions="rotary")],
                         ids=["t5", "rotary"])
def test_seeded_sampling_of_a_variant_is_reproducible_and_grows_as_it_recomputes(options):
    torch.manual_seed(0)
    model = GraphVariantModel(11, 16, 4, num_layers=2, dim_feedforward=32, dropout=0.0, dtype=DT,
                              graph=graphs.causal, **options).eval()
    prompts = sources((3, 1, 4), high=11)

    def draw(seed, recompute=False):
        return generate(model, prompts, strategy="sample", temperature=1.5, max_new_tokens=6,
                        generator=torch.Generator().manual_seed(seed), recompute=recompute)

    first, again, recomputed, other = draw(5), draw(5), draw(5, recompute=True), draw(6)
    assert [h.tokens.tolist() for h in first] == [h.tokens.tolist() for h in again] == \
        [h.tokens.tolist() for h in recomputed]
    assert all(abs(a.score - b.score) < 1e-10 for a, b in zip(first, recomputed))
    assert [h.tokens.tolist() for h in first] != [h.tokens.tolist() for h in other]
