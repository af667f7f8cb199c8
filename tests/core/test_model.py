import pytest
import torch
from torch_geometric.data import Batch

from gnn_transformer import GraphDecoderModel, GraphEncoderModel, GraphSequenceModel, GraphTransformerModel, graphs
from gnn_transformer.core.model import paper_parts
from gnn_transformer.core.embedding import sinusoidal_encoding
from gnn_transformer.testing import compare_functions
from gnn_transformer.testing.dense_models import DenseSingleStackModel, DenseTransformerModel, sinusoidal_table

DT = torch.float64
SMALL = dict(d_model=16, nhead=4, dim_feedforward=32, dropout=0.0, dtype=DT)


def ragged_tokens(lengths, vocab, generator):
    return [torch.randint(vocab, (n,), generator=generator) for n in lengths]


def padded(sequences):
    out = torch.zeros(len(sequences), max(len(s) for s in sequences), dtype=torch.long)
    for row, sequence in zip(out, sequences):
        row[: len(sequence)] = sequence
    return out


@pytest.mark.parametrize("tie_weights", ["none", "output", "all"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_decoder_model_matches_dense_reference(tie_weights, norm_first):
    generator = torch.Generator().manual_seed(0)
    model = GraphTransformerModel(13, 13 if tie_weights == "all" else 9, num_encoder_layers=2,
                                  num_decoder_layers=2, norm_first=norm_first, tie_weights=tie_weights, **SMALL)
    reference = DenseTransformerModel(model)
    src = ragged_tokens([5, 1, 3], 13, generator)
    tgt = ragged_tokens([2, 4, 1], model.generator.out_features, generator)
    src_lengths, tgt_lengths = torch.tensor([5, 1, 3]), torch.tensor([2, 4, 1])
    batch = graphs.seq2seq_batch(src, tgt)
    report = compare_functions(
        lambda: graphs.to_padded(model(batch), tgt_lengths), model,
        lambda: reference(padded(src), padded(tgt), src_lengths, tgt_lengths)
        * (~graphs.padding_mask(tgt_lengths)).unsqueeze(-1), reference, [])
    assert report.passed, report
    if tie_weights != "none":
        assert model.generator.weight is model.tgt_embed.weight
    assert (model.src_embed is model.tgt_embed) == (tie_weights == "all")


@pytest.mark.parametrize("model_class, causal", [(GraphEncoderModel, False), (GraphDecoderModel, True)])
@pytest.mark.parametrize("tie_weights", [False, True])
def test_single_stack_models_match_dense_reference(model_class, causal, tie_weights):
    generator = torch.Generator().manual_seed(1)
    model = model_class(11, num_layers=2, tie_weights=tie_weights, **SMALL)
    reference = DenseSingleStackModel(model, causal=causal)
    tokens = ragged_tokens([4, 1, 6], 11, generator)
    lengths = torch.tensor([4, 1, 6])
    data = Batch.from_data_list([graphs.sequence_data(t, model.graph) for t in tokens])  # the model's own graph
    report = compare_functions(
        lambda: graphs.to_padded(model(data), lengths), model,
        lambda: reference(padded(tokens), lengths) * (~graphs.padding_mask(lengths)).unsqueeze(-1), reference, [])
    assert report.passed, report


def test_decoder_only_model_is_causal():
    model = GraphDecoderModel(7, num_layers=2, **SMALL).eval()
    tokens = torch.tensor([1, 2, 3, 4])
    changed = tokens.clone()
    changed[-1] = 6
    a = model(graphs.sequence_data(tokens, "causal"))
    b = model(graphs.sequence_data(changed, "causal"))
    assert torch.equal(a[:-1], b[:-1]) and not torch.allclose(a[-1], b[-1])


def test_probabilities():
    model = GraphTransformerModel(10, **SMALL, num_encoder_layers=1, num_decoder_layers=1)
    batch = graphs.seq2seq_batch([torch.tensor([1, 2])], [torch.tensor([3, 4, 5])])
    probs = model.probs(batch)
    assert probs.shape == (3, 10) and torch.allclose(probs.sum(-1), torch.ones(3, dtype=DT))
    assert torch.allclose(model.log_probs(batch).exp(), probs)


def test_positional_encoding_is_the_papers_table():
    position = torch.tensor([0, 3, 1, 7, 2])
    assert torch.allclose(sinusoidal_encoding(position, 10, dtype=DT), sinusoidal_table(8, 10, DT)[position])
    odd = sinusoidal_encoding(torch.arange(3), 7, dtype=DT)
    assert odd.shape == (3, 7) and torch.allclose(odd[1, 0], torch.sin(torch.tensor(1.0, dtype=DT)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="needs one vocabulary"):
        GraphTransformerModel(10, 12, tie_weights="all", **SMALL)
    with pytest.raises(ValueError, match="tie_weights must be one of"):
        GraphTransformerModel(10, tie_weights="some", **SMALL)
    model = GraphTransformerModel(10, **SMALL, num_encoder_layers=1, num_decoder_layers=1)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 10\)"):
        model(graphs.seq2seq_batch([torch.tensor([1, 12])], [torch.tensor([3])]))
    data = graphs.sequence_data(torch.tensor([1, 2]))
    del data.position
    with pytest.raises(ValueError, match=r"data is missing \['position'\]"):
        GraphEncoderModel(5, num_layers=1, **SMALL)(data)


# One model from parts: GraphEncoderModel / GraphDecoderModel are the paper's parts on a graph.


@pytest.mark.parametrize("model_class, builder, causal", [(GraphEncoderModel, graphs.complete, False),
                                                          (GraphDecoderModel, graphs.causal, True)])
def test_the_graph_is_a_part_of_the_model_not_a_class_tag(model_class, builder, causal):
    model = model_class(9, num_layers=1, **SMALL)
    assert isinstance(model, GraphSequenceModel) and not hasattr(model_class, "graph")
    assert model.graph.name == builder.__name__ and model.graph.causal is causal
    lengths = [3, 1, 4]
    assert torch.equal(model.graph_for(lengths), builder(lengths))


def test_single_stack_keeps_torchs_keys_and_loads_into_the_one_model_built_from_parts():
    """GraphDecoderModel's checkpoints: the stack has torch.nn.TransformerEncoder's keys, and the state
    loads (strict) into a GraphSequenceModel assembled from paper_parts, which computes the same."""
    old = GraphDecoderModel(9, num_layers=2, tie_weights=True, **SMALL).eval()
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32)
    torch_keys = torch.nn.TransformerEncoder(layer, 2, torch.nn.LayerNorm(16), enable_nested_tensor=False).state_dict()
    assert set(old.state_dict()) == {"embed.embedding.weight", "generator.weight", "generator.bias",
                                     *(f"encoder.{key}" for key in torch_keys)}
    parts = paper_parts(9, num_layers=2, tie_weights=True, **SMALL)
    new = GraphSequenceModel(**parts, graph=graphs.causal).eval()
    new.load_state_dict(old.state_dict(), strict=True)
    assert new.generator.weight is new.embed.embedding.weight  # the tie survives loading
    data = graphs.sequence_data(torch.tensor([1, 5, 2, 8]), new.graph)
    assert torch.equal(new(data), old(data))


def test_models_call_their_stacks_so_that_hooks_fire():
    seen = []
    single = GraphEncoderModel(9, num_layers=1, **SMALL)
    single.encoder.register_forward_hook(lambda module, inputs, output: seen.append("single"))
    single(graphs.sequence_data(torch.tensor([1, 2, 3])))
    pair = GraphTransformerModel(9, num_encoder_layers=1, num_decoder_layers=1, **SMALL)
    for name in ("encoder", "decoder"):
        getattr(pair.transformer, name).register_forward_hook(lambda module, inputs, output, n=name: seen.append(n))
    pair(graphs.seq2seq_batch([torch.tensor([1, 2])], [torch.tensor([3, 4, 5])]))
    assert seen == ["single", "encoder", "decoder"]


def test_a_pattern_as_the_models_graph():
    window = graphs.sequence_graph("window", radius=1, causal=True)
    model = GraphSequenceModel(**paper_parts(9, num_layers=2, **SMALL), graph=window).eval()
    assert repr(model.graph) == "window(radius=1, causal=True)" and model.graph.causal is True
    tokens = torch.tensor([4, 1, 7, 2, 2])
    data = graphs.sequence_data(tokens, model.graph)
    assert torch.equal(data.edge_index, graphs.causal([5], window=2))  # radius 1, causal: itself and one before
    changed = tokens.clone()
    changed[0] = 8  # the last token is 4 hops away and 2 layers reach 2 hops: it cannot see the change
    assert torch.equal(model(data)[-1], model(graphs.sequence_data(changed, model.graph))[-1])


def test_a_model_without_a_graph_says_so():
    model = GraphSequenceModel(**paper_parts(9, num_layers=1, **SMALL))
    assert model.graph is None
    with pytest.raises(ValueError, match="built without a graph"):
        model.graph_for([3])
    with pytest.raises(TypeError, match="graph must be a SequenceGraph"):
        GraphSequenceModel(**paper_parts(9, num_layers=1, **SMALL), graph=3)
