"""GPU validation in one call: tests, equivalence checks and benchmarks on one CUDA device, one report.

    python comparisons/gpu_check.py --out gpu_report.md            # one H100/H200: under 8 minutes
    python comparisons/gpu_check.py --dry-run --out dry_report.md  # the same script on CPU at toy sizes

Steps, each a subprocess with its own time limit (a step that fails or runs out of time is
reported as such and the next one runs):

1. the ``gpu``-marked tests (``pytest -m gpu``);
2. ``gnn-transformer check --device cuda`` in float64 and in float32;
3. ``comparisons/bench_attention.py`` on the full cases (bfloat16, d_model 512, 8 heads);
4. ``comparisons/bench_model.py`` (every size, CUDA).

The report holds the device, the versions, each step's status and output, the tables, and
pass / fail per target of the fused backend (docs/benchmarks.md, "GPU targets"): within 1.5x
of SDPA on complete and causal graphs, at least as fast as FlexAttention on windows, faster
than varlen and FlexAttention's document mask on ragged batches, at least 50x faster than
TransformerConv, the 268M-edge complete graph of 16384 tokens runs, peak memory within 1.5x
of FlexAttention's.

``--dry-run`` runs every step on CPU at toy sizes: the tests of step 1 skip (no CUDA: said in
the report), the checks run on ``--device cpu`` with a small model, the benchmarks run their
``--tiny`` rows with ``TRITON_INTERPRET=1`` (the fused rows through Triton's interpreter, timings
meaningless), and the targets are evaluated on those rows to exercise the code, not to judge.
So a script error costs no GPU minute.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPARISONS = ROOT / "comparisons"


@dataclass
class Step:
    name: str
    command: list[str]
    timeout_s: int
    env: dict = field(default_factory=dict)
    status: str = "not run"
    seconds: float = 0.0
    output: str = ""


def steps(dry_run: bool, workdir: Path, python: str) -> list[Step]:
    """The four steps; ``--dry-run`` swaps sizes and devices, never the scripts."""
    interpret = {"TRITON_INTERPRET": "1"} if dry_run else {}
    device = "cpu" if dry_run else "cuda"
    small = ["--d-model", "16", "--nhead", "2", "--num-encoder-layers", "1", "--num-decoder-layers", "1",
             "--dim-feedforward", "32", "--batch-size", "2", "--no-progress"] if dry_run else ["--no-progress"]
    tests = ["tests/backends/test_gpu.py"] if dry_run else ["tests"]
    attention = ["--tiny", "--device", "cpu"] if dry_run else ["--device", "cuda", "--repeats", "10"]
    model = ["--tiny", "--device", "cpu", "--threads", "1"] if dry_run else ["--device", "cuda", "--repeats", "5"]
    return [
        Step("gpu-marked tests", [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-rs", *tests],
             120 if not dry_run else 600),
        Step("check float64", [python, "-m", "gnn_transformer", "check", "--device", device, "--dtype", "float64",
                               *small], 45 if not dry_run else 600),
        Step("check float32", [python, "-m", "gnn_transformer", "check", "--device", device, "--dtype", "float32",
                               *small], 45 if not dry_run else 600),
        Step("bench_attention", [python, str(COMPARISONS / "bench_attention.py"), *attention,
                                 "--json", str(workdir / "attention.json")], 180 if not dry_run else 600, interpret),
        Step("bench_model", [python, str(COMPARISONS / "bench_model.py"), *model,
                             "--json", str(workdir / "model.json")], 90 if not dry_run else 600),
    ]


def run(step: Step) -> None:
    env = {**os.environ, **step.env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get(
        "PYTHONPATH")]))}
    start = time.perf_counter()
    try:
        done = subprocess.run(step.command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=step.timeout_s)
        step.status = "passed" if done.returncode == 0 else f"failed (exit {done.returncode})"
        step.output = done.stdout + ("\n" + done.stderr if done.returncode else "")
    except subprocess.TimeoutExpired as expired:
        step.status = f"timed out after {step.timeout_s} s"
        step.output = (expired.stdout or b"").decode(errors="replace") if isinstance(expired.stdout, bytes) else (
            expired.stdout or "")
    step.seconds = time.perf_counter() - start


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("torch", "torch_geometric", "triton", "gnn-transformer"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def device_name(dry_run: bool) -> str:
    import torch

    if torch.cuda.is_available() and not dry_run:
        props = torch.cuda.get_device_properties(0)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)" + (
        ": dry run" if dry_run else ": no CUDA device")


def _time(row: dict) -> float | None:
    return row.get("fwd+bwd", row.get("fwd")) if isinstance(row, dict) else None


def targets(attention: dict | None) -> list[tuple[str, str, str]]:
    """(target, verdict, evidence) per target of the fused backend, from bench_attention's results."""
    if attention is None:
        return [("every target", "not evaluated", "bench_attention produced no results")]
    cases = attention["cases"]

    def ratio_rows(kinds, other, limit, faster=False):
        verdicts, evidence = [], []
        for name, rows in cases.items():
            if rows["kind"] not in kinds:
                continue
            fused, base = _time(rows.get("fused")), _time(rows.get(other))
            if fused is None or base is None:
                evidence.append(f"{name}: {other if base is None else 'fused'} did not run")
                continue
            value = fused / base
            verdicts.append(value < limit if faster else value <= limit)
            evidence.append(f"{name}: {value:.2f}x")
        if not verdicts:
            return "not evaluated", "; ".join(evidence) or "no such case"
        return ("pass" if all(verdicts) else "fail"), "; ".join(evidence)

    out = [("complete and causal within 1.5x of SDPA", *ratio_rows(("complete", "causal"), "SDPA", 1.5)),
           ("windows at least as fast as FlexAttention", *ratio_rows(("window",), "Flex", 1.0)),
           ("ragged faster than varlen", *ratio_rows(("complete ragged",), "varlen", 1.0, faster=True)),
           ("ragged faster than FlexAttention's document mask", *ratio_rows(("complete ragged",), "Flex", 1.0,
                                                                             faster=True))]
    speedups, evidence = [], []
    for name, rows in cases.items():
        fused, conv = _time(rows.get("fused")), _time(rows.get("TransformerConv"))
        if fused is not None and conv is not None:
            speedups.append(conv / fused)
            evidence.append(f"{name}: {conv / fused:.0f}x")
    out.append(("at least 50x faster than TransformerConv",
                ("pass" if min(speedups) >= 50 else "fail") if speedups else "not evaluated",
                "; ".join(evidence) or "TransformerConv and fused never ran on the same case"))
    largest = max(cases.items(), key=lambda item: item[1]["edges"])
    ran = _time(largest[1].get("fused")) is not None
    out.append(("the largest complete graph runs (268M edges at full size)", "pass" if ran else "fail",
                f"{largest[0]}: {largest[1]['edges']:,} edges, "
                + ("ran" if ran else largest[1].get("fused", {}).get("note", "no fused row"))))
    ratios, evidence = [], []
    for name, rows in cases.items():
        fused, flex = rows.get("fused", {}), rows.get("Flex", {})
        if "peak" in fused and "peak" in flex and flex["peak"] > 0:
            ratios.append(fused["peak"] / flex["peak"])
            evidence.append(f"{name}: {ratios[-1]:.2f}x")
    out.append(("peak memory within 1.5x of FlexAttention's",
                ("pass" if max(ratios) <= 1.5 else "fail") if ratios else "not evaluated",
                "; ".join(evidence) or "FlexAttention did not run"))
    return out


