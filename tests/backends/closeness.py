"""What the backend tests accept from ``compare_backend``: every compared quantity within a tolerance."""
import torch

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
COMPARED = ("out", "weights", "grad_q", "grad_k", "grad_v", "grad_bias")


def assert_close(report: dict, tolerance: float) -> None:
    """Outputs, weights and every gradient of ``report`` within ``tolerance``; the weights detached."""
    worst = {name: report[name] for name in COMPARED if name in report}
    assert max(worst.values()) <= tolerance, worst
    assert report["weights_detached"] == 1.0
