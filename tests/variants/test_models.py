import pytest
import torch
from torch_geometric.data import Data

from gnn_transformer import GraphTransformerEncoderLayer, graphs
from gnn_transformer.core.norms import RMSNorm
from gnn_transformer.testing import relative_difference
from gnn_transformer.testing.dense_variants import rotate, variant_config, variant_parity
from gnn_transformer.variants import FEED_FORWARDS, GraphVariantModel, LearnedPositionalEmbedding, RotaryEmbedding

DT = torch.float64
BASE = dict(vocab_size=23, d_model=16, nhead=4, num_layers=2, dim_feedforward=24, dropout=0.0, dtype=DT,
            max_positions=16, num_buckets=8, max_distance=6)


def build(dtype=DT, **options):
    """A GraphVariantModel and the dense reference's configuration, both from the same options."""
    kwargs = {**BASE, "dtype": dtype, **options}
    return GraphVariantModel(**kwargs), variant_config(**kwargs)


def assert_matches_dense(model_and_config, causal: bool, tolerance=1e-10):
    """Logits at every real token and every parameter's gradient equal the dense reference's."""
    logits, gradient, worst = variant_parity(*model_and_config, causal)
    assert logits < tolerance and gradient < tolerance, f"logits {logits:.2e}, {worst} {gradient:.2e}"


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_norm_placement_and_kind(norm_first, norm):
    assert_matches_dense(build(norm_first=norm_first, norm=norm), causal=True)


@pytest.mark.parametrize("feed_forward", sorted(FEED_FORWARDS))
def test_feed_forwards(feed_forward):
    assert_matches_dense(build(feed_forward=feed_forward), causal=False)


@pytest.mark.parametrize("positions", ["sinusoidal", "learned", "rotary", "alibi", "t5", "none"])
@pytest.mark.parametrize("causal", [True, False])
def test_position_schemes(positions, causal):
    assert_matches_dense(build(positions=positions, bidirectional=not causal), causal=causal)


@pytest.mark.parametrize("tie_weights", [True, False])
@pytest.mark.parametrize("scale_embedding", [True, False])
def test_embeddings_tied_or_not(tie_weights, scale_embedding):
    model, config = build(tie_weights=tie_weights, scale_embedding=scale_embedding)
    assert (model.generator.weight is model.embed.weight) == tie_weights
    assert_matches_dense((model, config), causal=True)


@pytest.mark.parametrize("preset", [
    dict(norm="rms", feed_forward="swiglu", positions="rotary", tie_weights=False, bias=False),  # LLaMA-like
    dict(norm="rms", feed_forward="geglu", positions="t5", tie_weights=False, bias=False),  # T5 v1.1-like
    dict(norm_first=False, feed_forward="gelu", positions="learned", bias=True),  # BERT-like
])
def test_combinations_float32(preset):
    model = build(torch.float32, **preset, bidirectional=False)
    assert_matches_dense(model, causal=True, tolerance=1e-5)


def test_rotary_matches_the_complex_rotation_and_is_relative():
    rotary = RotaryEmbedding(8)
    x = torch.randn(5, 2, 8, dtype=DT)
    position = torch.arange(5)
    expected = rotate(x.transpose(0, 1).unsqueeze(0), 10000.0)[0].transpose(0, 1)  # (B, H, L, C) layout
    assert relative_difference(rotary(x, position), expected) < 1e-12
    q, k = torch.randn(1, 2, 8, dtype=DT), torch.randn(1, 2, 8, dtype=DT)
    score = lambda i, j: (rotary(q, torch.tensor([i])) * rotary(k, torch.tensor([j]))).sum(-1)  # noqa: E731
    assert torch.allclose(score(3, 1), score(9, 7)) and not torch.allclose(score(3, 1), score(3, 2))


def test_rotary_interleaved_pairs_neighbouring_channels():
    x = torch.randn(4, 1, 6, dtype=DT)
    position = torch.tensor([0, 1, 2, 7])
    order = torch.tensor([0, 2, 4, 1, 3, 5])  # interleaved channel 2m, 2m+1 <-> halves m, m + C/2
    interleaved = RotaryEmbedding(6, interleaved=True)(x, position)
    halves = RotaryEmbedding(6)(x[..., order], position)
    assert relative_difference(interleaved[..., order], halves) < 1e-12


def test_rms_norm_variance_dtype():
    x = torch.randn(3, 8, dtype=DT) * 10
    exact, t5 = RMSNorm(8), RMSNorm(8, variance_dtype=torch.float32)
    reference = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    assert relative_difference(exact(x), reference) < 1e-14
    assert 1e-12 < relative_difference(t5(x), reference) < 1e-6  # float32 mean square, as T5 computes it


def test_layer_options_have_no_torch_counterpart():
    for options in (dict(norm="rms"), dict(gated=True), dict(attention_scale=1.0), dict(head_dim=2),
                    dict(qk_transform=RotaryEmbedding(4))):
        layer = GraphTransformerEncoderLayer(8, 2, 16, **options)
        with pytest.raises(ValueError, match="no torch counterpart"):
            layer.to_torch()
    GraphTransformerEncoderLayer(8, 2, 16).to_torch()  # defaults still convert


def test_head_dim_other_than_d_model_over_heads():
    layer = GraphTransformerEncoderLayer(8, 2, 16, head_dim=6, dropout=0.0)
    assert layer.self_attn.in_proj_weight.shape == (36, 8) and layer.self_attn.out_proj.weight.shape == (8, 12)
    assert layer(torch.randn(5, 8), graphs.complete([5])).shape == (5, 8)


def test_bad_options():
    with pytest.raises(ValueError, match="positions should be one of"):
        GraphVariantModel(**BASE, positions="xpos")
    with pytest.raises(ValueError, match="feed_forward should be one of"):
        GraphVariantModel(**BASE, feed_forward="swish")
    with pytest.raises(ValueError, match="norm should be one of"):
        GraphVariantModel(**BASE, norm="batch")
    with pytest.raises(ValueError, match="even head_dim"):
        RotaryEmbedding(5)
    with pytest.raises(TypeError, match="integers"):
        RotaryEmbedding(4)(torch.randn(2, 1, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 4\)"):
        LearnedPositionalEmbedding(4, 8)(torch.tensor([1, 4]))
    with pytest.raises(ValueError, match=r"data is missing \['position', 'edge_index'\]"):
        GraphVariantModel(**BASE)(Data(x=torch.tensor([1, 2])))
