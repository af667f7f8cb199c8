"""Hostile input, generated: every public surface gives a right answer or its own error naming the argument.

Each test draws valid and invalid inputs with hypothesis.  A valid input must give a finite
result equal to a reference computed another way (dense masks, Python loops, torch's modules,
the recomputing decoder); an invalid one must raise the library's own ``ValueError`` /
``TypeError`` (or a subclass) whose message names the argument, raised by a frame inside
``gnn_transformer`` (an error from inside torch, PyG or Python fails the test).

Examples per test: the hypothesis profile (``ci``: 25, see tests/conftest.py); the ``slow``
variants at the bottom run 20x as many.
"""
from __future__ import annotations

import math
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import gnn_transformer
from gnn_transformer import GraphMultiheadAttention, GraphTransformerEncoderLayer, graphs
from gnn_transformer.core.functional import graph_attention
from gnn_transformer.errors import InputDtypeError, MaskShapeError, MaskTypeError
from gnn_transformer.graphs.masks import edges_from_mask, edges_to_mask
from gnn_transformer.graphs.patterns import OPTIONS, PATTERNS, build_pattern
from gnn_transformer.testing import torch_reference_mode

PACKAGE = Path(gnn_transformer.__file__).resolve().parent
CPU_BACKENDS = ("reference", "chunked")  # "fused" runs on CPU only through Triton's interpreter: tests/backends


def assert_own_error(excinfo, *fragments: str) -> None:
    """The error was raised inside the package, is a ValueError/TypeError, and names every fragment."""
    tb = excinfo.tb
    while tb.tb_next is not None:
        tb = tb.tb_next
    where = Path(tb.tb_frame.f_code.co_filename).resolve()
    assert PACKAGE in where.parents, f"raised outside the package at {where}:{tb.tb_lineno}: {excinfo.value!r}"
    assert isinstance(excinfo.value, (ValueError, TypeError)), repr(excinfo.value)
    for fragment in fragments:
        assert fragment in str(excinfo.value), f"{fragment!r} not in {str(excinfo.value)!r}"


def raises_own(call, *fragments: str) -> None:
    with pytest.raises(Exception) as excinfo:
        call()
    assert_own_error(excinfo, *fragments)


# ---------------------------------------------------------------------------------------------- builders
def edge_set(edge_index: torch.Tensor) -> list[tuple[int, int]]:
    return sorted(map(tuple, edge_index.t().tolist()))


def loops_reference(lengths: list[int], allowed) -> list[tuple[int, int]]:
    """Edges (j, i) of the disjoint union, by Python loops over tokens."""
    edges, offset = [], 0
    for length in lengths:
        edges += [(offset + j, offset + i) for i in range(length) for j in range(length) if allowed(i, j)]
        offset += length
    return sorted(edges)


LENGTH_FORMS = {
    "list": list, "tuple": tuple, "tensor": torch.tensor, "int32": lambda v: torch.tensor(v, dtype=torch.int32),
    "numpy": np.array, "numpy-ints": lambda v: [np.int64(x) for x in v],
}

valid_lengths = st.lists(st.integers(0, 5), min_size=1, max_size=4)
invalid_lengths = st.one_of(
    st.integers(0, 9),  # a single number: complete(5)
    st.lists(st.integers(0, 5), max_size=3).map(lambda v: v + [True]),
    st.lists(st.integers(0, 5), max_size=3).map(lambda v: v + [2.5]),
    st.just([torch.tensor(2.5)]),
    st.sets(st.integers(1, 5), min_size=1),
    st.dictionaries(st.integers(1, 5), st.integers(1, 5), min_size=1),
    st.just([[2, 3]]),
    st.just([]),
    st.lists(st.integers(-5, -1), min_size=1, max_size=3),
    st.just(torch.tensor([[2, 3]])),
    st.just(torch.tensor([2.0, 3.0])),
    st.just(torch.tensor([True])),
    st.just("3"),
    st.none(),
)


