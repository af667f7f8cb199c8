"""The Universal Transformer and ACT: equal to tied layers, to one layer, to the math by hand; gradients;
decoding on a growing graph; errors."""
import pytest
import torch
from torch import nn

from gnn_transformer import GraphTransformerEncoderLayer, GraphTransformerModel, graphs
from gnn_transformer.generation import (GrowingSeq2SeqGraph, RecomputedGraph, RecomputedSeq2SeqGraph, beam_search,
                                        greedy, sample)
from gnn_transformer.testing import relative_difference
from gnn_transformer.variants import GraphUniversalTransformer
from gnn_transformer.variants.act import ACTState, HaltingError, HaltingUnit, act_step
from gnn_transformer.variants.universal import CoordinateEncoding, UniversalStack

DT = torch.float64
SMALL = dict(d_model=16, nhead=4, dim_feedforward=24, dropout=0.0, dtype=DT)
BOS, EOS = 0, 1


def batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    src = [torch.randint(2, 13, (n,), generator=generator) for n in (5, 1, 3)]
    tgt = [torch.cat([torch.tensor([BOS]), torch.randint(2, 11, (n,), generator=generator)]) for n in (3, 4, 1)]
    return graphs.seq2seq_batch(src, tgt)


def universal(num_steps=3, **options):
    return GraphUniversalTransformer(13, 11, num_steps=num_steps, **{**SMALL, **options})


def tied_transformer(model: GraphUniversalTransformer, norm_first: bool) -> GraphTransformerModel:
    """A GraphTransformerModel with num_steps encoder and decoder layers, each a copy of the shared layer."""
    t = model.num_steps
    reference = GraphTransformerModel(13, 11, num_encoder_layers=t, num_decoder_layers=t, norm_first=norm_first,
                                      **SMALL)
    state = {}
    for name, value in model.state_dict().items():
        stack, _, rest = name.partition(".")
        if stack in ("encoder", "decoder") and rest.startswith("layers.0."):
            for k in range(t):
                state[f"transformer.{stack}.layers.{k}.{rest[len('layers.0.'):]}"] = value
        elif stack in ("encoder", "decoder"):
            state[f"transformer.{stack}.{rest}"] = value
        else:
            state[name] = value
    reference.load_state_dict(state, strict=True)
    return reference


@pytest.mark.parametrize("norm_first", [False, True])
def test_halting_disabled_equals_tied_layers_of_the_paper_model(norm_first):
    model = universal(4, step_encoding=None, act=False, norm_first=norm_first)
    reference = tied_transformer(model, norm_first)
    data = batch()
    logits = model(data)
    expected = reference(data)
    assert relative_difference(logits, expected) < 1e-12
    # the shared layer's gradient is the sum over the T copies' gradients
    logits.square().sum().backward()
    expected.square().sum().backward()
    shared = model.decoder.layers[0].linear1.weight.grad
    copies = sum(reference.transformer.decoder.layers[k].linear1.weight.grad for k in range(4))
    assert relative_difference(shared, copies) < 1e-12


def test_halting_disabled_equals_a_loop_over_the_shared_layer_with_the_coordinate_embedding():
    layer = GraphTransformerEncoderLayer(16, 4, 24, 0.0, dtype=DT)
    coordinates = CoordinateEncoding(16)
    stack = UniversalStack(layer, 3, None, coordinates=coordinates)
    lengths = torch.tensor([4, 2])
    x, edges, position = torch.randn(6, 16, dtype=DT), graphs.complete(lengths), graphs.positions(lengths)
    y, _, ponder = stack(x, edges, position=position, act=False)
    h = x
    for t in (1, 2, 3):
        h = layer(h + coordinates(position, t, dtype=DT), edges)
    assert ponder is None
    assert relative_difference(y, h) < 1e-12
    # the coordinate embedding is sinusoidal in position and in the step, as the paper's P^t
    assert torch.allclose(coordinates(torch.tensor([0]), 0, DT)[0, 1::2], torch.full((8,), 2.0, dtype=DT))


