"""Run the equivalence suite over a grid of configurations and print one summary line each.

    python comparisons/equivalence_grid.py            # small models, every option combination
    python comparisons/equivalence_grid.py --full     # the paper's base model (slower)

Each line: the configuration, the worst relative output and gradient differences over all
modules and calls of the suite (see ``gnn-transformer check`` for the per-module table),
and whether every comparison met its tolerance.
"""
from __future__ import annotations

import argparse
import itertools
import time
import warnings

import torch

from gnn_transformer.testing.equivalence import CheckConfig, run_suite


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="d_model 512, 8 heads, 6 + 6 layers")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    size = (dict(d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048) if args.full
            else dict(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64))
    grid = itertools.product([torch.float64, torch.float32], [False, True], ["relu", "gelu"], range(args.seeds))
    print(f"{'dtype':8} {'norm_first':10} {'activation':10} {'seed':4}  {'out':>9} {'grad':>9}  {'tol':>6}  result")
    failures = 0
    for dtype, norm_first, activation, seed in grid:
        config = CheckConfig(**size, dtype=dtype, norm_first=norm_first, activation=activation, seed=seed)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = run_suite(config)
        out = max(row.report.output for row in rows)
        grad = max(row.report.gradient for row in rows)
        ok = all(row.report.passed for row in rows)
        failures += not ok
        print(f"{str(dtype)[6:]:8} {str(norm_first):10} {activation:10} {seed:4}  {out:9.2e} {grad:9.2e}  "
              f"{rows[0].report.tolerance:6.0e}  {'pass' if ok else 'FAIL'} ({time.perf_counter() - start:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
