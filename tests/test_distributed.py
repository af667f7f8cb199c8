"""Two processes (gloo on CPU) train exactly as one process on the same global batch."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gnn_transformer import GraphTransformerModel
from gnn_transformer.testing import relative_difference
from gnn_transformer.training import Process, Seq2SeqExamples, TrainConfig, Trainer, make_loader

# ragged on purpose: the two halves of a global batch hold different numbers of target tokens
PAIRS = [([2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2]), ([5], [5]), ([6, 7], [7, 6]), ([9, 9, 9], [9, 9, 9]),
         ([3, 9, 8, 7, 2, 4, 5, 6, 10], [10, 6, 5, 4, 2, 7, 8, 9, 3]), ([11, 10], [10, 11]), ([4], [4]),
         ([8, 9, 10, 11], [11, 10, 9, 8]), ([2, 2, 2, 2, 2, 3], [3, 2, 2, 2, 2, 2]), ([7, 6], [6, 7]),
         ([10], [10]), ([3, 4, 5, 6, 7], [7, 6, 5, 4, 3])]
STEPS, GLOBAL_BATCH = 3, 6


def run_steps(process: Process) -> dict:
    """Gradients of the first step, then the weights after STEPS steps (float64, no dropout).

    Without biases: the key bias of attention has an analytically zero gradient (the softmax
    ignores a shift shared by all of a query's scores), so its computed gradient is rounding
    noise (~1e-18) that Adam divides by its own size into steps of random sign -- different in
    any two runs, distributed or not.
    """
    torch.manual_seed(0)
    model = GraphTransformerModel(12, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                  dim_feedforward=32, dropout=0.0, bias=False, tie_weights="all",
                                  dtype=torch.float64)
    config = TrainConfig(steps=STEPS, batch_size=GLOBAL_BATCH, warmup=2, label_smoothing=0.1, clip_norm=0.5,
                         progress=False)
    trainer = Trainer(model, config, process=process)
    batches = iter(make_loader(Seq2SeqExamples(PAIRS, 0, 1), GLOBAL_BATCH, seed=1, rank=process.rank,
                               world_size=process.world_size))
    first = next(batches)
    stats = trainer.backward(first)
    gradients = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    trainer.optimizer_step()
    for _ in range(STEPS - 1):
        trainer.train_step(next(batches))
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    return {"gradients": gradients, "weights": weights, "global_tokens": stats["tokens"],
            "local_tokens": first["tgt"].num_nodes, "loss": stats["loss"]}


def _worker(rank: int, world_size: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.save(run_steps(Process(rank, world_size)), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert relative_difference(a[name], b[name]) <= 1e-10, name


def test_two_processes_give_the_gradients_and_weights_of_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = run_steps(Process())
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["local_tokens"] != ranks[1]["local_tokens"]  # a ragged split
    assert ranks[0]["local_tokens"] + ranks[1]["local_tokens"] == single["global_tokens"]
    for result in ranks:
        assert result["global_tokens"] == single["global_tokens"]
        assert abs(result["loss"] - single["loss"]) <= 1e-12
        _assert_close(result["gradients"], single["gradients"])
        _assert_close(result["weights"], single["weights"])
    torch.manual_seed(0)
    initial = GraphTransformerModel(12, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                    dim_feedforward=32, bias=False, tie_weights="all", dtype=torch.float64)
    moved = [relative_difference(single["weights"][n], p.detach()) for n, p in initial.named_parameters()]
    assert min(moved) > 1e-4  # every parameter was trained


@pytest.mark.slow
def test_the_command_line_trains_under_torchrun(tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    command = [torchrun, "--nproc-per-node", "2", "--master-port", "29517", "-m", "gnn_transformer", "train",
               "copy", "--distributed", "--steps", "4", "--batch-size", "8", "--d-model", "16", "--num-layers", "1",
               "--dim-feedforward", "32", "--no-progress", "--no-plot", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("exact match, greedy") == 1  # only the main process reports
    assert (tmp_path / "checkpoints" / "latest").exists()