def test_a_halting_unit_that_always_halts_at_step_one_equals_one_layer():
    model = universal(4).eval()
    for stack in (model.encoder, model.decoder):
        with torch.no_grad():
            stack.halting.linear.weight.zero_()
            stack.halting.linear.bias.fill_(50.0)  # p = 1 for every node
    one_layer = universal(1, act=False).eval()
    one_layer.load_state_dict({k: v for k, v in model.state_dict().items() if ".halting." not in k}, strict=True)
    data = batch()
    out = model.run(data)
    assert relative_difference(out.logits, one_layer(data)) < 1e-12
    assert out.source_ponder.steps.tolist() == [1] * 9 and out.target_ponder.steps.tolist() == [1] * 11
    assert torch.equal(out.target_ponder.cost, torch.full((11,), 2.0, dtype=DT))  # N + R = 1 + (1 - 0)


def test_act_step_by_hand():
    """p = (0.3, 0.5, 0.4) with threshold 0.99: N = 3, R = 0.2, y = 0.3 h1 + 0.5 h2 + 0.2 h3; a node with
    p = (0.995, ...) halts at once with R = 1; with T = 2 the second node is forced to halt at step 2."""
    x = torch.zeros(2, 1, dtype=DT)
    state = ACTState.start(x)
    p = [torch.tensor([0.3, 0.995], dtype=DT), torch.tensor([0.5, 0.1], dtype=DT), torch.tensor([0.4, 0.1], dtype=DT)]
    h = [torch.tensor([[1.0], [10.0]], dtype=DT), torch.tensor([[2.0], [20.0]], dtype=DT),
         torch.tensor([[3.0], [30.0]], dtype=DT)]
    for t in range(3):
        state = act_step(state, p[t], h[t], 0.99, last=t == 2)
    assert state.steps.tolist() == [3, 1]
    assert torch.allclose(state.remainder, torch.tensor([0.2, 1.0], dtype=DT))
    assert torch.allclose(state.output[:, 0], torch.tensor([0.3 + 1.0 + 0.6, 10.0], dtype=DT))
    assert state.state[:, 0].tolist() == [3.0, 10.0]  # the halted node keeps its state
    forced = ACTState.start(x)
    for t in range(2):
        forced = act_step(forced, torch.tensor([0.1, 0.1], dtype=DT), h[t], 0.99, last=t == 1)
    assert forced.steps.tolist() == [2, 2] and torch.allclose(forced.remainder, torch.tensor([0.9, 0.9], dtype=DT))


class ScriptedHalting(nn.Module):
    """Halting probabilities given per step (one row per call), to halt chosen nodes at chosen steps."""

    def __init__(self, rows):
        super().__init__()
        self.rows, self.calls = rows, 0

    def forward(self, h):
        row = self.rows[self.calls]
        self.calls += 1
        return row


def test_halted_nodes_keep_their_state_and_keep_sending_messages():
    """Node 0 halts after step 1, node 2 after step 2, the others run 3 steps; reference written out by hand."""
    layer = GraphTransformerEncoderLayer(16, 4, 24, 0.0, dtype=DT)
    rows = [torch.tensor(row, dtype=DT) for row in ([1.0, 0.2, 0.3, 0.2], [0.5, 0.2, 0.7, 0.2], [0.5, 0.2, 0.5, 0.2])]
    stack = UniversalStack(layer, 3, None, coordinates=CoordinateEncoding(16), halting=ScriptedHalting(rows))
    x, edges, position = torch.randn(4, 16, dtype=DT), graphs.complete([4]), torch.arange(4)
    y, _, ponder = stack(x, edges, position=position, act=True)
    assert ponder.steps.tolist() == [1, 3, 2, 3]
    h1 = layer(x + stack.coordinates(position, 1, DT), edges)
    state = h1.clone()
    h2 = layer(state + stack.coordinates(position, 2, DT), edges)  # node 0 sends from its step-1 state
    state[1:] = h2[1:]
    h3 = layer(state + stack.coordinates(position, 3, DT), edges)  # node 2 sends from its step-2 state
    expected = torch.stack([h1[0], 0.2 * h1[1] + 0.2 * h2[1] + 0.6 * h3[1], 0.3 * h1[2] + 0.7 * h2[2],
                            0.2 * h1[3] + 0.2 * h2[3] + 0.6 * h3[3]])
    assert relative_difference(y, expected) < 1e-12
    assert torch.allclose(ponder.remainder, torch.tensor([1.0, 0.6, 0.7, 0.6], dtype=DT))


