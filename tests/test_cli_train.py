import json

import pytest
import torch
from safetensors.torch import load_file

from gnn_transformer.cli import main
from gnn_transformer.tasks.runs import load_run

TINY = ["--d-model", "16", "--nhead", "2", "--num-layers", "1", "--dim-feedforward", "32", "--no-progress",
        "--threads", "1"]


def test_train_copy_reports_greedy_and_beam_accuracy_and_resumes(tmp_path, capsys):
    out = tmp_path / "copy"
    common = ["train", "copy", *TINY, "--num-train", "200", "--num-test", "30", "--batch-size", "8",
              "--out", str(out)]
    assert main([*common, "--steps", "2"]) == 0
    text = capsys.readouterr().out
    assert "exact match, greedy" in text and "exact match, beam (size 4" in text
    assert "lengths 6, 9, left out of training" in text
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 2 and 0.0 <= results["beam"]["accuracy"] <= 1.0
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    assert main([*common, "--steps", "3", "--resume"]) == 0
    assert "resumed from step 2" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["steps"] == 3
    straight = tmp_path / "straight"  # the same 3 steps (with dropout) without stopping
    assert main([*common[:-1], str(straight), "--steps", "3"]) == 0
    resumed, uninterrupted = (load_file(str(d / "checkpoints" / "step-00000003" / "model.safetensors"))
                              for d in (out, straight))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


def test_train_translate_draws_the_alignment(tmp_path, capsys):
    assert main(["train", "translate", *TINY, "--steps", "1", "--num-train", "100", "--num-test", "10",
                 "--batch-size", "8", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "alignment.png").stat().st_size > 1000
    assert "alignment picture" in capsys.readouterr().out


def test_train_charlm_prints_a_sample(tmp_path, capsys):
    assert main(["train", "charlm", *TINY, "--steps", "1", "--batch-size", "4", "--sample-length", "12",
                 "--prompt", "def ", "--attention-window", "6", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "sample (temperature 0.8" in text and "bits/char" in text
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["sample"].startswith("def ") and len(results["sample"]) == 16
    run = load_run(tmp_path)  # the saved run knows its window graph and its characters
    assert not run.is_seq2seq and run.attention_window == 6 and run.step == 1
    data = run.language_model_data("def f():")
    assert data.edge_index.size(1) == sum(min(i + 1, 6) for i in range(8))
    assert run.vocabulary.decode(data.x.tolist(), strip_end=False) == list("def f():")


@pytest.mark.parametrize("flags, message", [(["--steps", "0"], "argument --steps: expected a positive integer, got 0"),
                                            (["--threads", "0"], "argument --threads: expected a positive integer")])
def test_bad_train_flags_are_named(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "copy", *flags, "--out", str(tmp_path)])
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_distributed_without_torchrun_says_how_to_launch(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node"):
        main(["train", "copy", "--distributed", "--steps", "1", "--out", str(tmp_path)])
