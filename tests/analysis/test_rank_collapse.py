import pytest
import torch

from gnn_transformer import graphs
from gnn_transformer.analysis import (
    ARCHITECTURES,
    CollapseBlock,
    default_graphs,
    format_rank_collapse,
    rank_collapse,
    relative_residual,
)

DT = torch.float64


def test_relative_residual_per_sequence():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, generator=generator, dtype=DT), torch.randn(2, 3, generator=generator, dtype=DT)
    rank_one = torch.ones(3, 1, dtype=DT) * torch.tensor([[1.0, -2.0, 0.5]], dtype=DT)
    x = torch.cat([a, b, rank_one])
    residual = relative_residual(x, [4, 2, 3])
    for index, block in enumerate((a, b)):  # by hand: Frobenius norm with the mean row
        assert residual[index] == pytest.approx(float((block - block.mean(0)).norm() / block.norm()))
    assert residual[2] == 0
    composite = relative_residual(x, [4, 2, 3], norm="l1,inf")
    r = a - a.mean(0)
    norm = lambda m: (m.abs().sum(0).max() * m.abs().sum(1).max()).sqrt()  # noqa: E731
    assert composite[0] == pytest.approx(float(norm(r) / norm(a)))
    with pytest.raises(ValueError, match="norm must be one of"):
        relative_residual(x, [4, 2, 3], norm="nuclear")
    with pytest.raises(ValueError, match="add up to 8 tokens but x has 9 rows"):
        relative_residual(x, [4, 2, 2])


def test_transformer_layer_block_is_the_post_norm_encoder_layer():
    torch.manual_seed(0)
    block = CollapseBlock(8, 2, *ARCHITECTURES["transformer layer"], dim_feedforward=16, dtype=DT)
    from gnn_transformer import GraphTransformerEncoderLayer

    layer = GraphTransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=DT)
    state = {k.replace("mlp.0", "linear1").replace("mlp.2", "linear2"): v for k, v in block.state_dict().items()}
    layer.load_state_dict(state, strict=True)
    x, edge_index = torch.randn(5, 8, dtype=DT), graphs.complete([5])
    assert torch.allclose(block(x, edge_index), layer(x, edge_index), atol=1e-13)


def test_pure_attention_collapses_and_skip_connections_stop_it():
    chosen = {name: build for name, build in default_graphs().items() if name != "random k=3"}
    result = rank_collapse(chosen, ["attention", "attention + skip"], depth=4, lengths=[16] * 4, d_model=32, nhead=4)
    pure, skip = result.mean("attention", "complete"), result.mean("attention + skip", "complete")
    assert pure[0] > 0.9 and pure[3] < 1e-8  # far below float32's resolution after 3 layers
    # exponential decay res_l ~ c^l gives log res_{l+1} / log res_l = (l + 1) / l: 2 at l = 1, 1.5 at l = 2;
    # doubly exponential decay multiplies the exponent by much more
    assert pure[2].log() / pure[1].log() > 4 and pure[3].log() / pure[2].log() > 3
    causal = result.mean("attention", "causal")  # merely exponential on the causal graph
    assert 1 < causal[3].log() / causal[2].log() < 2 and 1 < causal[4].log() / causal[3].log() < 2
    assert skip[4] > 0.5
    # the graph sets the rate: a radius-2 window keeps most of the residual, the complete graph none
    assert result.mean("attention", "window r=2")[4] > 0.5
    assert set(result.residuals["attention"]) == {"complete", "causal", "window r=2"}
    assert list(default_graphs(radius=3, num_random=5)) == ["complete", "causal", "window r=3", "random k=5"]
    text = format_rank_collapse(result)
    assert "attention + skip" in text and "L=4" in text and "frobenius" in text
    with pytest.raises(ValueError, match="unknown architectures"):
        rank_collapse(architectures=["attention only"])