@given(lengths=valid_lengths, form=st.sampled_from(sorted(LENGTH_FORMS)), window=st.none() | st.integers(1, 4))
def test_builders_on_valid_lengths_match_python_loops(lengths, form, window):
    value = LENGTH_FORMS[form](lengths)
    assert edge_set(graphs.complete(value)) == loops_reference(lengths, lambda i, j: True)
    in_window = (lambda i, j: j <= i) if window is None else (lambda i, j: i - window < j <= i)
    assert edge_set(graphs.causal(value, window=window)) == loops_reference(lengths, in_window)
    bipartite = graphs.bipartite(value, value)
    assert edge_set(bipartite) == loops_reference(lengths, lambda i, j: True)


@given(lengths=invalid_lengths, builder=st.sampled_from([graphs.complete, graphs.causal, graphs.positions]))
def test_builders_refuse_invalid_lengths_naming_them(lengths, builder):
    raises_own(lambda: builder(lengths), "lengths")


@given(window=st.one_of(st.booleans(), st.integers(-3, 0), st.floats(0.5, 3.5), st.just("2"), st.just([2])))
def test_causal_refuses_a_bad_window(window):
    raises_own(lambda: graphs.causal([3, 2], window=window), "window")


# ---------------------------------------------------------------------------------------------- patterns
SIZES = {"n": (1, 6), "batch": (1, 2), "height": (1, 3), "width": (1, 3)}
PATTERN_NAMES = sorted(name for name in PATTERNS if PATTERNS[name].input != "file")


@st.composite
def pattern_call(draw, valid: bool):
    name = draw(st.sampled_from(PATTERN_NAMES))
    spec = PATTERNS[name]
    options = {}
    for key in spec.used_options:
        option = OPTIONS[key]
        if option.type is bool:
            options[key] = draw(st.booleans())
        elif option.choices:
            options[key] = draw(st.sampled_from(option.choices))
        elif option.type is int:
            low, high = SIZES.get(key, (option.minimum, option.minimum + 3))
            options[key] = draw(st.integers(low, high))
    centred = name == "grid-window" or (name == "convolution" and not options["causal"])
    if centred and options["kernel_size"] % 2 == 0:
        options["kernel_size"] += 1  # a centred kernel is odd (an even one is refused: see below)
    bad = None
    if not valid:
        candidates = [key for key in spec.used_options if OPTIONS[key].type is int]
        bad = draw(st.sampled_from(candidates))
        options[bad] = draw(st.one_of(st.integers(-3, OPTIONS[bad].minimum - 1), st.booleans(), st.just("2"),
                                      st.just(2.0)))
    return name, options, bad


@given(call=pattern_call(valid=True))
def test_patterns_on_valid_options_are_graphs_on_their_nodes(call):
    name, options, _ = call
    pattern = build_pattern(name, **options)
    edges = pattern.edge_index
    assert edges.dtype == torch.long and edges.dim() == 2 and edges.size(0) == 2
    if edges.numel():
        assert int(edges.min()) >= 0 and int(edges.max()) < pattern.num_nodes
    if options.get("causal") and PATTERNS[name].node_lengths is None:
        assert bool((edges[0] <= edges[1]).all()), "a causal pattern has an edge from a later token"
    if PATTERNS[name].input == "lengths" and PATTERNS[name].node_lengths is None and options["batch"] == 2:
        # a batch of two is the disjoint union of two single sequences (bigbird draws its keys per batch)
        one = build_pattern(name, **{**options, "batch": 1}).edge_index
        n = options["n"]
        if name != "bigbird":
            assert edge_set(edges) == sorted(edge_set(one) + edge_set(one + n))


@given(call=pattern_call(valid=False))
def test_patterns_refuse_a_bad_option_naming_it(call):
    name, options, bad = call
    raises_own(lambda: build_pattern(name, **options), f"pattern option {bad}")


