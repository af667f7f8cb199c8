"""A prepared graph is checked once and trusted: no host syncs, no graph breaks, compiled == eager.

Graph-break tests follow PyG's for its convolutions: ``torch._dynamo.explain(module)(...)``
reports no break, then ``torch.compile(module)`` gives the eager outputs (here also the
gradients, in float64).  Every graph is prepared for its backend before the call, as a model
would prepare it at its outermost call.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch._dynamo

from gnn_transformer import graphs
from gnn_transformer.backends import validation
from gnn_transformer.backends.prepared import PreparedGraph, prepare_graph
from gnn_transformer.core.embedding import TokenEmbedding
from gnn_transformer.core.functional import graph_attention
from gnn_transformer.core.layers import GraphTransformerDecoderLayer, GraphTransformerEncoderLayer
from gnn_transformer.core.model import GraphTransformerModel
from gnn_transformer.testing import relative_difference
from gnn_transformer.testing.syncs import count_host_syncs

DT = torch.float64
BACKENDS = ["reference", "chunked"]
D, H, C = 16, 2, 8  # d_model, heads, head size
SRC, TGT = [5, 3], [4, 2]  # a ragged batch of two pairs


def prepared(edge_index, num_sources, num_targets, backend) -> PreparedGraph:
    return prepare_graph(edge_index, num_sources, num_targets, backend=backend, num_heads=H, head_dim=C)


# ---------------------------------------------------------------- the four things under test
class Attention(torch.nn.Module):
    """``graph_attention`` with a per-edge bias, as a module so that every case is called alike (dropout in training)."""

    def __init__(self, backend: str, dropout_p: float) -> None:
        super().__init__()
        self.backend, self.dropout_p = backend, dropout_p

    def forward(self, q, k, v, graph, bias):
        out, weights = graph_attention(q, k, v, graph, bias, backend=self.backend,
                                       dropout_p=self.dropout_p if self.training else 0.0, return_attention_weights=True)
        return out + weights.sum()  # the weights pass (chunked: a second sweep) is under test too


def attention_case(backend: str, dropout: float):
    edge_index = graphs.bipartite(SRC, TGT)
    graph = prepared(edge_index, sum(SRC), sum(TGT), backend)
    q = torch.randn(sum(TGT), H, C, dtype=DT)
    k, v = (torch.randn(sum(SRC), H, C, dtype=DT) for _ in range(2))
    bias = torch.randn(edge_index.size(1), H, dtype=DT)
    return Attention(backend, dropout), (q, k, v, graph, bias)


def encoder_case(backend: str, dropout: float):
    layer = GraphTransformerEncoderLayer(D, H, 32, dropout=dropout, backend=backend, dtype=DT)
    return layer, (torch.randn(sum(SRC), D, dtype=DT), prepared(graphs.complete(SRC), sum(SRC), sum(SRC), backend))


def decoder_case(backend: str, dropout: float):
    layer = GraphTransformerDecoderLayer(D, H, 32, dropout=dropout, backend=backend, norm_first=True, dtype=DT)
    x, memory = torch.randn(sum(TGT), D, dtype=DT), torch.randn(sum(SRC), D, dtype=DT)
    return layer, (x, memory, prepared(graphs.causal(TGT), sum(TGT), sum(TGT), backend),
                   prepared(graphs.bipartite(SRC, TGT), sum(SRC), sum(TGT), backend))


def model_case(backend: str, dropout: float):
    model = GraphTransformerModel(11, d_model=D, nhead=H, num_encoder_layers=1, num_decoder_layers=1,
                                  dim_feedforward=32, dropout=dropout, backend=backend, dtype=DT)
    batch = graphs.seq2seq_batch([torch.tensor([1, 2, 3, 4, 5]), torch.tensor([6, 7, 8])],
                                 [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5])])
    for (source, _, target), store in zip(batch.edge_types, batch.edge_stores):
        store.edge_index = prepared(store.edge_index, batch[source].num_nodes, batch[target].num_nodes, backend)
    return model, (batch,)


CASES = {"graph_attention": attention_case, "encoder_layer": encoder_case, "decoder_layer": decoder_case,
         "model": model_case}


def float_inputs(args) -> list[torch.Tensor]:
    return [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]


def forward_backward(module, args) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and the gradients of every float input and parameter, for a fixed output gradient."""
    leaves = float_inputs(args) + list(module.parameters())
    for leaf in float_inputs(args):
        leaf.requires_grad_()
    out = module(*args)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return out.detach(), list(torch.autograd.grad(out, leaves, grad_out))


# ---------------------------------------------------------------- the sync counter itself
READS = {
    "item": lambda t: t[0].item(),
    "int": lambda t: int(t[0]),
    "float": lambda t: float(t[0]),
    "bool": lambda t: bool(t[0] > 0),
    "index": lambda t: [0, 1, 2][t.long()[1]],
    "tolist": lambda t: t.tolist(),
    "nonzero": lambda t: t.nonzero(),
    "mask": lambda t: t[t > 1],
    "repeat_interleave": lambda t: torch.repeat_interleave(t, t.long()),
}


@pytest.mark.parametrize("read", list(READS))
def test_sync_counter_sees_each_kind_of_host_read(read):
    t = torch.tensor([1.0, 2.0])
    with count_host_syncs() as syncs:
        READS[read](t)
    assert syncs.count == 1, syncs
    assert "test_compile.py" in syncs.events[0][1]  # names the line that asked


