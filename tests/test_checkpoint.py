import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch

from gnn_transformer import GraphTransformerModel
from gnn_transformer.training import (
    Seq2SeqExamples, TrainConfig, Trainer, atomic_write, latest_checkpoint, load_checkpoint, save_checkpoint,
)

PAIRS = [([2, 3, 4], [4, 3, 2]), ([5], [5]), ([6, 7], [7, 6]), ([2, 2, 3, 4, 5], [5, 4, 3, 2, 2]),
         ([3, 9, 8, 7], [7, 8, 9, 3]), ([11, 10], [10, 11]), ([4, 4], [4, 4]), ([8, 9, 10], [10, 9, 8])]
ROOT = Path(__file__).resolve().parents[1]


def build():
    torch.manual_seed(0)
    return GraphTransformerModel(12, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                 dim_feedforward=32, dropout=0.1, tie_weights="all", dtype=torch.float64)


def train(directory, steps, resume=False):
    """A small run with dropout (so the restored random state matters), checkpoints every 2 steps."""
    trainer = Trainer(build(), TrainConfig(steps=steps, batch_size=4, warmup=4, checkpoint_every=2, progress=False),
                      checkpoint_dir=directory, run_config={"task": "test"})
    if resume:
        assert trainer.resume()
    trainer.fit(Seq2SeqExamples(PAIRS, 0, 1))
    return trainer


class Crash(Exception):
    pass


def test_round_trip_restores_weights_optimizer_step_and_random_state(tmp_path):
    trainer = train(tmp_path, steps=3)
    expected_draw = torch.rand(3)  # the next random numbers after the final checkpoint
    other = Trainer(build(), trainer.config)
    torch.manual_seed(123)
    state = load_checkpoint(tmp_path, model=other.model, optimizer=other.optimizer)
    assert state["step"] == 3 and state["config"]["task"] == "test" and state["config"]["train"]["steps"] == 3
    assert torch.equal(torch.rand(3), expected_draw)
    for (name, a), b in zip(trainer.model.state_dict().items(), other.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert other.model.generator.weight is other.model.src_embed.weight  # ties survive the round trip
    moments = [s["exp_avg"] for s in other.optimizer.state.values()]
    assert torch.equal(moments[0], list(trainer.optimizer.state.values())[0]["exp_avg"])
    checkpoint = latest_checkpoint(tmp_path)
    assert sorted(p.name for p in checkpoint.iterdir()) == ["config.json", "model.safetensors",
                                                            "optimizer.safetensors", "state.json"]
    assert json.loads((checkpoint / "config.json").read_text())["train"]["batch_size"] == 4


def test_a_crash_while_writing_keeps_the_previous_checkpoint_and_resuming_loses_nothing_else(tmp_path, monkeypatch):
    reference = train(tmp_path / "uninterrupted", steps=6)
    real_save_file = safetensors.torch.save_file

    def crash_during_the_second_save(tensors, path, *args, **kwargs):
        if "step-00000004" in str(path):
            data = safetensors.torch.save(tensors)
            Path(path).write_bytes(data[: len(data) // 2])  # half a file, then the process "dies"
            raise Crash
        return real_save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", crash_during_the_second_save)
    with pytest.raises(Crash):
        train(tmp_path / "run", steps=6)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path / "run").name == "step-00000002"
    assert any(p.name.startswith(".tmp-") for p in (tmp_path / "run").iterdir())  # the half-written one
    resumed = train(tmp_path / "run", steps=6, resume=True)
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "run").iterdir())
    for a, b in zip(reference.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_killing_the_process_mid_checkpoint_loses_only_the_steps_since_the_last_one(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        import safetensors.torch
        import torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_checkpoint import train

        real = safetensors.torch.save_model
        def killed_while_writing(model, path, *args, **kwargs):
            if "step-00000004" in str(path):
                with open(path, "wb") as file:  # the first bytes of the file, then the end
                    file.write(b'{{"__metadata__": {{"format": "pt"}}, "decoder.layers.0')
                    file.flush()
                os._exit(9)  # no cleanup, no exception handlers: as if killed
            return real(model, path, *args, **kwargs)
        safetensors.torch.save_model = killed_while_writing
        train(Path({str(tmp_path / "run")!r}), steps=6)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    assert latest_checkpoint(tmp_path / "run").name == "step-00000002"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = train(tmp_path / "run", steps=6, resume=True)
        reference = train(tmp_path / "uninterrupted", steps=6)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(reference.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "latest"
    atomic_write(target, lambda path: path.write_text("step-1\n"))

    def failing(path):
        path.write_text("step-")
        raise Crash

    with pytest.raises(Crash):
        atomic_write(target, failing)
    assert target.read_text() == "step-1\n" and sorted(p.name for p in tmp_path.iterdir()) == ["latest"]


def test_checkpoints_are_pruned_and_bad_paths_are_named(tmp_path):
    model = build()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, model=model, optimizer=None, step=step, config={}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003"]
    with pytest.raises(ValueError, match="holds no optimizer state"):
        load_checkpoint(tmp_path, model=model, optimizer=torch.optim.Adam(model.parameters()))
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path / "nowhere", model=model)
    assert latest_checkpoint(tmp_path / "empty") is None
    assert not Trainer(build(), TrainConfig(), checkpoint_dir=tmp_path / "empty").resume()


def test_truncated_corrupted_or_foreign_checkpoints_name_the_file_and_the_mismatch(tmp_path):
    from gnn_transformer.training import CheckpointError

    model = build()
    folder = save_checkpoint(tmp_path, model=model, optimizer=None, step=1, config={"kind": "test"})
    weights = folder / "model.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[: len(intact) // 2])  # a copy cut short
    with pytest.raises(CheckpointError, match=r"model\.safetensors cannot be read, it is truncated or corrupted"):
        load_checkpoint(tmp_path, model=model)
    weights.write_bytes(intact)
    state = (folder / "state.json").read_text()
    (folder / "state.json").write_text(state[:12])
    with pytest.raises(CheckpointError, match=r"state\.json cannot be read"):
        load_checkpoint(tmp_path, model=model)
    (folder / "state.json").write_text(state)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing: the checkpoint is incomplete"):
        load_checkpoint(folder, model=model)

    other = tmp_path / "other"
    save_checkpoint(other, model=model, optimizer=None, step=1, config={})
    wider = GraphTransformerModel(12, d_model=32, nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                                  dim_feedforward=32, tie_weights="all", dtype=torch.float64)
    with pytest.raises(CheckpointError, match=r"holds another model's weights .*missing \['transformer\.encoder\.layers"
                                              r"\.1\..*shapes differ: .*\(12, 16\) in the file, \(12, 32\) in the model"):
        load_checkpoint(other, model=wider)
    untied = GraphTransformerModel(12, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                   dim_feedforward=32, dtype=torch.float64)
    with pytest.raises(CheckpointError,
                       match=r"missing \[.src_embed\.embedding\.weight., .tgt_embed\.embedding\.weight.\]"):
        load_checkpoint(other, model=untied)
    load_checkpoint(other, model=build())  # the tied model it came from loads, with its weight stored once


def test_a_corrupted_run_is_one_line_on_the_command_line(tmp_path, capsys):
    from gnn_transformer.cli import main

    folder = save_checkpoint(tmp_path / "checkpoints", model=build(), optimizer=None, step=1,
                             config={"kind": "seq2seq"})
    (folder / "config.json").write_text("{not json")
    with pytest.raises(SystemExit) as exit:
        main(["explain", "--checkpoint", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1 and "config.json cannot be read" in err
