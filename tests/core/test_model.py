import pytest
import torch
from torch_geometric.data import Batch

from gnn_transformer import GraphDecoderModel, GraphEncoderModel, GraphTransformerModel, graphs
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
    data = Batch.from_data_list([graphs.sequence_data(t, model_class.graph) for t in tokens])
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
