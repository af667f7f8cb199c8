"""Parity on a CUDA device (skipped cleanly where there is none)."""
import pytest
import torch

from gnn_transformer.testing.equivalence import CheckConfig, run_suite

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("norm_first", [False, True])
def test_equivalence_suite_on_gpu(dtype, norm_first):
    rows = run_suite(CheckConfig(d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                                 dim_feedforward=128, dtype=dtype, norm_first=norm_first, device="cuda"))
    failed = [f"{row.module} [{row.call}]: {row.report}" for row in rows if not row.report.passed]
    assert not failed, failed
