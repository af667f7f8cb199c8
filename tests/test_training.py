import math

import pytest
import torch
import torch.nn.functional as F

from gnn_transformer import GraphDecoderModel, GraphTransformerModel, graphs
from gnn_transformer.training import (
    GlobalBatchSampler, LanguageModelExamples, Seq2SeqExamples, TrainConfig, Trainer, WarmupInverseSqrt,
    Process, evaluate_loss, make_loader, token_loss, transformer_lr, cooldown_factor,
)

PAIRS = [([2, 3, 4], [4, 3, 2]), ([5], [5]), ([6, 7], [7, 6]), ([2, 2, 3, 4, 5], [5, 4, 3, 2, 2]),
         ([3, 9, 8, 7], [7, 8, 9, 3]), ([11, 10], [10, 11])]


def tiny_seq2seq(dtype=torch.float32, dropout=0.0):
    return GraphTransformerModel(12, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                 dim_feedforward=32, dropout=dropout, tie_weights="all", dtype=dtype)


def test_schedule_is_the_papers_formula():
    assert transformer_lr(1, 512, 4000) == pytest.approx(512 ** -0.5 * 4000 ** -1.5)
    assert transformer_lr(10_000, 512, 4000) == pytest.approx(512 ** -0.5 * 100 ** -1)
    schedule = WarmupInverseSqrt(64, warmup=100, factor=2.0)
    assert schedule(50) == pytest.approx(schedule.peak / 2)  # linear warm-up
    assert schedule(400) == pytest.approx(schedule.peak / 2)  # inverse square root after it
    assert max(schedule(s) for s in range(1, 1000)) == schedule.peak == schedule(100)
    with pytest.raises(ValueError, match="counts steps from 1"):
        schedule(0)
    with pytest.raises(ValueError, match="positive"):
        WarmupInverseSqrt(64, warmup=0)


def test_cooldown_falls_linearly_over_the_last_steps():
    plain = WarmupInverseSqrt(64, warmup=10)
    cooled = WarmupInverseSqrt(64, warmup=10, total=100, cooldown=40)
    assert [cooled(s) for s in range(1, 61)] == [plain(s) for s in range(1, 61)]  # untouched before the last 40
    assert cooled(61) == pytest.approx(plain(61))  # 40 / 40
    assert cooled(81) == pytest.approx(plain(81) * 20 / 40)
    assert cooled(100) == pytest.approx(plain(100) / 40)  # the last step: 1 / cooldown of the paper's rate
    assert cooldown_factor(100, 100, 0) == 1.0
    with pytest.raises(ValueError, match="cooldown must be at most the run's total steps, got cooldown=120"):
        WarmupInverseSqrt(64, warmup=10, total=100, cooldown=120)
    with pytest.raises(ValueError, match="cooldown must be at most"):
        WarmupInverseSqrt(64, warmup=10, cooldown=5)  # no total
    with pytest.raises(ValueError, match="cooldown must be a number of steps >= 0, got -1"):
        WarmupInverseSqrt(64, warmup=10, total=100, cooldown=-1)


def test_trainer_applies_the_cooldown():
    model = tiny_seq2seq()
    trainer = Trainer(model, TrainConfig(steps=8, batch_size=4, warmup=2, cooldown=4, progress=False))
    batches = make_loader(Seq2SeqExamples(PAIRS, bos=0, eos=1), batch_size=4)
    lrs = [trainer.train_step(batch)["lr"] for batch, _ in zip(batches, range(8))]
    plain = WarmupInverseSqrt(16, warmup=2)
    assert lrs == pytest.approx([plain(s) * min(1, (8 - s + 1) / 4) for s in range(1, 9)])


def test_label_smoothed_loss_is_a_sum_over_target_nodes():
    logits, labels = torch.randn(7, 5, dtype=torch.float64), torch.randint(5, (7,))
    loss, count = token_loss(logits, labels, label_smoothing=0.1)
    log_probs = logits.log_softmax(-1)
    expected = -(0.9 * log_probs[torch.arange(7), labels] + 0.1 * log_probs.mean(-1)).sum()
    assert count == 7 and torch.allclose(loss, expected)
    with pytest.raises(ValueError, match="logits for 7 tokens but 6 labels"):
        token_loss(logits, labels[:6])