def test_gradcheck_through_act():
    torch.manual_seed(3)
    layer = GraphTransformerEncoderLayer(4, 2, 6, 0.0, dtype=DT)
    halting = HaltingUnit(4, bias_init=0.0, dtype=DT)
    stack = UniversalStack(layer, 3, nn.LayerNorm(4, dtype=DT), coordinates=CoordinateEncoding(4), halting=halting,
                           act_threshold=0.9)
    edges, position = graphs.complete([3, 2]), graphs.positions(torch.tensor([3, 2]))
    x = torch.randn(5, 4, dtype=DT, requires_grad=True)
    _, _, ponder = stack(x, edges, position=position, act=True)
    assert len(set(ponder.steps.tolist())) > 1  # nodes halt at different steps

    assert torch.autograd.gradcheck(lambda x: stack(x, edges, position=position, act=True)[0], (x,))
    assert torch.autograd.gradcheck(lambda x: stack(x, edges, position=position, act=True)[2].cost, (x,))
    weight = halting.linear.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda w: torch.func.functional_call(stack, {"halting.linear.weight": w}, (x.detach(), edges),
                                             {"position": position, "act": True})[0], (weight,))


def decoding_model():
    model = universal(3, halting_bias_init=-1.0).eval()
    with torch.no_grad():
        model.generator.bias[EOS] -= 1.5
        for stack in (model.encoder, model.decoder):  # nodes halt after 1, 2 or 3 steps
            nn.init.normal_(stack.halting.linear.weight, std=2.0)
    return model


def sources():
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(2, 13, (n,), generator=generator) for n in (5, 1, 3, 7)]


@pytest.mark.parametrize("search, options", [
    pytest.param(greedy, dict(max_new_tokens=8, eos=EOS), id="greedy"),
    pytest.param(beam_search, dict(max_new_tokens=5, eos=EOS, beam_size=2), id="beam2"),
])
def test_decoding_on_a_growing_graph_equals_recomputation(search, options):
    model = decoding_model()
    inputs = sources()
    results = [search(scorer, **options) for scorer in (
        GrowingSeq2SeqGraph(model, inputs, BOS), RecomputedSeq2SeqGraph(model, inputs, BOS),
        RecomputedGraph(model, inputs, bos=BOS))]
    grown, *others = results
    assert sum(h.tokens.numel() for h in grown) > 2 * len(grown)
    for other in others:
        for a, b in zip(grown, other, strict=True):
            assert torch.equal(a.tokens, b.tokens)
            assert relative_difference(a.token_log_probs, b.token_log_probs) < 1e-10


def test_seeded_sampling_on_a_growing_graph_equals_recomputation_and_repeats():
    model, inputs = decoding_model(), sources()
    results = [sample(scorer, max_new_tokens=8, eos=EOS, temperature=1.5, generator=torch.Generator().manual_seed(3))
               for scorer in (GrowingSeq2SeqGraph(model, inputs, BOS), GrowingSeq2SeqGraph(model, inputs, BOS),
                              RecomputedSeq2SeqGraph(model, inputs, BOS))]
    grown, again, recomputed = results
    other_seed = sample(GrowingSeq2SeqGraph(model, inputs, BOS), max_new_tokens=8, eos=EOS, temperature=1.5,
                        generator=torch.Generator().manual_seed(4))
    assert any(not torch.equal(a.tokens, b.tokens) for a, b in zip(grown, other_seed))  # the seed matters
    for a, b, c in zip(grown, again, recomputed, strict=True):
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.tokens, c.tokens)
        assert relative_difference(a.token_log_probs, c.token_log_probs) < 1e-10


