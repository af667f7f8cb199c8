"""comparisons/gpu_check.py: the verdicts it writes, and its steps (the full --dry-run runs in .ci/run)."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "comparisons" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gpu_check = load("gpu_check")


def row(ms: float, peak: float = 10.0) -> dict:
    return {"fwd": ms / 3, "fwd+bwd": ms, "peak": peak}


def results(fused_complete: float, fused_window: float, fused_ragged: float, fused_peak: float = 10.0) -> dict:
    return {"cases": {
        "complete 4 x 1024": {"kind": "complete", "edges": 4_194_304, "fused": row(fused_complete, fused_peak),
                              "SDPA": row(1.0), "TransformerConv": row(179.0), "Flex": row(2.0, 10.0)},
        "window r128 @ 16384": {"kind": "window", "edges": 4_186_240, "fused": row(fused_window),
                                "SDPA": row(11.3), "Flex": row(1.8), "TransformerConv": row(142.0)},
        "ragged 4096 x 10-50": {"kind": "complete ragged", "edges": 4_300_000, "fused": row(fused_ragged),
                                "varlen": row(5.8), "Flex": row(4.6), "SDPA": row(7.6)},
        "complete 1 x 16384": {"kind": "complete", "edges": 268_435_456, "fused": {"note": "out of memory"},
                               "SDPA": row(10.0)},
    }}


def verdicts(attention: dict) -> dict:
    return {target: verdict for target, verdict, _ in gpu_check.targets(attention)}


def test_targets_pass_and_fail_on_the_measured_ratios():
    good = verdicts(results(fused_complete=1.4, fused_window=1.7, fused_ragged=4.0))
    assert good["complete and causal within 1.5x of SDPA"] == "pass"
    assert good["windows at least as fast as FlexAttention"] == "pass"
    assert good["ragged faster than varlen"] == "pass"
    assert good["ragged faster than FlexAttention's document mask"] == "pass"
    assert good["at least 50x faster than TransformerConv"] == "pass"  # 179 / 1.4, 142 / 1.7
    assert good["the largest complete graph runs (268M edges at full size)"] == "fail"  # its fused row ran out of memory
    assert good["peak memory within 1.5x of FlexAttention's"] == "pass"
    bad = verdicts(results(fused_complete=1.6, fused_window=1.9, fused_ragged=5.0, fused_peak=16.0))
    assert bad["complete and causal within 1.5x of SDPA"] == "fail"
    assert bad["windows at least as fast as FlexAttention"] == "fail"
    assert bad["ragged faster than varlen"] == "pass" and bad["ragged faster than FlexAttention's document mask"] == "fail"
    assert bad["at least 50x faster than TransformerConv"] == "pass"  # 179 / 1.6 = 112, 142 / 1.9 = 75
    assert bad["peak memory within 1.5x of FlexAttention's"] == "fail"  # 16 / 10
    slow = verdicts(results(fused_complete=4.0, fused_window=1.0, fused_ragged=1.0))
    assert slow["at least 50x faster than TransformerConv"] == "fail"  # 179 / 4 = 45


def test_missing_results_are_not_evaluated_rather_than_passed():
    assert verdicts(None) == {"every target": "not evaluated"}
    attention = results(1.0, 1.0, 1.0)
    for rows in attention["cases"].values():
        rows.pop("Flex", None)
    assert verdicts(attention)["windows at least as fast as FlexAttention"] == "not evaluated"


def test_dry_run_runs_the_same_steps_on_cpu_at_toy_sizes(tmp_path):
    real, dry = gpu_check.steps(False, tmp_path, "python"), gpu_check.steps(True, tmp_path, "python")
    assert [s.name for s in real] == [s.name for s in dry]
    assert [s.command[1:2] for s in real] == [s.command[1:2] for s in dry]  # the same scripts and modules
    assert all("cuda" not in " ".join(s.command) for s in dry) and dry[3].env == {"TRITON_INTERPRET": "1"}
    assert "--tiny" in dry[3].command and "--tiny" in dry[4].command
    assert sum(s.timeout_s for s in real) <= 8 * 60  # the GPU run fits in 8 minutes
