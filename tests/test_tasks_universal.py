"""The addition task, longer held-out sources (length generalisation), and `train --architecture universal`."""
import json
import random

import pytest

from gnn_transformer.cli import main
from gnn_transformer.tasks import AdditionTask, DigitTask, get_task
from gnn_transformer.tasks.runs import build_model, load_run
from gnn_transformer.variants import GraphUniversalTransformer

TINY = ["--d-model", "16", "--nhead", "2", "--dim-feedforward", "32", "--no-progress", "--threads", "1"]


def test_addition_sources_are_two_numbers_and_targets_their_sum():
    task = AdditionTask(1, 3)
    rng = random.Random(0)
    for _ in range(200):
        source, target = task.sample(rng)
        a, b = "".join(source).split("+")
        assert 1 <= len(a) <= 3 and 1 <= len(b) <= 3 and (a[0] != "0" or a == "0") and (b[0] != "0" or b == "0")
        assert int("".join(target)) == int(a) + int(b)
    assert task.encode((["1", "+", "2"], ["3"])) == ([3, 12, 4], [5])  # ids after <s>, </s>; "+" is the last
    assert get_task("addition").max_target_length == 7
    with pytest.raises(ValueError, match="min_digits"):
        AdditionTask(3, 2)


@pytest.mark.parametrize("task", [DigitTask("sort"), AdditionTask(1, 4)], ids=["sort", "addition"])
def test_longer_sources_are_longer_than_any_trained(task):
    train, _ = task.splits(2000, 10, seed=0)
    longer = task.longer()
    _, test = longer.splits(0, 100, seed=0)
    assert min(len(source) for source, _ in test) > max(len(source) for source, _ in train)
    assert longer.transform == task.transform if isinstance(task, DigitTask) else longer.max_digits > task.max_digits


def test_build_model_universal_from_the_preset_keys():
    hp = dict(d_model=16, nhead=2, num_layers=1, dim_feedforward=32, dropout=0.0, architecture="universal",
              num_steps=3, act_threshold=0.9, ponder_penalty=0.05)
    model = build_model("seq2seq", (12, 12), hp)
    assert isinstance(model, GraphUniversalTransformer)
    assert model.num_steps == 3 and model.encoder.act_threshold == 0.9 and model.ponder_penalty == 0.05
    with pytest.raises(ValueError, match="architecture must be one of"):
        build_model("seq2seq", (12, 12), {**hp, "architecture": "rnn"})


def test_train_universal_reports_longer_sources_and_reloads(tmp_path, capsys):
    assert main(["train", "sort", "--architecture", "universal", "--num-steps", "2", *TINY, "--steps", "2",
                 "--num-train", "64", "--num-test", "8", "--batch-size", "8", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "longer sources than any trained (lengths 13 to 16), greedy:" in text
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["hyperparameters"]["architecture"] == "universal" and results["hyperparameters"]["dropout"] == 0.0
    assert set(results["longer"]["by_length"]) <= {"13", "14", "15", "16"}
    run = load_run(tmp_path)
    assert isinstance(run.model, GraphUniversalTransformer) and run.model.num_steps == 2
    assert "ponder picture:" in text and (tmp_path / "ponder.png").stat().st_size > 1000


def test_ponder_rows_hold_the_steps_of_every_node_of_the_decoded_pairs():
    from gnn_transformer.tasks.ponder import ponder_rows

    task = DigitTask("reverse")
    model = GraphUniversalTransformer(12, d_model=16, nhead=2, num_steps=3, dim_feedforward=32, dropout=0.0).eval()
    _, pairs = task.splits(0, 3, seed=0)
    for row, (source, _) in zip(ponder_rows(model, task, pairs), pairs):
        assert len(row["source_steps"]) == len(source) == len(row["source"])
        assert len(row["target_steps"]) == len(row["output"]) and row["max_steps"] == 3
        assert all(1 <= steps <= 3 for steps in row["source_steps"] + row["target_steps"])


@pytest.mark.parametrize("flags, message", [
    (["--act-threshold", "1.5"], "argument --act-threshold: expected a halting threshold in (0, 1], got 1.5"),
    (["--num-steps", "0"], "argument --num-steps: expected a positive integer, got 0"),
])
def test_bad_universal_flags_are_named(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "sort", "--architecture", "universal", *flags, "--out", str(tmp_path)])
    assert exit.value.code == 2 and message in capsys.readouterr().err
