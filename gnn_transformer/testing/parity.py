"""Output and gradient parity between a graph module and a dense torch computation."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-1}


def default_tolerance(dtype: torch.dtype) -> float:
    """1e-10 for float64, 1e-5 for float32 (looser for half precisions)."""
    if dtype not in TOLERANCES:
        raise ValueError(f"no default tolerance for dtype {dtype}")
    return TOLERANCES[dtype]


@contextmanager
def torch_reference_mode() -> Iterator[None]:
    """Pin torch to one exact code path for comparisons.

    * the MATH backend of ``scaled_dot_product_attention`` (the flash / memory-efficient
      / cuDNN kernels round differently, ~1e-5 apart in float32 gradients, so an
      unpinned comparison would measure torch against itself);
    * the ``nn.MultiheadAttention`` / ``TransformerEncoderLayer`` fast path off, which
      also keeps ``TransformerEncoder`` from converting padded input to nested tensors
      (whose padded positions come back as zeros rather than as computed values).
    """
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def relative_difference(actual: Tensor, expected: Tensor) -> float:
    """max|actual - expected| / max(1, max|expected|); NaN anywhere gives ``inf``."""
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {tuple(actual.shape)} vs {tuple(expected.shape)}")
    if actual.numel() == 0:
        return 0.0
    diff = (actual.detach().double() - expected.detach().double()).abs()
    if bool(torch.isnan(diff).any()):
        return float("inf")
    return float(diff.max()) / max(1.0, float(expected.detach().double().abs().max()))


@dataclass
class ParityReport:
    """Worst relative differences of outputs and gradients, and the tolerance they meet or miss."""

    output: float
    gradient: float
    tolerance: float
    worst_gradient: str = ""
    gradients: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.output <= self.tolerance and self.gradient <= self.tolerance

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "MISMATCH"
        return (f"output {self.output:.2e}, gradient {self.gradient:.2e} ({self.worst_gradient}), "
                f"tol {self.tolerance:.0e}: {verdict}")


def _leaves(inputs: Sequence) -> list:
    """Fresh leaf copies of the floating-point tensors (requires_grad), others as they are."""
    return [x.detach().clone().requires_grad_(True) if isinstance(x, Tensor) and x.is_floating_point() else x
            for x in inputs]


def _tensors(out) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _tensors(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _tensors(item)]
    return []


def _run(fn: Callable, module: nn.Module, inputs: Sequence, seed: int):
    leaves = _leaves(inputs)
    module.zero_grad(set_to_none=True)
    outputs = _tensors(fn(*leaves))
    generator = torch.Generator().manual_seed(seed)
    loss = 0
    for out in outputs:  # a fixed random upstream gradient per output
        weight = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.device, out.dtype)
        loss = loss + (out * weight).sum()
    grads = {}
    if isinstance(loss, Tensor) and loss.requires_grad:
        loss.backward()
        grads = {f"{name}": p.grad for name, p in module.named_parameters()}
        grads.update({f"input {i}": x.grad for i, x in enumerate(leaves) if isinstance(x, Tensor) and x.requires_grad})
    return outputs, grads


def compare_functions(graph_fn: Callable, graph_module: nn.Module, torch_fn: Callable, torch_module: nn.Module,
                      inputs: Sequence, tolerance: float | None = None, seed: int = 0) -> ParityReport:
    """Run ``graph_fn(*inputs)`` and ``torch_fn(*inputs)`` on fresh copies of the inputs and compare.

    Compares every output tensor, then, after backpropagating the same random
    upstream gradient through both, the gradients of every parameter (matched by
    name: the two modules share ``state_dict`` keys) and of every floating-point input.
    """
    dtype = next((x.dtype for x in inputs if isinstance(x, Tensor) and x.is_floating_point()),
                 next(torch_module.parameters()).dtype)
    tolerance = default_tolerance(dtype) if tolerance is None else tolerance
    with torch_reference_mode():
        expected, expected_grads = _run(torch_fn, torch_module, inputs, seed)
    actual, actual_grads = _run(graph_fn, graph_module, inputs, seed)
    if len(actual) != len(expected):
        raise AssertionError(f"graph call returned {len(actual)} tensors, torch {len(expected)}")
    output = max((relative_difference(a, e) for a, e in zip(actual, expected)), default=0.0)
    if set(actual_grads) != set(expected_grads):
        raise AssertionError(f"parameters differ: {sorted(set(actual_grads) ^ set(expected_grads))}")
    per_tensor = {}
    for name, want in expected_grads.items():
        got = actual_grads[name]
        if want is None and got is None:
            continue
        reference = want if want is not None else torch.zeros_like(got)
        per_tensor[name] = relative_difference(got if got is not None else torch.zeros_like(want), reference)
    worst = max(per_tensor, key=per_tensor.get, default="")
    return ParityReport(output, per_tensor.get(worst, 0.0), tolerance, worst, per_tensor)


def compare_with_torch(graph_module: nn.Module, torch_module: nn.Module, *args, tolerance: float | None = None,
                       seed: int = 0, **kwargs) -> ParityReport:
    """Call both modules the same (torch-style, padded) way and compare outputs and gradients."""
    return compare_functions(lambda *a: graph_module(*a, **kwargs), graph_module,
                             lambda *a: torch_module(*a, **kwargs), torch_module, args, tolerance, seed)


def assert_matches_torch(graph_module: nn.Module, torch_module: nn.Module, *args, tolerance: float | None = None,
                         seed: int = 0, **kwargs) -> ParityReport:
    """Assert that both modules give the same outputs and gradients for the same call.

    Example::

        torch_layer = nn.TransformerEncoderLayer(16, 4, dropout=0.0, dtype=torch.float64)
        assert_matches_torch(GraphTransformerEncoderLayer.from_torch(torch_layer), torch_layer,
                             src, src_key_padding_mask=padding)
    """
    report = compare_with_torch(graph_module, torch_module, *args, tolerance=tolerance, seed=seed, **kwargs)
    if not report.passed:
        raise AssertionError(f"{type(graph_module).__name__} differs from {type(torch_module).__name__}: {report}")
    return report


def assert_permutation_equivariant(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, edge_index: Tensor,
                                   permutation: Tensor | None = None, tolerance: float | None = None) -> None:
    r"""Assert :math:`f(P x, P G) = P f(x, G)`: relabelling the nodes relabels the output.

    ``fn(x, edge_index)`` maps node features (N, F) to node outputs (N, F').
    ``permutation[new] = old`` (default: random).
    """
    n = x.size(0)
    permutation = torch.randperm(n, device=x.device) if permutation is None else permutation
    inverse = torch.empty_like(permutation)
    inverse[permutation] = torch.arange(n, device=x.device)
    expected = fn(x, edge_index)[permutation]
    actual = fn(x[permutation], inverse[edge_index])
    tolerance = default_tolerance(x.dtype) if tolerance is None else tolerance
    difference = relative_difference(actual, expected)
    if difference > tolerance:
        raise AssertionError(f"not permutation equivariant: relative difference {difference:.2e} > {tolerance:.0e}")
