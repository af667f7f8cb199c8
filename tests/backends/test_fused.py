"""The fused backend's Triton kernels against the reference path.

Without a GPU the kernels run on CPU tensors through Triton's interpreter (tests/conftest.py
sets ``TRITON_INTERPRET=1`` before they are defined): float32 and float16 at small sizes.
The interpreter computes ``tl.dot`` wrongly for bfloat16 inputs, so bfloat16 and the full
sizes run only on a GPU (``gpu`` marker).

Tolerances (max|fused - reference| <= tol * max(1, max|reference|), the reference in float64
on the same inputs): float32 1e-5 (measured <= 1e-6), float16 2e-3 (measured <= 8e-4),
bfloat16 2e-2 (about 8x float16: 3 fewer mantissa bits).
"""
import pytest
import torch

pytest.importorskip("triton")

import gnn_transformer.core.functional as functional  # noqa: E402
from gnn_transformer import graphs  # noqa: E402
from gnn_transformer import backends  # noqa: E402
from gnn_transformer.core.attention import GraphMultiheadAttention  # noqa: E402
from gnn_transformer.core.functional import graph_attention, select_backend  # noqa: E402
from gnn_transformer.backends.prepared import prepare_graph  # noqa: E402
from gnn_transformer.testing import compare_backend, graph_cases, relative_difference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
CHECKED = ("out", "weights", "grad_q", "grad_k", "grad_v", "grad_bias")
SMALL_TILES = {"block_size": (32, 16)}  # several row and column blocks, full, partial and boundary tiles


def assert_fused_close(dtype=torch.float32, kind="causal", **options):
    options.setdefault("prepare", SMALL_TILES)
    report = compare_backend("fused", graph_cases()[kind], dtype=dtype, device=DEVICE, **options)
    worst = {name: report[name] for name in CHECKED}
    assert max(worst.values()) <= TOLERANCE[dtype], worst
    assert report["weights_detached"] == 1.0


@pytest.mark.parametrize("kind", list(graph_cases()))
def test_float32_on_every_kind_of_graph(kind):
    assert_fused_close(torch.float32, kind, value_dim=24)


@pytest.mark.parametrize("kind", ["causal", "random", "skewed"])
def test_float16(kind):
    assert_fused_close(torch.float16, kind, prepare={"block_size": 32})


def test_square_16_tiles_shared_bias_and_head_size_not_a_power_of_two():
    assert_fused_close(kind="bipartite", bias="shared", head_dim=12, value_dim=20, prepare={"block_size": 16})


def test_without_bias_on_a_graph_already_in_tile_order():
    graph = prepare_graph(graphs.causal([16]), 16, block_size=16)
    assert graph.tiles.in_user_order and graph.tile_edge_ids is None  # one tile: the user's order
    q, k, v = (torch.randn(16, 2, 16, device=DEVICE) for _ in range(3))
    out = graph_attention(q, k, v, graph.edge_index.to(DEVICE), backend="fused")
    assert relative_difference(out, graph_attention(q, k, v, graph.edge_index.to(DEVICE))) <= 1e-5


@pytest.mark.parametrize("kind", ["causal", "random"])
def test_dropout_output_weights_and_gradients_agree(kind):
    """Output and gradients follow from the edges the kernels kept (the weights they return)."""
    assert_fused_close(kind=kind, dropout_p=0.3, bias="shared")


def test_module_with_virtual_sources_matches_reference():
    torch.manual_seed(0)
    kwargs = dict(add_bias_kv=True, add_zero_attn=True, kdim=6, vdim=10, device=DEVICE)
    reference = GraphMultiheadAttention(32, 2, **kwargs)
    fused = GraphMultiheadAttention(32, 2, backend="fused", **kwargs)
    fused.load_state_dict(reference.state_dict())
    x, memory = torch.randn(20, 32, device=DEVICE), torch.randn(25, 6, device=DEVICE)
    values = torch.randn(25, 10, device=DEVICE)
    edge_index = graphs.bipartite([15, 10], [12, 8]).to(DEVICE)
    graph = prepare_graph(edge_index, 25, 20, block_size=16)
    expected = reference(x, memory, values, edge_index)
    out = fused(x, memory, values, graph)
    assert relative_difference(out, expected) <= 1e-5
    grads = torch.autograd.grad(out.square().sum(), list(fused.parameters()))
    wanted = torch.autograd.grad(expected.square().sum(), list(reference.parameters()))
    assert max(relative_difference(g, w) for g, w in zip(grads, wanted)) <= 1e-5


