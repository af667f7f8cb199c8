"""Property-based equivalence: random lengths, padding patterns and masks (hypothesis)."""
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from gnn_transformer import GraphMultiheadAttention, GraphTransformerDecoderLayer, GraphTransformerEncoderLayer, graphs
from gnn_transformer.testing import assert_matches_torch, compare_functions

DT = torch.float64
D, H = 8, 2

torch.manual_seed(0)
MHA = nn.MultiheadAttention(D, H, dtype=DT)
ENCODER = nn.TransformerEncoderLayer(D, H, 16, dropout=0.0, dtype=DT, batch_first=True)
DECODER = nn.TransformerDecoderLayer(D, H, 16, dropout=0.0, dtype=DT, norm_first=True)
GRAPH_MHA = GraphMultiheadAttention.from_torch(MHA)
GRAPH_ENCODER = GraphTransformerEncoderLayer.from_torch(ENCODER)
GRAPH_DECODER = GraphTransformerDecoderLayer.from_torch(DECODER)


@st.composite
def padded_batches(draw, max_batch=4, max_len=7):
    batch = draw(st.integers(1, max_batch))
    length = draw(st.integers(1, max_len))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(length, batch, D, generator=generator, dtype=DT)
    padding = torch.rand(batch, length, generator=generator) < draw(st.floats(0.0, 0.9))
    return x, padding, generator


@st.composite
def masks(draw, rows, cols, generator):
    kind = draw(st.sampled_from(["none", "bool", "float", "causal"]))
    if kind == "none":
        return None
    if kind == "causal":
        return torch.ones(rows, cols, dtype=torch.bool).triu(1)
    blocked = torch.rand(rows, cols, generator=generator) < draw(st.floats(0.0, 1.0))
    if kind == "bool":
        return blocked
    return torch.randn(rows, cols, generator=generator, dtype=DT).masked_fill(blocked, float("-inf"))


@given(data=st.data())
def test_attention_matches_torch_on_random_masks(data):
    (query, _, generator), (key, padding, _) = data.draw(padded_batches()), data.draw(padded_batches())
    if query.size(1) != key.size(1):
        query = query[:, :1].expand(-1, key.size(1), -1).contiguous()
    attn_mask = data.draw(masks(query.size(0), key.size(0), generator))
    assert_matches_torch(GRAPH_MHA, MHA, query, key, key, key_padding_mask=padding, attn_mask=attn_mask,
                         need_weights=False)


@given(data=st.data())
def test_encoder_layer_matches_torch_on_random_padding(data):
    x, padding, generator = data.draw(padded_batches())
    x = x.transpose(0, 1)
    mask = data.draw(masks(x.size(1), x.size(1), generator))
    assert_matches_torch(GRAPH_ENCODER, ENCODER, x, src_mask=mask, src_key_padding_mask=padding)


@given(data=st.data())
def test_decoder_layer_matches_torch_on_random_padding(data):
    tgt, tgt_padding, generator = data.draw(padded_batches())
    memory, memory_padding, _ = data.draw(padded_batches())
    batch = min(tgt.size(1), memory.size(1))
    tgt, memory = tgt[:, :batch], memory[:, :batch]
    tgt_padding, memory_padding = tgt_padding[:batch], memory_padding[:batch]
    tgt_mask = data.draw(masks(tgt.size(0), tgt.size(0), generator))
    memory_mask = data.draw(masks(tgt.size(0), memory.size(0), generator))
    assert_matches_torch(GRAPH_DECODER, DECODER, tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                         tgt_key_padding_mask=tgt_padding, memory_key_padding_mask=memory_padding)


@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5), seed=st.integers(0, 2**16))
def test_graph_call_on_any_ragged_batch(lengths, seed):
    lengths = torch.tensor(lengths)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), int(lengths.max()), D, generator=generator, dtype=DT)
    padding = graphs.padding_mask(lengths)
    report = compare_functions(
        lambda h: graphs.to_padded(GRAPH_ENCODER(graphs.to_nodes(h, lengths), graphs.causal(lengths)), lengths),
        GRAPH_ENCODER,
        lambda h: ENCODER(h, src_mask=torch.ones(h.size(1), h.size(1), dtype=torch.bool).triu(1),
                          src_key_padding_mask=padding) * (~padding).unsqueeze(-1), ENCODER, [x])
    assert report.passed, report


@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5))
def test_builders_agree_with_block_diagonal_masks(lengths):
    """complete/causal graphs are the allowed entries of block-diagonal (and lower-triangular) masks."""
    if sum(lengths) == 0:
        assert graphs.complete(lengths).shape == graphs.causal(lengths).shape == (2, 0)
        return
    batch, position = graphs.batch_vector(lengths), graphs.positions(lengths)
    same_sequence = batch[:, None] == batch[None, :]  # (query, key)
    for builder, allowed in ((graphs.complete, same_sequence),
                             (graphs.causal, same_sequence & (position[None, :] <= position[:, None]))):
        target, source = allowed.nonzero(as_tuple=True)
        assert torch.equal(builder(lengths), torch.stack([source, target]))