def test_sync_counter_sees_reads_in_backward_and_nothing_in_plain_math():
    class ReadsInBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, grad):
            return grad * float(grad.sum())

    x = torch.randn(3, requires_grad=True)
    with count_host_syncs() as syncs:
        y = torch.repeat_interleave(x, torch.tensor([1, 2, 0]), output_size=3)  # sized: no sync
        (y.exp() @ y + torch.arange(3)[torch.tensor([2, 0])].sum()).backward()
    assert syncs.count == 0, syncs
    with count_host_syncs() as syncs:
        ReadsInBackward.apply(x).sum().backward()
    assert [what for what, _ in syncs.events] == ["aten._local_scalar_dense.default"]


# ---------------------------------------------------------------- checked once
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_plain_edge_index_is_checked_once_and_a_prepared_one_never_again(backend, monkeypatch):
    checks = []
    check = validation.check_edge_range
    monkeypatch.setattr(validation, "check_edge_range", lambda *args: checks.append(1) or check(*args))
    edge_index = graphs.causal([4, 3])
    q = torch.randn(7, H, C, dtype=DT)
    graph_attention(q, q, q, edge_index, backend=backend)
    assert len(checks) == 1  # graph_attention's boundary check; the backend trusts it
    graph = prepared(edge_index, 7, 7, backend)
    assert len(checks) == 2  # building the prepared graph
    graph_attention(q, q, q, graph, backend=backend)
    GraphTransformerEncoderLayer(D, H, 32, dropout=0.0, backend=backend, dtype=DT)(torch.randn(7, D, dtype=DT), graph)
    assert len(checks) == 2


def test_the_range_check_compiles_to_a_device_assert():
    """Under torch.compile a plain edge index is still checked, without a host read or a graph break."""
    q = torch.randn(7, H, C, dtype=DT)

    def attend(edge_index):
        return graph_attention(q, q, q, edge_index)

    torch._dynamo.reset()
    assert torch._dynamo.explain(attend)(graphs.causal([4, 3])).graph_break_count == 0
    compiled = torch.compile(attend, backend="aot_eager", dynamic=False)
    assert relative_difference(compiled(graphs.causal([4, 3])), attend(graphs.causal([4, 3]))) < 1e-12
    with pytest.raises(RuntimeError, match=r"edge_index holds a node index outside \[0, 7\) x \[0, 7\)"):
        compiled(graphs.causal([4, 3]) + torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="refers to target node 7 but only 7 target tokens"):
        attend(graphs.causal([4, 3]) + torch.tensor([[0], [1]]))  # eager: the error names the node


# ---------------------------------------------------------------- no host syncs
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_backward_on_prepared_graphs_make_no_host_sync(case, backend, training):
    module, args = CASES[case](backend, dropout=0.2)
    module.train(training)
    with count_host_syncs() as syncs:
        forward_backward(module, args)
    assert syncs.count == 0, syncs


# ---------------------------------------------------------------- no graph breaks, compiled == eager
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_no_graph_breaks_on_prepared_graphs(case, backend):
    """In training, with dropout (eval mode: ``fullgraph=True`` in the tests below)."""
    module, args = CASES[case](backend, dropout=0.2)
    module.train()
    torch._dynamo.reset()
    explain = torch._dynamo.explain(module)(*args)
    assert explain.graph_break_count == 0, [reason.reason.splitlines()[0] for reason in explain.break_reasons]
    assert explain.graph_count == 1


def assert_compiled_equals_eager(case: str, backend: str, compiler: str) -> None:
    module, args = CASES[case](backend, dropout=0.2)
    module.eval()
    expected, expected_grads = forward_backward(module, args)
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, grads = forward_backward(torch.compile(module, backend=compiler, dynamic=False, fullgraph=True), args)
    assert relative_difference(out, expected) < 1e-12
    assert max(relative_difference(g, e) for g, e in zip(grads, expected_grads)) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["graph_attention", "encoder_layer", pytest.param("decoder_layer", marks=pytest.mark.slow),
                                  "model"])
def test_compiled_graph_equals_eager(case, backend):
    """One graph (``fullgraph=True``: a break is an error), with AOT autograd's backward, run op by op (``aot_eager``)."""
    assert_compiled_equals_eager(case, backend, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["graph_attention", "encoder_layer"])
def test_inductor_equals_eager(case, backend):
    """The same through Inductor's generated code (about a minute each on 2 CPU cores)."""
    assert_compiled_equals_eager(case, backend, "inductor")


def test_token_ids_are_checked_without_a_host_read():
    embedding = TokenEmbedding(10, 4, dtype=DT)
    tokens, bad = torch.tensor([0, 3, 9]), torch.tensor([0, 10, 2])
    with count_host_syncs() as syncs:
        expected = embedding(tokens)
    assert syncs.count == 0, syncs
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 10\), got values from 0 to 10"):
        embedding(bad)  # eager on the CPU: checked at once, the error names the ids
    torch._dynamo.reset()
    compiled = torch.compile(embedding, backend="aot_eager", fullgraph=True, dynamic=False)
    assert torch.equal(compiled(tokens), expected)
    with pytest.raises(RuntimeError, match=r"token ids must lie in \[0, 10\)"):
        compiled(bad)  # compiled: a runtime assert in the graph
