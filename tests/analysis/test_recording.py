import pytest
import torch
from torch_geometric.utils import scatter

from gnn_transformer import GraphDecoderModel, GraphEncoderModel, GraphTransformerModel, graphs
from gnn_transformer.core.functional import edge_softmax
from gnn_transformer.analysis.recording import attention_kind, record


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GraphTransformerModel(10, d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=2,
                                 dim_feedforward=16, dtype=torch.float64, backend="chunked").eval()


@pytest.fixture
def batch():
    return graphs.seq2seq_batch([torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6])],
                                [torch.tensor([0, 7, 8]), torch.tensor([0, 9])])


def test_attention_kind_from_names():
    assert attention_kind("transformer.encoder.layers.0.self_attn") == ("encoder self", 0)
    assert attention_kind("transformer.decoder.layers.3.self_attn") == ("decoder self", 3)
    assert attention_kind("transformer.decoder.layers.1.multihead_attn") == ("cross", 1)
    assert attention_kind("encoder.layers.2.self_attn") == ("encoder self", 2)
    assert attention_kind("attn") == ("attn", None)


def test_records_every_attention_as_message_passing(model, batch):
    with record(model) as recording:
        logits = model(batch)
    kinds = [(entry.kind, entry.layer) for entry in recording.attention]
    assert kinds == [("encoder self", 0), ("encoder self", 1), ("decoder self", 0), ("cross", 0),
                     ("decoder self", 1), ("cross", 1)]
    for entry in recording.attention:
        num_targets = entry.query.size(0)
        source, target = entry.edge_index
        torch.testing.assert_close(edge_softmax(entry.scores, target, num_targets), entry.weights, rtol=0, atol=1e-15)
        expected = (entry.query[target] * entry.key[source]).sum(-1) / 2.0  # head_dim 4: scale 1/2
        torch.testing.assert_close(entry.scores, expected, rtol=0, atol=1e-15)
        summed = scatter(entry.messages, target, dim=0, dim_size=num_targets, reduce="sum")
        torch.testing.assert_close(summed, entry.aggregated, rtol=0, atol=1e-14)
        torch.testing.assert_close(entry.concatenated, entry.aggregated.flatten(1), rtol=0, atol=0)
    assert torch.equal(recording.output("generator"), logits.detach())


def test_recorded_weights_are_the_models(model, batch):
    with record(model) as recording:
        memory = model.encode(batch)
        _, weights = model.decode(batch, memory, return_attention_weights=True)
    for layer, layer_weights in enumerate(weights):
        torch.testing.assert_close(recording.attention_of("decoder self", layer).weights, layer_weights["self"])
        torch.testing.assert_close(recording.attention_of("cross", layer).weights, layer_weights["cross"])
    torch.testing.assert_close(recording.output("transformer.encoder.norm"), memory, rtol=0, atol=0)


def test_recording_restores_backends_and_hooks(model, batch):
    with record(model) as recording:
        assert model.transformer.encoder.layers[0].self_attn.backend == "reference"
        model(batch)
    count = len(recording.calls)
    model(batch)
    assert len(recording.calls) == count
    attention = model.transformer.encoder.layers[0].self_attn
    assert attention.backend == "chunked" and "attend" not in attention.__dict__
    with pytest.raises(RuntimeError, match="boom"), record(model):
        raise RuntimeError("boom")
    assert attention.backend == "chunked" and "attend" not in attention.__dict__


def test_single_stack_models_are_recorded():
    torch.manual_seed(0)
    model = GraphDecoderModel(12, d_model=8, nhead=2, num_layers=2, dim_feedforward=16).eval()
    data = graphs.sequence_data(torch.tensor([1, 2, 3]), "causal")
    with record(model) as recording:
        model(data)
    # the kind comes from the model's attention_sites(): a decoder-only stack's self-attention is causal
    assert [(e.kind, e.layer) for e in recording.attention] == [("decoder self", 0), ("decoder self", 1)]
    assert recording.attention[0].edge_index.size(1) == 6
    encoder = GraphEncoderModel(12, d_model=8, nhead=2, num_layers=1, dim_feedforward=16).eval()
    with record(encoder) as recording:
        encoder(graphs.sequence_data(torch.tensor([1, 2, 3]), "complete"))
    assert [(e.kind, e.layer) for e in recording.attention] == [("encoder self", 0)]


def test_bad_use_is_named(model, batch):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        with record("model"):
            pass
    with record(model) as recording:
        model(batch)
    with pytest.raises(KeyError, match="no call of a module named 'nope'"):
        recording.output("nope")
    with pytest.raises(KeyError, match="no 'cross' attention of layer 5"):
        recording.attention_of("cross", 5)



def test_record_inference_runs_in_eval_mode_and_restores_the_mode(batch):
    from gnn_transformer.analysis.recording import record_inference

    torch.manual_seed(0)
    model = GraphTransformerModel(10, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                  dim_feedforward=16, dropout=0.5).train()
    with record_inference(model) as first:
        assert not model.training and not torch.is_grad_enabled()
        model(batch)
    with record_inference(model) as second:
        model(batch)
    assert model.training  # restored
    assert torch.equal(first.attention[0].weights, second.attention[0].weights)  # no dropout: the same run twice
    assert torch.equal(first.output("generator"), model.eval()(batch).detach())