@pytest.mark.parametrize("name, options", [("grid-window", {}), ("convolution", {"causal": False})])
def test_an_even_centred_kernel_is_refused_naming_it(name, options):
    raises_own(lambda: build_pattern(name, kernel_size=2, **options), "odd kernel_size")


def test_a_pattern_ignores_the_options_it_does_not_read():
    """`graph causal --batch 0` complained about grid options: unused options are not checked."""
    assert build_pattern("causal", n=3, height=0, width=-1, radius=-4).edge_index.size(1) == 6


# --------------------------------------------------------------------------------------- graph_attention
@st.composite
def attention_case(draw):
    num_targets, num_sources = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    heads, head_dim = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    allowed = draw(st.lists(st.booleans(), min_size=num_targets * num_sources,
                            max_size=num_targets * num_sources))
    allowed = torch.tensor(allowed).view(num_targets, num_sources)  # (T, S)
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(num_targets, heads, head_dim, dtype=torch.float64, generator=generator)
    k = torch.randn(num_sources, heads, head_dim, dtype=torch.float64, generator=generator)
    v = torch.randn(num_sources, heads, head_dim, dtype=torch.float64, generator=generator)
    target, source = allowed.nonzero(as_tuple=True)
    edge_index = torch.stack([source, target])
    perm = torch.randperm(edge_index.size(1), generator=generator)  # the builders' order is not required
    return q, k, v, edge_index[:, perm], allowed


def dense_attention(q, k, v, allowed, scale):
    """softmax over allowed keys, by a masked dense product; a target with no key gets zeros."""
    scores = torch.einsum("thc,shc->hts", q, k) * scale  # (H, T, S)
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("hts,shc->thc", weights, v)  # (T, H, C)


@given(case=attention_case(), backend=st.sampled_from(CPU_BACKENDS),
       index_dtype=st.sampled_from([torch.int64, torch.int32, torch.int16, torch.uint8]),
       scale=st.none() | st.floats(0.1, 3.0))
def test_graph_attention_on_valid_inputs_matches_dense_attention(case, backend, index_dtype, scale):
    q, k, v, edge_index, allowed = case
    out = graph_attention(q, k, v, edge_index.to(index_dtype), scale=scale, backend=backend)
    expected = dense_attention(q, k, v, allowed, 1 / math.sqrt(q.size(-1)) if scale is None else scale)
    assert out.dtype == torch.float64 and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


BAD_ATTENTION_ARGUMENTS = [
    ("q", lambda q: q.tolist(), "q must be a floating-point tensor, got list"),
    ("q", lambda q: q.long(), "q must be a floating-point tensor, got dtype torch.int64"),
    ("k", lambda k: k.to(torch.int32), "k must be a floating-point tensor"),
    ("v", lambda v: v.float(), "q, k, v must share a dtype"),
    ("scale", lambda _: float("nan"), "scale must be finite and positive"),
    ("scale", lambda _: float("inf"), "scale must be finite and positive"),
    ("scale", lambda _: -1.0, "scale must be finite and positive"),
    ("scale", lambda _: 0, "scale must be finite and positive"),
    ("scale", lambda _: "x", "scale must be a positive number or None, got str"),
    ("scale", lambda _: True, "scale must be a positive number or None, got bool"),
    ("dropout_p", lambda _: 1.5, "dropout_p must be in [0, 1)"),
    ("dropout_p", lambda _: 1.0, "dropout_p must be in [0, 1)"),
    ("dropout_p", lambda _: -0.1, "dropout_p must be in [0, 1)"),
    ("dropout_p", lambda _: float("nan"), "dropout_p must be in [0, 1)"),
    ("dropout_p", lambda _: "0.1", "dropout_p must be a number"),
    ("edge_index", lambda e: e.double(), "edge_index must hold integer node indices"),
    ("edge_index", lambda e: e.bool(), "edge_index must hold integer node indices"),
    ("edge_index", lambda e: e.tolist(), "edge_index must be a (2, num_edges) integer tensor, got list"),
    ("edge_index", lambda e: torch.cat([e, e[:1]]), "edge_index must have shape (2, num_edges)"),
    ("edge_index", lambda e: e[:1], "edge_index must have shape (2, num_edges)"),
    ("edge_index", lambda e: torch.cat([e, torch.tensor([[0], [99]])], 1), "edge_index refers to target node 99"),
    ("edge_index", lambda e: torch.cat([e, torch.tensor([[-1], [0]])], 1), "edge_index holds a negative node index"),
    ("edge_bias", lambda e: torch.zeros(e.size(1) + 1, 1, dtype=torch.float64), "edge_bias must have shape"),
    ("edge_bias", lambda e: torch.zeros(e.size(1), dtype=torch.long), "edge_bias must be a floating-point tensor"),
    ("backend", lambda _: "dense", "unknown backend 'dense'"),
]