def test_examples_shift_the_target_and_batch_into_one_graph_without_padding():
    item = Seq2SeqExamples(PAIRS, bos=0, eos=1)[0]
    assert item["tgt"].x.tolist() == [0, 4, 3, 2] and item["tgt"].y.tolist() == [4, 3, 2, 1]
    batch = next(iter(make_loader(Seq2SeqExamples(PAIRS, 0, 1), batch_size=6)))
    assert batch["src"].num_nodes == sum(len(s) for s, _ in PAIRS)  # every node a real token
    assert batch["tgt"].num_nodes == sum(len(t) + 1 for _, t in PAIRS)
    assert batch["src", "to", "tgt"].edge_index.size(1) == sum(len(s) * (len(t) + 1) for s, t in PAIRS)
    lm = LanguageModelExamples(torch.arange(20), window=8, stride=4)
    assert len(lm) == 3 and lm[1].x.tolist() == list(range(4, 12)) and lm[1].y.tolist() == list(range(5, 13))
    assert torch.equal(lm[0].edge_index, graphs.causal([8]))
    banded = LanguageModelExamples(torch.arange(20), window=8, attention_window=3)
    assert torch.equal(banded[1].edge_index, graphs.causal([8], window=3))
    with pytest.raises(ValueError, match="at least one"):
        Seq2SeqExamples([], 0, 1)
    with pytest.raises(ValueError, match="longer than window"):
        LanguageModelExamples(torch.arange(5), window=8)


def test_global_batches_depend_on_the_step_only_and_ranks_split_them():
    sampler = GlobalBatchSampler(50, batch_size=8, seed=3)
    batches = [b for b, _ in zip(sampler, range(14))]
    assert sorted(sum(batches[:6], [])) == sorted(set(sum(batches[:6], [])))  # an epoch has no repeats
    resumed = GlobalBatchSampler(50, batch_size=8, seed=3, start_step=9)
    assert next(iter(resumed)) == batches[9]
    parts = [next(iter(GlobalBatchSampler(50, 8, 3, rank=r, world_size=3, start_step=9))) for r in range(3)]
    assert sum(parts, []) == batches[9] and [len(p) for p in parts] == [3, 3, 2]
    with pytest.raises(ValueError, match="at least the number of processes"):
        GlobalBatchSampler(50, batch_size=2, world_size=4)
    with pytest.raises(ValueError, match="between 1 and the number of examples"):
        GlobalBatchSampler(5, batch_size=8)


def test_a_step_normalises_by_the_token_count_and_clips():
    model = tiny_seq2seq(torch.float64)
    trainer = Trainer(model, TrainConfig(label_smoothing=0.0, clip_norm=1e-3, warmup=10))
    batch = next(iter(make_loader(Seq2SeqExamples(PAIRS, 0, 1), batch_size=6)))
    stats = trainer.backward(batch)
    expected = F.cross_entropy(model(batch), batch["tgt"].y)
    assert stats["tokens"] == batch["tgt"].num_nodes and math.isclose(stats["loss"], float(expected.detach()), rel_tol=1e-12)
    stats = trainer.optimizer_step()
    assert stats["grad_norm"] > 1e-3 and stats["lr"] == trainer.schedule(1) and trainer.step == 1
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind", ["seq2seq", "decoder"])
def test_fit_learns_and_reports(kind, capsys):
    torch.manual_seed(0)
    if kind == "seq2seq":
        model, data = tiny_seq2seq(), Seq2SeqExamples(PAIRS, 0, 1)
    else:
        model = GraphDecoderModel(12, d_model=16, nhead=2, num_layers=1, dim_feedforward=32, dropout=0.0)
        data = LanguageModelExamples(torch.tensor([2, 3, 4, 5] * 12), window=6, stride=1)
    before = evaluate_loss(model, data)
    trainer = Trainer(model, TrainConfig(steps=40, batch_size=6, warmup=10, lr_factor=2.0, eval_every=20,
                                         progress=False))
    history = trainer.fit(data, evaluate=lambda t: {"loss": evaluate_loss(t.model, data)})
    assert [h["step"] for h in history] == [20, 40]
    assert history[-1]["loss"] < 0.5 * before
    assert "step 40" in capsys.readouterr().out


@pytest.mark.gpu
def test_mixed_precision_training_on_gpu():
    torch.manual_seed(0)
    model = tiny_seq2seq()
    trainer = Trainer(model, TrainConfig(steps=20, batch_size=6, warmup=5, lr_factor=2.0, progress=False),
                      process=Process(device="cuda"))
    data = Seq2SeqExamples(PAIRS, 0, 1)
    before = evaluate_loss(model, data, device="cuda")
    trainer.fit(data)
    assert next(model.parameters()).dtype == torch.float32  # autocast, not a cast of the weights
    assert evaluate_loss(model, data, device="cuda") < before
