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

from .. import graphs
from ..core.attention import GraphMultiheadAttention
from ..core.layers import GraphTransformerDecoderLayer, GraphTransformerEncoderLayer
from ..core.model import GraphTransformerModel
from ..core.stacks import GraphTransformer, GraphTransformerDecoder, GraphTransformerEncoder
from . import ParityReport, compare_functions, compare_with_torch
from .dense_models import DenseTransformerModel


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

    @property
    def num_graph_edges(self) -> int:
        return self.src_graph.size(1) + self.tgt_graph.size(1) + self.cross_graph.size(1)

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


def _dense_row(name, graph, edges, graph_module, torch_module, *args, **kwargs) -> Callable[[], Row]:
    return lambda: Row(name, graph, "dense", edges, compare_with_torch(graph_module, torch_module, *args, **kwargs))


def _graph_row(name, graph, edges, graph_fn, graph_module, torch_fn, torch_module, inputs) -> Callable[[], Row]:
    return lambda: Row(name, graph, "graph", edges,
                       compare_functions(graph_fn, graph_module, torch_fn, torch_module, inputs))


def _encoder_rows(name: str, graph_module, torch_module, data: "_Batch", dense_edges: int):
    """Dense and graph-native rows of an encoder layer or stack (complete graph of the sources)."""
    sp = data.src_padding
    yield _dense_row(name, "complete", dense_edges, graph_module, torch_module, data.src, src_key_padding_mask=sp)
    yield _graph_row(
        name, "complete", data.src_graph.size(1),
        lambda x: data.unpack(graph_module(data.pack(x, sp), data.src_graph), sp), graph_module,
        lambda x: torch_module(x, src_key_padding_mask=sp) * (~sp).unsqueeze(-1), torch_module, [data.src])


def _decoder_rows(name: str, graph_module, torch_module, data: "_Batch", dense_edges: int):
    """Dense and graph-native rows of a decoder layer or stack (causal and bipartite graphs)."""
    sp, tp = data.src_padding, data.tgt_padding
    masks = dict(tgt_mask=data.causal, tgt_key_padding_mask=tp, memory_key_padding_mask=sp)
    label = "causal + bipartite"
    yield _dense_row(name, label, dense_edges, graph_module, torch_module, data.tgt, data.src, **masks)
    yield _graph_row(
        name, label, data.tgt_graph.size(1) + data.cross_graph.size(1),
        lambda y, x: data.unpack(graph_module(data.pack(y, tp), data.pack(x, sp), data.tgt_graph, data.cross_graph),
                                 tp), graph_module,
        lambda y, x: torch_module(y, x, **masks) * (~tp).unsqueeze(-1), torch_module, [data.tgt, data.src])


def _transformer_rows(graph_module, torch_module, data: "_Batch", dense_edges: int):
    sp, tp = data.src_padding, data.tgt_padding
    masks = dict(tgt_mask=data.causal, src_key_padding_mask=sp, tgt_key_padding_mask=tp, memory_key_padding_mask=sp)
    label = "complete + causal + bipartite"
    yield _dense_row("GraphTransformer", label, dense_edges, graph_module, torch_module, data.src, data.tgt, **masks)
    yield _graph_row(
        "GraphTransformer", label, data.num_graph_edges,
        lambda x, y: data.unpack(graph_module(data.pack(x, sp), data.pack(y, tp), data.src_graph, data.tgt_graph,
                                              data.cross_graph), tp), graph_module,
        lambda x, y: torch_module(x, y, **masks) * (~tp).unsqueeze(-1), torch_module, [data.src, data.tgt])


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
    name = "GraphMultiheadAttention"
    yield _dense_row(name, "complete", complete_edges, graph_mha, mha, data.src, data.src, data.src,
                     key_padding_mask=data.src_padding, average_attn_weights=False)
    yield _dense_row(name, "complete + float-mask biases", data.dense_edges(float_mask, None, s, s, h), graph_mha, mha,
                     data.src, data.src, data.src, attn_mask=float_mask, need_weights=False)
    yield _dense_row(name, "causal", causal_edges, graph_mha, mha, data.tgt, data.tgt, data.tgt, attn_mask=data.causal,
                     key_padding_mask=data.tgt_padding, need_weights=False)
    yield _dense_row(name, "bipartite", cross_edges, graph_mha, mha, data.tgt, data.src, data.src,
                     key_padding_mask=data.src_padding, need_weights=False)
    for name, key, graph_class in (("GraphTransformerEncoderLayer", "encoder_layer", GraphTransformerEncoderLayer),
                                   ("GraphTransformerDecoderLayer", "decoder_layer", GraphTransformerDecoderLayer),
                                   ("GraphTransformerEncoder", "encoder", GraphTransformerEncoder),
                                   ("GraphTransformerDecoder", "decoder", GraphTransformerDecoder)):
        graph_module = graph_class.from_torch(modules[key])
        if "Encoder" in name:
            yield from _encoder_rows(name, graph_module, modules[key], data, complete_edges)
        else:
            yield from _decoder_rows(name, graph_module, modules[key], data, causal_edges + cross_edges)
    transformer = modules["transformer"]
    yield from _transformer_rows(GraphTransformer.from_torch(transformer), transformer, data,
                                 complete_edges + causal_edges + cross_edges)
    yield lambda: _model_row(config, data, data.num_graph_edges)


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
