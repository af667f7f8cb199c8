"""The equivalence suite behind ``gnn-transformer check``.

Every graph module is built from a ``torch.nn`` module with random weights
(``from_torch``: a strict ``load_state_dict``), then both run on the same random
ragged batch and are compared, outputs and gradients, with
:func:`gnn_transformer.testing.compare_functions`:

* the *dense* call feeds both the same padded tensors and masks and compares every
  position, padded ones included;
* the *graph* call feeds the graph module only the real tokens and the explicit
  graphs (complete, causal, bipartite), and compares against torch at the real
  positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from . import graphs
from .attention import GraphMultiheadAttention
from .layers import GraphTransformerDecoderLayer, GraphTransformerEncoderLayer
from .model import GraphTransformerModel
from .testing import ParityReport, compare_functions, compare_with_torch
from .testing.dense_models import DenseTransformerModel
from .transformer import GraphTransformer, GraphTransformerDecoder, GraphTransformerEncoder


@dataclass
class CheckConfig:
    """The model and batch the suite compares (defaults: the paper's base model)."""

    d_model: int = 512
    nhead: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    norm_first: bool = False
    activation: str = "relu"
    dtype: torch.dtype = torch.float64
    device: str = "cpu"
    seed: int = 0
    batch_size: int = 4
    max_src_len: int = 12
    max_tgt_len: int = 9
    vocab_size: int = 50


@dataclass
class Row:
    module: str
    graph: str
    call: str
    edges: int
    report: ParityReport


class _Batch:
    """A random ragged batch, padded (batch first) with torch masks, and as graphs."""

    def __init__(self, config: CheckConfig) -> None:
        generator = torch.Generator().manual_seed(config.seed)
        b, s, t = config.batch_size, config.max_src_len, config.max_tgt_len
        self.src_lengths = torch.randint(1, s + 1, (b,), generator=generator)
        self.tgt_lengths = torch.randint(1, t + 1, (b,), generator=generator)
        self.src_lengths[0], self.src_lengths[-1] = s, 1  # longest and length-1 sequences
        self.tgt_lengths[-1], self.tgt_lengths[0] = t, 1
        factory = {"dtype": config.dtype, "device": config.device}
        self.src = torch.randn(b, s, config.d_model, generator=generator).to(**factory)  # (B, S, d)
        self.tgt = torch.randn(b, t, config.d_model, generator=generator).to(**factory)  # (B, T, d)
        self.src_padding = graphs.padding_mask(self.src_lengths, s).to(config.device)  # (B, S) True = pad
        self.tgt_padding = graphs.padding_mask(self.tgt_lengths, t).to(config.device)
        self.causal = torch.ones(t, t, dtype=torch.bool, device=config.device).triu(1)  # (T, T) True = blocked
        self.src_graph = graphs.complete(self.src_lengths).to(config.device)
        self.tgt_graph = graphs.causal(self.tgt_lengths).to(config.device)
        self.cross_graph = graphs.bipartite(self.src_lengths, self.tgt_lengths).to(config.device)
        self.src_tokens = torch.randint(config.vocab_size, (b, s), generator=generator).to(config.device)
        self.tgt_tokens = torch.randint(config.vocab_size, (b, t), generator=generator).to(config.device)

    @staticmethod
    def pack(x: Tensor, padding: Tensor) -> Tensor:
        return x[~padding]  # (N, d): the real tokens, in batch order

    @staticmethod
    def unpack(nodes: Tensor, padding: Tensor) -> Tensor:
        out = nodes.new_zeros(*padding.shape, nodes.size(-1))
        out[~padding] = nodes
        return out

    def dense_edges(self, attn_mask, padding, tgt_len, src_len, heads) -> int:
        edges, _ = graphs.edges_from_mask(attn_mask, padding, batch_size=len(self.src_lengths),
                                          tgt_len=tgt_len, src_len=src_len, num_heads=heads)
        return edges.size(1)


def _layer_kwargs(config: CheckConfig) -> dict:
    return dict(dim_feedforward=config.dim_feedforward, dropout=0.0, activation=config.activation,
                batch_first=True, norm_first=config.norm_first, dtype=config.dtype, device=config.device)


def _torch_modules(config: CheckConfig) -> dict[str, nn.Module]:
    d, h = config.d_model, config.nhead
    norm = dict(dtype=config.dtype, device=config.device)
    encoder_layer = nn.TransformerEncoderLayer(d, h, **_layer_kwargs(config))
    decoder_layer = nn.TransformerDecoderLayer(d, h, **_layer_kwargs(config))
    return {
        "attention": nn.MultiheadAttention(d, h, batch_first=True, **norm),
        "encoder_layer": encoder_layer,
        "decoder_layer": decoder_layer,
        "encoder": nn.TransformerEncoder(encoder_layer, config.num_encoder_layers, nn.LayerNorm(d, **norm),
                                         enable_nested_tensor=False),
        "decoder": nn.TransformerDecoder(decoder_layer, config.num_decoder_layers, nn.LayerNorm(d, **norm)),
        "transformer": nn.Transformer(d, h, config.num_encoder_layers, config.num_decoder_layers,
                                      **_layer_kwargs(config)),
    }


def _cases(config: CheckConfig) -> Iterator[Callable[[], Row]]:
    """One thunk per row, so a progress bar can advance while rows are computed."""
    torch.manual_seed(config.seed)
    data = _Batch(config)
    modules = _torch_modules(config)
    h, s, t = config.nhead, config.max_src_len, config.max_tgt_len
    mha = modules["attention"]
    graph_mha = GraphMultiheadAttention.from_torch(mha)
    complete_edges = data.dense_edges(None, data.src_padding, s, s, h)
    causal_edges = data.dense_edges(data.causal, data.tgt_padding, t, t, h)
    cross_edges = data.dense_edges(None, data.src_padding, t, s, h)
    float_mask = torch.randn(s, s, dtype=config.dtype, device=config.device).masked_fill(
        torch.rand(s, s, device=config.device) < 0.3, float("-inf"))

    def dense(name, graph, edges, graph_module, torch_module, *args, **kwargs):
        return lambda: Row(name, graph, "dense", edges, compare_with_torch(graph_module, torch_module, *args, **kwargs))

    yield dense("GraphMultiheadAttention", "complete", complete_edges, graph_mha, mha, data.src, data.src, data.src,
                key_padding_mask=data.src_padding, average_attn_weights=False)
    yield dense("GraphMultiheadAttention", "complete + float-mask biases", data.dense_edges(float_mask, None, s, s, h),
                graph_mha, mha, data.src, data.src, data.src, attn_mask=float_mask, need_weights=False)
    yield dense("GraphMultiheadAttention", "causal", causal_edges, graph_mha, mha, data.tgt, data.tgt, data.tgt,
                attn_mask=data.causal, key_padding_mask=data.tgt_padding, need_weights=False)
    yield dense("GraphMultiheadAttention", "bipartite", cross_edges, graph_mha, mha, data.tgt, data.src, data.src,
                key_padding_mask=data.src_padding, need_weights=False)

    pack, unpack = data.pack, data.unpack
    sp, tp = data.src_padding, data.tgt_padding
    real_src, real_tgt = (~sp).unsqueeze(-1), (~tp).unsqueeze(-1)
    num = {"src": data.src_graph.size(1), "tgt": data.tgt_graph.size(1), "cross": data.cross_graph.size(1)}

    encoder_layer = modules["encoder_layer"]
    graph_encoder_layer = GraphTransformerEncoderLayer.from_torch(encoder_layer)
    yield dense("GraphTransformerEncoderLayer", "complete", complete_edges, graph_encoder_layer, encoder_layer, data.src,
                src_key_padding_mask=sp)
    yield lambda: Row("GraphTransformerEncoderLayer", "complete", "graph", num["src"], compare_functions(
        lambda x: unpack(graph_encoder_layer(pack(x, sp), data.src_graph), sp), graph_encoder_layer,
        lambda x: encoder_layer(x, src_key_padding_mask=sp) * real_src, encoder_layer, [data.src]))

    decoder_layer = modules["decoder_layer"]
    graph_decoder_layer = GraphTransformerDecoderLayer.from_torch(decoder_layer)
    yield dense("GraphTransformerDecoderLayer", "causal + bipartite", causal_edges + cross_edges, graph_decoder_layer, decoder_layer,
                data.tgt, data.src, tgt_mask=data.causal, tgt_key_padding_mask=tp, memory_key_padding_mask=sp)
    yield lambda: Row("GraphTransformerDecoderLayer", "causal + bipartite", "graph", num["tgt"] + num["cross"],
                      compare_functions(
        lambda y, x: unpack(graph_decoder_layer(pack(y, tp), pack(x, sp), data.tgt_graph, data.cross_graph), tp), graph_decoder_layer,
        lambda y, x: decoder_layer(y, x, tgt_mask=data.causal, tgt_key_padding_mask=tp, memory_key_padding_mask=sp) * real_tgt,
        decoder_layer, [data.tgt, data.src]))

    encoder = modules["encoder"]
    graph_encoder = GraphTransformerEncoder.from_torch(encoder)
    yield dense("GraphTransformerEncoder", "complete", complete_edges, graph_encoder, encoder, data.src,
                src_key_padding_mask=sp)
    yield lambda: Row("GraphTransformerEncoder", "complete", "graph", num["src"], compare_functions(
        lambda x: unpack(graph_encoder(pack(x, sp), data.src_graph), sp), graph_encoder,
        lambda x: encoder(x, src_key_padding_mask=sp) * real_src, encoder, [data.src]))

    decoder = modules["decoder"]
    graph_decoder = GraphTransformerDecoder.from_torch(decoder)
    yield dense("GraphTransformerDecoder", "causal + bipartite", causal_edges + cross_edges, graph_decoder, decoder,
                data.tgt, data.src, tgt_mask=data.causal, tgt_key_padding_mask=tp, memory_key_padding_mask=sp)
    yield lambda: Row("GraphTransformerDecoder", "causal + bipartite", "graph", num["tgt"] + num["cross"],
                      compare_functions(
        lambda y, x: unpack(graph_decoder(pack(y, tp), pack(x, sp), data.tgt_graph, data.cross_graph), tp),
        graph_decoder,
        lambda y, x: decoder(y, x, tgt_mask=data.causal, tgt_key_padding_mask=tp, memory_key_padding_mask=sp)
        * real_tgt, decoder, [data.tgt, data.src]))

    transformer = modules["transformer"]
    graph_transformer = GraphTransformer.from_torch(transformer)
    all_dense = complete_edges + causal_edges + cross_edges
    all_graph = num["src"] + num["tgt"] + num["cross"]
    yield dense("GraphTransformer", "complete + causal + bipartite", all_dense, graph_transformer, transformer,
                data.src, data.tgt, tgt_mask=data.causal, src_key_padding_mask=sp, tgt_key_padding_mask=tp,
                memory_key_padding_mask=sp)
    yield lambda: Row("GraphTransformer", "complete + causal + bipartite", "graph", all_graph, compare_functions(
        lambda x, y: unpack(graph_transformer(pack(x, sp), pack(y, tp), data.src_graph, data.tgt_graph,
                                              data.cross_graph), tp), graph_transformer,
        lambda x, y: transformer(x, y, tgt_mask=data.causal, src_key_padding_mask=sp, tgt_key_padding_mask=tp,
                                 memory_key_padding_mask=sp) * real_tgt, transformer, [data.src, data.tgt]))

    yield lambda: _model_row(config, data, all_graph)


def _model_row(config: CheckConfig, data: _Batch, edges: int) -> Row:
    model = GraphTransformerModel(
        config.vocab_size, d_model=config.d_model, nhead=config.nhead, num_encoder_layers=config.num_encoder_layers,
        num_decoder_layers=config.num_decoder_layers, dim_feedforward=config.dim_feedforward, dropout=0.0,
        activation=config.activation, norm_first=config.norm_first, tie_weights="all", dtype=config.dtype,
        device=config.device,
    )
    reference = DenseTransformerModel(model)
    tp = data.tgt_padding
    batch = graphs.seq2seq_batch(
        [tokens[:n] for tokens, n in zip(data.src_tokens, data.src_lengths)],
        [tokens[:n] for tokens, n in zip(data.tgt_tokens, data.tgt_lengths)],
    ).to(config.device)
    report = compare_functions(
        lambda: data.unpack(model(batch), tp), model,
        lambda: reference(data.src_tokens, data.tgt_tokens, data.src_lengths.to(config.device),
                          data.tgt_lengths.to(config.device)) * (~tp).unsqueeze(-1), reference, [],
    )
    return Row("GraphTransformerModel (logits)", "complete + causal + bipartite", "graph", edges, report)


def run_suite(config: CheckConfig, progress: bool = False) -> list[Row]:
    """Run every comparison; ``progress`` shows a bar on stderr."""
    cases = list(_cases(config))
    if progress:
        from tqdm.auto import tqdm

        cases = tqdm(cases, desc="equivalence", unit="case", leave=False)
    return [case() for case in cases]


def format_table(rows: list[Row]) -> str:
    """The parity table: one line per module, graph and call."""
    header = ("module", "graph", "call", "edges", "max rel diff out", "max rel diff grad", "tol", "result")
    lines = [(r.module, r.graph, r.call, str(r.edges), f"{r.report.output:.2e}", f"{r.report.gradient:.2e}",
              f"{r.report.tolerance:.0e}", "pass" if r.report.passed else "FAIL") for r in rows]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    fmt = lambda row: "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()  # noqa: E731
    rule = "  ".join("-" * width for width in widths)
    return "\n".join([fmt(header), rule, *map(fmt, lines)])