@pytest.mark.parametrize("bad", BAD_ATTENTION_ARGUMENTS, ids=[f"{name}-{fragment}" for name, _, fragment in
                                                               BAD_ATTENTION_ARGUMENTS])
@given(case=attention_case(), backend=st.sampled_from(CPU_BACKENDS))
@settings(max_examples=max(1, settings().max_examples // 5))  # x 25 parameters
def test_graph_attention_refuses_a_bad_argument_naming_it(case, backend, bad):
    q, k, v, edge_index, _ = case
    name, corrupt, fragment = bad
    arguments = {"q": q, "k": k, "v": v, "edge_index": edge_index, "edge_bias": None, "scale": None,
                 "dropout_p": 0.0, "backend": backend}
    base = {"edge_bias": edge_index, "scale": None, "dropout_p": None, "backend": None}.get(name, arguments[name])
    arguments[name] = corrupt(base)
    q, k, v, edge_index, edge_bias = (arguments.pop(key) for key in ("q", "k", "v", "edge_index", "edge_bias"))
    raises_own(lambda: graph_attention(q, k, v, edge_index, edge_bias, **arguments), fragment)


# ------------------------------------------------------------------------------------------------ modules
@lru_cache(maxsize=None)
def module_pair(batch_first: bool):
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=torch.float64)
    graph = GraphMultiheadAttention.from_torch(reference)
    torch_layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first, dtype=torch.float64)
    return reference.eval(), graph.eval(), torch_layer.eval(), GraphTransformerEncoderLayer.from_torch(torch_layer)


@st.composite
def padded_batch(draw):
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    lengths = draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch))
    blocked = draw(st.lists(st.booleans(), min_size=length * length, max_size=length * length))
    blocked = torch.tensor(blocked).view(length, length) & ~torch.eye(length, dtype=torch.bool)  # a key per query
    padding = torch.arange(length)[None, :] >= torch.tensor(lengths)[:, None]  # (B, L) True = padded
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(batch, length, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return x, blocked, padding, lengths


@given(data=padded_batch(), batch_first=st.booleans())
def test_modules_torch_style_calls_match_torch(data, batch_first):
    x, blocked, padding, lengths = data
    reference, graph, torch_layer, graph_layer = module_pair(batch_first)
    x = x if batch_first else x.transpose(0, 1)
    attn_mask = blocked & ~torch.eye(blocked.size(0), dtype=torch.bool)  # the diagonal stays: no empty rows
    with torch_reference_mode(), torch.no_grad():
        expected, _ = reference(x, x, x, attn_mask=attn_mask, need_weights=False)
        out, _ = graph(x, x, x, attn_mask=attn_mask, need_weights=False)
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-12)
        keep = ~padding  # padded queries: torch's layer and ours differ only where nothing is defined
        expected = torch_layer(x, src_mask=attn_mask, src_key_padding_mask=padding)
        out = graph_layer(x, attn_mask, padding)  # by position, as torch takes them
        if not batch_first:
            expected, out = expected.transpose(0, 1), out.transpose(0, 1)
        assert bool(torch.isfinite(out[keep]).all())
        torch.testing.assert_close(out[keep], expected[keep], rtol=1e-9, atol=1e-12)