def report(all_steps: list[Step], dry_run: bool, workdir: Path, total_s: float) -> str:
    attention = model = None
    if (workdir / "attention.json").exists():
        attention = json.loads((workdir / "attention.json").read_text())
    if (workdir / "model.json").exists():
        model = json.loads((workdir / "model.json").read_text())
    lines = [f"# GPU check{' (dry run on CPU: toy sizes, timings meaningless)' if dry_run else ''}", "",
             f"- device: {device_name(dry_run)}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
             f"- total: {total_s:.0f} s", "", "## Steps", "", "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.0f} |" for s in all_steps]
    lines += ["", "## Targets of the fused backend", ""]
    if dry_run:
        lines += ["Dry run: evaluated on toy rows through Triton's interpreter to exercise this code; "
                  "the verdicts mean nothing.", ""]
    lines += ["| target | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {e} |" for t, v, e in targets(attention)]
    if model is not None:
        lines += ["", f"End to end: {len(model['results'])} rows on {model['device']} (table below)."]
    for step in all_steps:
        lines += ["", f"## {step.name}: {step.status}", "", "```", step.output.strip()[-6000:] or "(no output)", "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="every step on CPU at toy sizes")
    parser.add_argument("--out", default="gpu_check_report.md", help="the markdown report")
    parser.add_argument("--only", default=None, help="comma-separated substrings of step names")
    args = parser.parse_args(argv)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device here: run on a GPU machine, or with --dry-run to check the script on CPU")
            return 2
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        selected = [s for s in steps(args.dry_run, workdir, sys.executable)
                    if args.only is None or any(part in s.name for part in args.only.split(","))]
        for step in selected:
            print(f"{step.name} ...", flush=True)
            run(step)
            print(f"  {step.status} in {step.seconds:.0f} s", flush=True)
        text = report(selected, args.dry_run, workdir, time.perf_counter() - start)
    Path(args.out).write_text(text)
    print(f"report: {args.out}")
    return 0 if all(s.status == "passed" for s in selected) else 1


if __name__ == "__main__":
    raise SystemExit(main())
