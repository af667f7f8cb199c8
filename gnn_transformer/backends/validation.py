"""Input checks that turn bad input into errors naming the problem and the fix."""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ..errors import FeatureSizeError, InputDtypeError, NumHeadsError, ShapeError

INDEX_DTYPES = (torch.int64, torch.int32)  # what PyG's index_select/scatter and the kernels take


def is_prepared(graph) -> bool:
    """Whether ``graph`` is a prepared graph (duck-typed: validated when built, so trusted here).

    Anything that is not a tensor and carries ``edge_index``, ``num_sources`` and ``num_targets``
    counts (:class:`~gnn_transformer.backends.prepared.PreparedGraph` is one); checking by
    attributes keeps this module free of imports from the rest of ``backends/``.
    """
    return not isinstance(graph, Tensor) and all(hasattr(graph, name) for name in _PREPARED_ATTRIBUTES)


_PREPARED_ATTRIBUTES = ("edge_index", "num_sources", "num_targets")


def check_edge_index(edge_index, num_sources: int, num_targets: int, name: str = "edge_index") -> None:
    """Check shape, dtype and range of an edge index (row 0 sources, row 1 targets), or a prepared graph's counts.

    A prepared graph was checked when it was built: only its node counts are compared
    here (Python ints, no host synchronisation).  A plain edge index costs one host read
    for its range check in eager mode; under ``torch.compile`` the range check is an
    asynchronous device assert (:func:`check_edge_range`).
    """
    if is_prepared(edge_index):
        if (edge_index.num_sources, edge_index.num_targets) != (num_sources, num_targets):
            raise ValueError(
                f"{name} is a PreparedGraph for {edge_index.num_sources} source and {edge_index.num_targets} target "
                f"nodes, but this call has {num_sources} source and {num_targets} target nodes: prepare the graph "
                f"for these nodes (prepare_graph(edge_index, num_sources, num_targets))"
            )
        return
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"{name} must be a (2, num_edges) integer tensor, got {type(edge_index).__name__}")
    if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool or edge_index.is_complex():
        raise TypeError(f"{name} must hold integer node indices, got dtype {edge_index.dtype}: a bool or "
                        f"floating tensor is a torch-style mask (pass it as the mask, or convert it with "
                        f"graphs.edges_from_mask)")
    if edge_index.dtype not in INDEX_DTYPES:
        raise TypeError(f"{name} must be an int64 or int32 tensor, got dtype {edge_index.dtype}: convert it "
                        f"with {name}.long() (graph_attention and the modules convert it themselves)")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"{name} must have shape (2, num_edges), got {tuple(edge_index.shape)}")
    if edge_index.numel() == 0:
        return
    check_edge_range(edge_index, num_sources, num_targets, name)


def check_edge_range(edge_index: Tensor, num_sources: int, num_targets: int, name: str = "edge_index") -> None:
    """Every source index in ``[0, num_sources)``, every target index in ``[0, num_targets)``.

    Eager: one host read of the four extremes (``aminmax`` per row), and an error that names
    the offending node.  Under ``torch.compile`` nothing is read back: the check becomes
    ``torch._assert_async`` (a runtime assert inside the compiled graph, no graph break), as
    PyG's ``MessagePassing`` skips its own index checks when compiling.
    """
    low, high = edge_index.aminmax(dim=1)  # (2,) each: per row
    if torch.compiler.is_compiling():
        in_range = (low >= 0).all() & (high[0] < num_sources) & (high[1] < num_targets)
        torch._assert_async(in_range, f"{name} holds a node index outside [0, {num_sources}) x [0, {num_targets})")
        return
    (low_source, low_target), (high_source, high_target) = torch.stack([low, high]).tolist()
    if min(low_source, low_target) < 0:
        raise ValueError(f"{name} holds a negative node index ({min(low_source, low_target)})")
    for row, high, count, role in ((0, high_source, num_sources, "source"), (1, high_target, num_targets, "target")):
        if high >= count:
            raise ValueError(
                f"{name} refers to {role} node {high} but only {count} {role} tokens were given "
                f"(row {row} of edge_index indexes {role}s)"
            )