@given(data=padded_batch())
def test_modules_graph_native_call_matches_the_masked_call(data):
    """graph-native on the edges of a mask (edges_from_mask) == torch-style with that mask."""
    x, blocked, padding, lengths = data
    reference, graph, _, _ = module_pair(True)
    batch, length = padding.shape
    edge_index, _ = edges_from_mask(blocked, padding, batch_size=batch, tgt_len=length, src_len=length)
    nodes = x.reshape(batch * length, 8)
    with torch_reference_mode(), torch.no_grad():
        out = graph(nodes, nodes, nodes, edge_index)  # (B * L, E)
        expected, _ = reference(x, x, x, attn_mask=blocked, key_padding_mask=padding, need_weights=False)
    keep = ~padding.reshape(-1)
    torch.testing.assert_close(out[keep], expected.reshape(-1, 8)[keep], rtol=1e-9, atol=1e-12)


BAD_MODULE_CALLS = [
    (lambda m, x: m(x.float(), x.float(), x.float()), InputDtypeError, "query has dtype torch.float32"),
    (lambda m, x: m(x.long(), x.long(), x.long()), InputDtypeError, "query must be a floating-point tensor"),
    (lambda m, x: m(x, x.float(), x), InputDtypeError, "key has dtype torch.float32"),
    (lambda m, x: m(x.tolist(), x, x), TypeError, "query must be a tensor, got list"),
    (lambda m, x: m(x, x, x, attn_mask=torch.zeros(2, 2, 2, 2, dtype=torch.bool)), MaskShapeError, "attn_mask"),
    (lambda m, x: m(x, x, x, key_padding_mask=torch.zeros(x.size(0), x.size(1))), None, None),  # valid: float
    (lambda m, x: m(x[0], x[0], x[0], torch.zeros(3, 3, dtype=torch.long)), MaskTypeError, "key_padding_mask"),
    (lambda m, x: m(x[0], x[0], x[0], graphs.complete([x.size(1)]).double()), None, None),  # a float mask
]


