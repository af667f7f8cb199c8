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
