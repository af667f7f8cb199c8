"""Context parallel x data parallel (gloo, 4 forked processes = 2 replicas x 2 context ranks) trains as one process.

The processes join from torchrun's environment (:func:`init_from_env` with ``context_parallel=2``,
which builds each replica's process group from the world); each replica reads its half of every
global batch, and its two ranks split the nodes of that half (the sequences' causal graphs cut
across the ranks).  Losses of 20 steps and the final weights equal one process on the whole batch.
"""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gnn_transformer import GraphDecoderModel
from gnn_transformer.testing import relative_difference
from gnn_transformer.training import LanguageModelExamples, Process, TrainConfig, Trainer, init_from_env
from gnn_transformer.training.distributed import _free_port

STEPS, GLOBAL_BATCH = 20, 4
TOKENS = torch.randint(0, 11, (400,), generator=torch.Generator().manual_seed(3))


def train(process: Process) -> dict:
    """Losses of STEPS steps and the weights after them (float64, no dropout, no biases: see tests/test_distributed.py)."""
    torch.manual_seed(0)
    model = GraphDecoderModel(11, d_model=8, nhead=2, num_layers=1, dim_feedforward=16, dropout=0.0, bias=False,
                              tie_weights=True, dtype=torch.float64)
    config = TrainConfig(steps=STEPS, batch_size=GLOBAL_BATCH, warmup=4, label_smoothing=0.1, clip_norm=0.5,
                         progress=False)
    trainer = Trainer(model, config, process=process)
    losses, step = [], trainer.train_step

    def recorded(batch):  # fit's own step, its loss kept (the mean per token of the global batch)
        stats = step(batch)
        losses.append(stats["loss"])
        return stats

    trainer.train_step = recorded
    trainer.fit(LanguageModelExamples(TOKENS, 11, stride=7, attention_window=4))  # 56 windows of 11 tokens
    return {"losses": losses, "weights": {n: p.detach().clone() for n, p in model.named_parameters()}}


def _worker(rank, world_size, port, folder, strategy):
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    process = init_from_env("cpu", context_parallel=2, strategy=strategy)
    try:
        assert (process.data_rank, process.data_world_size) == (rank // 2, 2)
        assert dist.get_world_size(process.context_group) == 2
        torch.save(train(process), os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("strategy", ["halo", pytest.param("ring", marks=pytest.mark.slow),
                                      pytest.param("head", marks=pytest.mark.slow)])
def test_twenty_steps_context_parallel_x_ddp_equal_one_process(strategy, tmp_path):
    mp.start_processes(_worker, args=(4, _free_port(), str(tmp_path), strategy), nprocs=4, join=True,
                       start_method="fork")
    single = train(Process())
    assert len(single["losses"]) == STEPS
    for result in (torch.load(tmp_path / f"rank{r}.pt") for r in range(4)):
        assert len(result["losses"]) == STEPS
        assert max(abs(a - b) for a, b in zip(result["losses"], single["losses"])) <= 1e-10
        for name, weight in single["weights"].items():
            assert relative_difference(result["weights"][name], weight) <= 1e-10, name
    assert single["losses"][-1] < single["losses"][0] - 0.1  # it trained


# ---------------------------------------------------------------- the command line
TINY = ["--d-model", "16", "--nhead", "2", "--num-layers", "1", "--dim-feedforward", "32", "--no-progress",
        "--threads", "1", "--steps", "3", "--batch-size", "2", "--sequence-length", "16", "--attention-window", "4",
        "--sample-length", "4"]


def _cli_worker(rank, world_size, port, out):
    from gnn_transformer.cli import main

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    main(["train", "charlm", *TINY, "--context-parallel", "2", "--context-strategy", "ring", "--out", out])


def test_train_charlm_context_parallel_2_trains_as_one_process(tmp_path):
    """The command's processes (as torchrun starts them) split every sequence in two; the trained
    model's held-out loss is the single-process run's (float32: to rounding)."""
    import json

    from gnn_transformer.cli import main

    mp.start_processes(_cli_worker, args=(2, _free_port(), str(tmp_path / "cp")), nprocs=2, join=True,
                       start_method="fork")
    assert main(["train", "charlm", *TINY, "--dropout", "0", "--out", str(tmp_path / "one")]) == 0
    cp, one = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("cp", "one"))
    assert cp["steps"] == 3 and cp["hyperparameters"]["dropout"] == 0.0
    assert abs(cp["valid_loss_nats_per_char"] - one["valid_loss_nats_per_char"]) <= 1e-4
    assert (tmp_path / "cp" / "checkpoints" / "latest").exists()


def test_context_parallel_refuses_dropout_and_a_world_it_does_not_divide(tmp_path, monkeypatch, capsys):
    from gnn_transformer.cli import main

    with pytest.raises(SystemExit):
        main(["train", "charlm", "--context-parallel", "2", "--dropout", "0.1", "--out", str(tmp_path)])
    assert "--context-parallel trains without dropout, got 0.1" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    with pytest.raises(ValueError, match=r"context_parallel must be a positive divisor of the world size \(3"):
        init_from_env("cpu", context_parallel=2)


@pytest.mark.slow
def test_the_literal_command_starts_its_processes(tmp_path):
    """``gnn-transformer train charlm --context-parallel 2`` without torchrun spawns two processes."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    result = subprocess.run([sys.executable, "-m", "gnn_transformer", "train", "charlm", *TINY, "--context-parallel",
                             "2", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("held-out loss") == 1  # only the main process reports
    assert (tmp_path / "results.json").exists()