def check_attention_inputs(q: Tensor, k: Tensor, v: Tensor, edge_index, edge_bias: Tensor | None):
    """Check q (T, H, C), k (S, H, C), v (S, H, Cv), edges (or a prepared graph) and bias.

    Returns the bias as (num_edges, H or 1).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 3:
            raise ValueError(f"{name} must have shape (num_nodes, num_heads, head_dim), got {tuple(t.shape)}")
    if not (q.size(1) == k.size(1) == v.size(1)):
        raise ValueError(f"q, k, v must have the same number of heads, got {q.size(1)}, {k.size(1)}, {v.size(1)}")
    if q.size(2) != k.size(2):
        raise ValueError(f"q and k must have the same head size, got {q.size(2)} and {k.size(2)}")
    if k.size(0) != v.size(0):
        raise ValueError(f"k and v must have one row per source token, got {k.size(0)} and {v.size(0)} rows")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    check_edge_index(edge_index, num_sources=k.size(0), num_targets=q.size(0))
    edges = edge_index.edge_index if is_prepared(edge_index) else edge_index
    if edges.device != q.device:
        raise ValueError(f"the graph is on {edges.device} but q, k, v are on {q.device}: move (or prepare) the graph "
                         f"on the device of the features")
    return check_edge_bias(edge_bias, edges.size(1), q.size(1), q.dtype)


def check_edge_bias(edge_bias: Tensor | None, num_edges: int, num_heads: int, dtype: torch.dtype):
    """Check a per-edge bias; return it as (num_edges, num_heads or 1) in ``dtype`` (or ``None``)."""
    if edge_bias is None:
        return None
    if not isinstance(edge_bias, Tensor) or not edge_bias.dtype.is_floating_point:
        given = getattr(edge_bias, "dtype", type(edge_bias))
        raise TypeError(f"edge_bias must be a floating-point tensor, got {given}")
    if edge_bias.dim() == 1:
        edge_bias = edge_bias.unsqueeze(-1)
    if edge_bias.dim() != 2 or edge_bias.size(0) != num_edges or edge_bias.size(1) not in (1, num_heads):
        raise ValueError(
            f"edge_bias must have shape (num_edges, num_heads) = ({num_edges}, {num_heads}) "
            f"or ({num_edges}, 1), got {tuple(edge_bias.shape)}"
        )
    return edge_bias.to(dtype)


def check_divisible(embed_dim: int, num_heads: int) -> None:
    """Positive sizes (``ValueError``, as torch) and whole heads (:class:`NumHeadsError`: torch asserts)."""
    if num_heads <= 0:
        raise ValueError(f"num_heads must be positive, got {num_heads}")
    if embed_dim <= 0:
        raise ValueError(f"embed_dim (d_model) must be positive, got {embed_dim}")
    if embed_dim % num_heads != 0:
        raise NumHeadsError(
            f"embed_dim (d_model) = {embed_dim} must be a positive multiple of num_heads (nhead) = {num_heads}"
        )


def check_node_features(x: Tensor, num_features: int, name: str) -> None:
    """Node features (num_nodes, num_features): :class:`ShapeError` for a wrong rank, :class:`FeatureSizeError`
    for a wrong feature size (torch's class for it depends on its code path)."""
    if x.dim() != 2:
        raise ShapeError(f"{name} must have shape (num_nodes, {num_features}), got {tuple(x.shape)}")
    if x.size(1) != num_features:
        raise FeatureSizeError(f"{name} has {x.size(1)} features per node but the module expects {num_features}")


# ---------------------------------------------------------------- the public boundary's arguments
# Checked once where a call enters the library (graph_attention, a module's call); Python values
# and tensor metadata only: nothing here reads a tensor's values (no host synchronisation).


def as_edge_index(edge_index, name: str = "edge_index"):
    """``edge_index`` with another integer dtype (uint8, int8, int16, ...) converted to int64; lossless.

    int64 and int32 indices, prepared graphs and anything else pass through unchanged (anything
    else is refused by :func:`check_edge_index`).  Every backend then sees the same dtypes.
    """
    if isinstance(edge_index, Tensor) and edge_index.dtype not in INDEX_DTYPES and not (
            edge_index.dtype.is_floating_point or edge_index.is_complex() or edge_index.dtype == torch.bool):
        if edge_index.dtype == torch.uint64:  # the one integer dtype int64 cannot hold: refused, not wrapped
            raise TypeError(f"{name} must be an int64 or int32 tensor, got dtype {edge_index.dtype}")
        return edge_index.to(torch.int64)
    return edge_index


def check_features(**tensors) -> None:
    """Each argument a floating-point tensor, all of one dtype and on one device (``q=..., k=..., v=...``).

    Integer features are refused (the backends would disagree on the output's dtype); lists and
    other values are refused with their type named.
    """
    first = None
    for name, value in tensors.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a floating-point tensor, got {type(value).__name__}")
        if not value.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}: convert it with "
                            f"{name}.float() (or .to(dtype))")
        if first is None:
            first = (name, value)
            continue
        if value.device != first[1].device:
            raise ValueError(f"{name} is on {value.device} but {first[0]} is on {first[1].device}: "
                             f"put q, k, v on one device")


def check_scale(scale, name: str = "scale") -> float | None:
    """``None`` (the default 1 / sqrt(C)) or a finite, positive real number, returned as a float."""
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"{name} must be a positive number or None, got {type(scale).__name__} {scale!r}")
    value = float(scale)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and positive, got {value!r}")
    return value


def check_probability(p, name: str = "dropout_p", closed: bool = False) -> float:
    """A dropout probability as a float: in [0, 1), or [0, 1] with ``closed`` (torch's modules allow 1)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1{']' if closed else ')'}, got {type(p).__name__} {p!r}")
    value = float(p)
    if not (0.0 <= value < 1.0 or (closed and value == 1.0)):
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value!r}")
    return value


def check_module_input(x, weight: Tensor, name: str) -> None:
    """A module's input: a floating tensor in the dtype and on the device of the module's ``weight``.

    torch's modules fail inside a matrix product for these (``RuntimeError``), hence
    :class:`~gnn_transformer.errors.InputDtypeError` (a ``TypeError`` and a ``RuntimeError``).
    Under ``torch.autocast`` the dtypes may differ, as torch allows there.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise InputDtypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}: convert it with "
                              f"{name}.to({weight.dtype})")
    if x.device != weight.device:
        raise InputDtypeError(f"{name} is on {x.device} but the module's weights are on {weight.device}: move one "
                              f"of them (module.to({str(x.device)!r}) or {name}.to({str(weight.device)!r}))")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise InputDtypeError(f"{name} has dtype {x.dtype} but the module's weights are {weight.dtype}: convert one "
                              f"of them (module.to({x.dtype}) or {name}.to({weight.dtype}))")