def test_decoding_records_the_steps_each_node_took_as_a_full_forward_does():
    model = decoding_model()
    source = sources()[0]
    scorer = GrowingSeq2SeqGraph(model, [source], BOS)
    hypothesis = greedy(scorer, max_new_tokens=6, eos=EOS)[0]
    target = torch.cat([torch.tensor([BOS]), hypothesis.tokens[:-1]])
    out = model.run(graphs.seq2seq_batch([source], [target]))
    assert torch.equal(scorer.state.extra["target_steps"], out.target_ponder.steps)
    assert torch.equal(scorer.state.extra["source_steps"], out.source_ponder.steps)
    assert len(set(out.target_ponder.steps.tolist() + out.source_ponder.steps.tolist())) > 1


def test_any_pattern_one_edge_set_per_step():
    model = universal(2, act=False).eval()
    data = batch()
    window = graphs.patterns.sliding_window(data["src"].ptr.diff(), 1)
    full = model(data)
    data["src", "to", "src"].edge_index = [window, window]
    sparse = model(data)
    assert not torch.allclose(full, sparse)  # the graph changes the result
    data["src", "to", "src"].edge_index = window
    assert torch.equal(model(data), sparse)  # one edge set for all steps == the same set per step


def test_ponder_cost_is_trained_on():
    """The Trainer's loss is (summed cross-entropy + tau * sum of N + R over all nodes) / target tokens."""
    from torch_geometric.data import Batch

    from gnn_transformer.training import Seq2SeqExamples, TrainConfig, Trainer
    from gnn_transformer.training.loop import token_loss

    model = universal(3, ponder_penalty=0.5, halting_bias_init=0.0)
    logits, cost = model(batch(), return_auxiliary_loss=True)
    out = model.run(batch())
    assert torch.allclose(cost, 0.5 * (out.source_ponder.cost.sum() + out.target_ponder.cost.sum()))
    assert model(batch(), act=False, return_auxiliary_loss=True)[1] == 0
    examples = Seq2SeqExamples([([2, 3, 4], [4, 3, 2]), ([5, 6], [6, 5])], BOS, EOS)
    data = Batch.from_data_list([examples[0], examples[1]])
    trainer = Trainer(model, TrainConfig(steps=1, batch_size=2, label_smoothing=0.1, progress=False))
    stats = trainer.backward(data)
    got = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    logits, cost = model(data, return_auxiliary_loss=True)
    loss_sum, tokens = token_loss(logits, data["tgt"].y, 0.1)
    ((loss_sum + cost) / tokens).backward()
    for name, p in model.named_parameters():
        assert relative_difference(got[name], p.grad) < 1e-12, name
    assert abs(stats["loss"] - float(loss_sum.detach()) / tokens) < 1e-12  # the reported loss is the cross-entropy
    assert float(model.encoder.halting.linear.bias.grad) != 0


def test_attention_sites_name_the_shared_layers():
    sites = universal(2).attention_sites()
    assert [(s.name, s.kind, s.layer) for s in sites] == [
        ("encoder.layers.0.self_attn", "encoder self", 0), ("decoder.layers.0.self_attn", "decoder self", 0),
        ("decoder.layers.0.multihead_attn", "cross", 0)]


@pytest.mark.parametrize("num_steps", [0, -1, 2.0, True])
def test_num_steps_below_one_is_refused(num_steps):
    with pytest.raises(ValueError, match="num_steps"):
        universal(num_steps)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01, float("nan")])
def test_threshold_outside_zero_one_is_refused(threshold):
    with pytest.raises(HaltingError, match=r"act_threshold must lie in \(0, 1\]"):
        universal(2, act_threshold=threshold)


def test_act_without_a_halting_unit_is_refused():
    model = universal(2, act=False)
    assert model.encoder.halting is None
    with pytest.raises(HaltingError, match="needs a halting unit"):
        model(batch(), act=True)
    model(batch())  # without ACT it runs