def test_keeps_nothing_per_edge_for_backward():
    case = graph_cases()["random"]
    graph = prepare_graph(case.edge_index.to(DEVICE), case.num_sources, case.num_targets, block_size=16)
    q = torch.randn(case.num_targets, 2, 16, device=DEVICE, requires_grad=True)
    k, v = (torch.randn(case.num_sources, 2, 16, device=DEVICE, requires_grad=True) for _ in range(2))
    bias = torch.randn(graph.num_edges, 2, device=DEVICE, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        graph_attention(q, k, v, graph, bias, backend="fused")
    inputs = {t.data_ptr() for t in (q, k, v, bias)}
    new = [tuple(t.shape) for t in saved if t.data_ptr() not in inputs]
    assert sorted(new) == [(case.num_targets, 2), (case.num_targets, 2, 16)]  # lse and out


def test_bad_input_names_the_problem(monkeypatch):
    q = torch.randn(4, 2, 16, device=DEVICE)
    with pytest.raises(ValueError, match="repeats an edge: remove the duplicates"):
        graph_attention(q, q, q, torch.tensor([[0, 0], [1, 1]], device=DEVICE), backend="fused")
    with pytest.raises(TypeError, match="float16, bfloat16 and float32"):
        graph_attention(q.double(), q.double(), q.double(), graphs.complete([4]).to(DEVICE), backend="fused")
    from gnn_transformer.backends.fused import launch as fused

    monkeypatch.setattr(fused, "INTERPRETED", False)
    cpu = q.cpu()
    with pytest.raises(RuntimeError, match="runs Triton kernels on CUDA tensors, got cpu tensors"):
        graph_attention(cpu, cpu, cpu, graphs.complete([4]), backend="fused")


def test_fused_without_triton_says_how_to_install_it(monkeypatch):
    monkeypatch.delitem(backends._BACKENDS, "fused")
    with pytest.raises(ImportError, match=r"pip install 'gnn-transformer\[gpu\]'"):
        GraphMultiheadAttention(8, 2, backend="fused")
    assert "fused" not in functional.available_backends()


def test_auto_rule():
    """fused for CUDA tensors in 16/32-bit floats on graphs without repeated edges; chunked otherwise."""
    complete, repeated = graphs.complete([3]), torch.tensor([[0, 0, 1], [1, 1, 2]])
    assert select_backend(torch.randn(3, 1, 4), prepare_graph(complete, 3)) == "chunked"  # CPU
    if torch.cuda.is_available():
        graph = prepare_graph(complete.cuda(), 3)
        assert select_backend(torch.randn(3, 1, 4, device="cuda"), graph) == "fused"
        assert select_backend(torch.randn(3, 1, 4, device="cuda", dtype=torch.float64), graph) == "chunked"
        assert select_backend(torch.randn(3, 1, 4, device="cuda"), prepare_graph(repeated.cuda(), 3)) == "chunked"


# ---------------------------------------------------------------- GPU only
@pytest.mark.gpu
@pytest.mark.parametrize("kind", list(graph_cases()))
def test_bfloat16_on_gpu(kind):
    assert_fused_close(torch.bfloat16, kind)


@pytest.mark.gpu
@pytest.mark.parametrize("name, edge_index, num_nodes", [
    ("complete 1 x 4096", lambda: graphs.complete([4096]), 4096),
    ("causal 8 x 512", lambda: graphs.causal([512] * 8), 4096),
    ("ragged 10-50", lambda: graphs.complete(torch.randint(10, 51, (512,), generator=torch.Generator().manual_seed(0))),
     None),
])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_full_size_against_chunked_float32(name, edge_index, num_nodes, dtype):
    """d_model 512, 8 heads, default 64 x 64 tiles; the chunked backend in float32 is the reference here."""
    edge_index = edge_index().cuda()
    num_nodes = num_nodes or int(edge_index.max()) + 1
    graph = prepare_graph(edge_index, num_nodes)
    q, k, v = (torch.randn(num_nodes, 8, 64, device="cuda", requires_grad=True) for _ in range(3))
    bias = torch.randn(graph.num_edges, 8, device="cuda", requires_grad=True)
    expected = graph_attention(q, k, v, graph, bias, backend="chunked")
    grad = torch.randn_like(expected)
    wanted = torch.autograd.grad(expected, (q, k, v, bias), grad)
    low = [t.detach().to(dtype).requires_grad_() for t in (q, k, v, bias)]
    out = graph_attention(*low[:3], graph, low[3], backend="fused")
    got = torch.autograd.grad(out, low, grad.to(dtype))
    assert relative_difference(out, expected) <= TOLERANCE[dtype]
    assert max(relative_difference(g, w) for g, w in zip(got, wanted)) <= TOLERANCE[dtype]


def test_kernels_compile_for_the_h100_without_a_gpu():
    """The interpreter checks what the kernels compute; this lowers them to sm_90 cubins (no GPU needed)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "comparisons" / "compile_kernels.py"
    result = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kernel variants compiled for sm_90" in result.stdout