@pytest.mark.parametrize("bad", range(len(BAD_MODULE_CALLS)))
@given(data=padded_batch())
@settings(max_examples=max(1, settings().max_examples // 5))  # x 8 parameters
def test_modules_refuse_bad_inputs_naming_them(data, bad):
    x = data[0]
    _, graph, _, graph_layer = module_pair(True)
    call, error, fragment = BAD_MODULE_CALLS[bad]
    if error is None:  # the valid neighbours of the bad calls must still run (or fail for their own reason)
        try:
            call(graph, x)
        except (ValueError, TypeError) as caught:
            assert_own_error(pytest.ExceptionInfo.from_exc_info((type(caught), caught, caught.__traceback__)))
        return
    with pytest.raises(error) as excinfo:
        call(graph, x)
    assert_own_error(excinfo, fragment)


@given(data=padded_batch(), mask_dtype=st.sampled_from([torch.long, torch.int32, torch.uint8]))
def test_an_integer_mask_by_position_is_named_as_a_mask(data, mask_dtype):
    """torch's layer(src, src_mask): an integer mask is not silently taken as an edge index."""
    x, blocked, _, _ = data
    _, _, _, graph_layer = module_pair(True)
    length = x.size(1)
    with pytest.raises(MaskTypeError) as excinfo:
        graph_layer(x, blocked.to(mask_dtype).expand(length, length) if length != 2 else
                    blocked.to(mask_dtype).reshape(1, 2, 2))
    assert_own_error(excinfo, "src_mask", "bool or floating point")


# --------------------------------------------------------------------------------------- mask conversion
@given(data=padded_batch())
def test_mask_conversion_round_trips(data):
    _, blocked, padding, _ = data
    batch, length = padding.shape
    edge_index, bias = edges_from_mask(blocked, padding, batch_size=batch, tgt_len=length, src_len=length)
    assert bias is None
    dense = edges_to_mask(edge_index, batch * length, batch * length)  # (B L, B L), True = blocked
    for b in range(batch):
        block = dense[b * length:(b + 1) * length, b * length:(b + 1) * length]
        assert torch.equal(block, blocked | padding[b][None, :])


BAD_MASK_CALLS = [
    (dict(attn_mask=torch.zeros(3, 3, dtype=torch.long)), "attn_mask must be a bool or floating-point tensor"),
    (dict(attn_mask=[[True]]), "attn_mask must be a bool or floating-point tensor or None, got list"),
    (dict(attn_mask=torch.zeros(3, 4, dtype=torch.bool)), "attn_mask has shape (3, 4)"),
    (dict(attn_mask=torch.zeros(3, dtype=torch.bool)), "attn_mask must be 2-D or 3-D"),
    (dict(key_padding_mask=torch.zeros(2, 2, dtype=torch.bool)), "key_padding_mask has shape (2, 2)"),
    (dict(key_padding_mask=torch.zeros(1, 3, dtype=torch.int8)), "key_padding_mask must be a bool"),
    (dict(attn_mask=torch.full((3, 3), float("nan"))), "attn_mask contains NaN"),
    (dict(batch_size=-1), "batch_size must be an integer >= 0"),
    (dict(batch_size=True), "batch_size must be an integer >= 0, got bool"),
    (dict(tgt_len=2.0), "tgt_len must be an integer"),
    (dict(num_heads=0), "num_heads must be an integer >= 1"),
]


@pytest.mark.parametrize("bad", BAD_MASK_CALLS, ids=[fragment for _, fragment in BAD_MASK_CALLS])
def test_mask_conversion_refuses_bad_masks_naming_them(bad):
    arguments, fragment = bad
    call = {"batch_size": 1, "tgt_len": 3, "src_len": 3, **arguments}
    raises_own(lambda: edges_from_mask(**call), fragment)


@pytest.mark.parametrize("bad", [
    (lambda e: edges_to_mask(e.float(), 3, 3), "edge_index must hold integer node indices"),
    (lambda e: edges_to_mask(e, 2, 3), "edge_index refers to target node 2"),
    (lambda e: edges_to_mask(e, 3, -1), "num_sources must be an integer >= 0"),
    (lambda e: edges_to_mask(e, 3, 3, edge_bias=torch.zeros(2)), "edge_bias must be a floating-point tensor"),
])
def test_edges_to_mask_refuses_bad_edges_naming_them(bad):
    call, fragment = bad
    raises_own(lambda: call(graphs.complete([3])), fragment)


# -------------------------------------------------------------------------------------------- generation
@lru_cache(maxsize=None)
def decoder():
    torch.manual_seed(0)
    return gnn_transformer.GraphDecoderModel(11, d_model=8, nhead=2, num_layers=1, dim_feedforward=16,
                                             dropout=0.0).eval()


GENERATE_DEFAULTS = dict(strategy="greedy", max_new_tokens=3, eos=None)
BAD_GENERATE = [
    ("inputs", dict(inputs=torch.tensor([1, 2])), "inputs must be a list of 1-D token-id tensors"),
    ("inputs", dict(inputs=[]), "inputs is empty"),
    ("inputs", dict(inputs=[[1, 2]]), "inputs[0] must be a 1-D tensor of token ids, got list"),
    ("inputs", dict(inputs=[torch.tensor([1.0, 2.0])]), "inputs[0] must hold integer token ids"),
    ("inputs", dict(inputs=[torch.tensor([[1, 2]])]), "inputs[0] must be 1-D"),
    ("strategy", dict(strategy="topp"), "strategy must be one of"),
    ("max_new_tokens", dict(max_new_tokens=0), "max_new_tokens must be a positive integer, got 0"),
    ("max_new_tokens", dict(max_new_tokens=2.5), "max_new_tokens must be a positive integer, got float"),
    ("beam_size", dict(strategy="beam", beam_size=0), "beam_size must be a positive integer, got 0"),
    ("beam_size", dict(beam_size=True), "beam_size must be a positive integer, got bool"),
    ("temperature", dict(strategy="sample", temperature=0.0), "temperature must be > 0 and finite"),
    ("temperature", dict(temperature=float("nan")), "temperature must be > 0 and finite"),
    ("top_k", dict(top_k=0), "top_k must be a positive integer or None, got 0"),
    ("length_penalty", dict(length_penalty=float("inf")), "length_penalty must be finite"),
    ("eos", dict(eos=-1), "eos must be an integer >= 0 or None, got -1"),
    ("bos", dict(bos="<s>"), "bos must be an integer >= 0 or None, got str"),
    ("attention_window", dict(attention_window=0), "attention_window must be a positive integer or None"),
]


@given(prompts=st.lists(st.lists(st.integers(0, 10), min_size=1, max_size=4), min_size=1, max_size=3),
       steps=st.integers(1, 3))
def test_generation_on_valid_arguments_matches_the_recomputing_decoder(prompts, steps):
    from gnn_transformer.generation import generate

    inputs = [torch.tensor(p) for p in prompts]
    grown = generate(decoder(), inputs, strategy="greedy", max_new_tokens=steps)
    recomputed = generate(decoder(), inputs, strategy="greedy", max_new_tokens=steps, recompute=True)
    assert [h.tokens.tolist() for h in grown] == [h.tokens.tolist() for h in recomputed]
    assert all(len(h.tokens) == steps for h in grown)
    assert all(math.isfinite(h.score) for h in grown)


@pytest.mark.parametrize("bad", BAD_GENERATE, ids=[fragment for _, _, fragment in BAD_GENERATE])
def test_generation_refuses_bad_arguments_naming_them(bad):
    from gnn_transformer.generation import generate

    name, arguments, fragment = bad
    call = {"inputs": [torch.tensor([1, 2])], **GENERATE_DEFAULTS, **arguments}
    inputs = call.pop("inputs")
    raises_own(lambda: generate(decoder(), inputs, **call), fragment)


# -------------------------------------------------------------------------------------------- checkpoints
@lru_cache(maxsize=None)
def saved_checkpoint() -> tuple[Path, bytes]:
    pytest.importorskip("safetensors")
    from gnn_transformer.training.checkpoint import save_checkpoint

    folder = Path(tempfile.mkdtemp(prefix="fuzz-checkpoint-"))
    path = save_checkpoint(folder, model=decoder(), optimizer=None, step=1, config={"fuzz": True})
    return path, (path / "model.safetensors").read_bytes()


@given(cut=st.integers(0, 10**6), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
                                                  max_size=8), truncate=st.booleans())
def test_a_corrupted_checkpoint_names_the_file(cut, flips, truncate):
    from gnn_transformer.training.checkpoint import load_checkpoint

    path, original = saved_checkpoint()
    data = bytearray(original)
    if truncate:
        data = data[:cut % len(data)]
    for position, mask in flips:
        if data:
            data[position % len(data)] ^= mask
    file = path / "model.safetensors"
    file.write_bytes(bytes(data))
    model = gnn_transformer.GraphDecoderModel(11, d_model=8, nhead=2, num_layers=1, dim_feedforward=16, dropout=0.0)
    try:
        load_checkpoint(path, model=model, restore_rng=False)
    except Exception as error:  # noqa: BLE001 -- which one is the point of the test
        assert_own_error(pytest.ExceptionInfo.from_exc_info((type(error), error, error.__traceback__)), str(file))
    else:  # a flip inside a weight's bytes is undetectable: then the weights are what the file says
        assert bytes(data) == original or len(data) == len(original)
    finally:
        file.write_bytes(original)


# ------------------------------------------------------------------------------------ 20x, marked slow
FUZZ_TESTS = [test_builders_on_valid_lengths_match_python_loops, test_builders_refuse_invalid_lengths_naming_them,
              test_patterns_on_valid_options_are_graphs_on_their_nodes, test_patterns_refuse_a_bad_option_naming_it,
              test_graph_attention_on_valid_inputs_matches_dense_attention, test_modules_torch_style_calls_match_torch,
              test_modules_graph_native_call_matches_the_masked_call, test_mask_conversion_round_trips,
              test_generation_on_valid_arguments_matches_the_recomputing_decoder,
              test_a_corrupted_checkpoint_names_the_file]


@pytest.mark.slow
@pytest.mark.parametrize("test", FUZZ_TESTS, ids=[test.__name__ for test in FUZZ_TESTS])
def test_fuzz_with_twenty_times_the_examples(test, request):
    """The same tests, with 20x the profile's examples (the settings are swapped for this call only).

    Minutes on 2 cores: run on request (``pytest -m slow tests/test_fuzz.py``), skipped otherwise.
    """
    if "slow" not in (request.config.getoption("markexpr") or "") or "not slow" in request.config.getoption("markexpr"):
        pytest.skip("20x the examples: run with -m slow")
    original = test._hypothesis_internal_use_settings
    test._hypothesis_internal_use_settings = settings(original, max_examples=original.max_examples * 20)
    try:
        test()
    finally:
        test._hypothesis_internal_use_settings = original


@pytest.mark.parametrize("arguments, fragment", [
    (dict(dropout=1.5), "dropout must be in [0, 1]"),
    (dict(dropout=-0.1), "dropout must be in [0, 1]"),
    (dict(dropout="0.1"), "dropout must be a number"),
    (dict(scale=float("nan")), "scale must be finite and positive"),
    (dict(scale=0.0), "scale must be finite and positive"),
    (dict(num_heads=3), "must be a positive multiple of num_heads"),
    (dict(num_heads=0), "num_heads must be positive"),
    (dict(backend="dense"), "unknown backend 'dense'"),
])
def test_module_constructors_refuse_bad_options_naming_them(arguments, fragment):
    options = {"embed_dim": 8, "num_heads": 2, **arguments}
    raises_own(lambda: GraphMultiheadAttention(**options), fragment)
    if "scale" not in arguments and "backend" not in arguments:  # the layers pass these on under other names
        layer = {"d_model": options.pop("embed_dim"), "nhead": options.pop("num_heads"), **options}
        raises_own(lambda: GraphTransformerEncoderLayer(**layer), fragment.replace("num_heads", "num_heads"))


def test_a_mask_passed_as_edge_index_is_named_as_a_mask():
    _, _, _, graph_layer = module_pair(True)
    x = torch.randn(3, 8, dtype=torch.float64)
    with pytest.raises(TypeError) as excinfo:
        graph_layer(x, edge_index=torch.zeros(3, 3, dtype=torch.bool))
    assert_own_error(excinfo, "edge_index must hold integer node indices", "torch-style mask")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_small_integer_edge_indices_give_the_int64_result_in_the_modules(dtype):
    _, graph, _, graph_layer = module_pair(True)
    x = torch.randn(5, 8, dtype=torch.float64)
    edges = graphs.causal([2, 3])
    with torch.no_grad():
        torch.testing.assert_close(graph(x, x, x, edges.to(dtype)), graph(x, x, x, edges), rtol=0, atol=0)
        torch.testing.assert_close(graph_layer(x, edges.to(dtype)), graph_layer(x, edges), rtol=0, atol=0)
