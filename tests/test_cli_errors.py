"""A user error on the command line is one message and exit status 2, never a traceback."""
import subprocess
import sys

import pytest

from gnn_transformer.cli import main

# (arguments, a fragment the error must contain): bad values of each option, checked when parsed
BAD_OPTIONS = [
    (["check", "--nhead", "0"], "argument --nhead: expected a positive integer, got 0"),
    (["check", "--d-model", "x"], "argument --d-model: expected an integer, got 'x'"),
    (["check", "--batch-size", "0"], "argument --batch-size: expected a positive integer, got 0"),
    (["check", "--num-encoder-layers", "-1"], "argument --num-encoder-layers: expected a positive integer, got -1"),
    (["check", "--num-decoder-layers", "0"], "argument --num-decoder-layers"),
    (["check", "--dim-feedforward", "0"], "argument --dim-feedforward"),
    (["check", "--device", "tpu"], "argument --device: expected a device such as 'cpu' or 'cuda', got 'tpu'"),
    (["check", "--device", "mps"], "argument --device: device 'mps' is not supported here"),
    (["check", "--device", "cuda"], "argument --device: 'cuda' was asked for but torch sees no CUDA device"),
    (["check", "--device", "gpu0"], "argument --device: expected a device such as 'cpu' or 'cuda', got 'gpu0'"),
    (["check", "--seed", "-3"], "argument --seed: expected an integer >= 0, got -3"),
    (["check", "--d-model", "30", "--nhead", "4"], "--d-model 30 is not divisible by --nhead 4"),
    (["train", "copy", "--dropout", "1.5"], "argument --dropout: expected a probability in [0, 1), got 1.5"),
    (["train", "copy", "--dropout", "nan"], "argument --dropout: expected a finite number, got 'nan'"),
    (["train", "copy", "--label-smoothing", "2"], "argument --label-smoothing: expected a probability in [0, 1)"),
    (["train", "copy", "--batch-size", "-1"], "argument --batch-size: expected a positive integer, got -1"),
    (["train", "copy", "--beam-size", "0"], "argument --beam-size: expected a positive integer, got 0"),
    (["train", "copy", "--lr-factor", "0"], "argument --lr-factor: expected a positive number, got 0"),
    (["train", "copy", "--warmup", "0"], "argument --warmup"),
    (["train", "copy", "--cooldown", "1.5"], "argument --cooldown: expected a fraction in [0, 1], got 1.5"),
    (["train", "copy", "--num-train", "0"], "argument --num-train"),
    (["train", "copy", "--checkpoint-every", "0"], "argument --checkpoint-every"),
    (["train", "copy", "--device", "cuda:7"], "argument --device"),
    (["train", "charlm", "--sequence-length", "-1"], "argument --sequence-length: expected a positive integer"),
    (["train", "charlm", "--attention-window", "0"], "argument --attention-window"),
    (["train", "charlm", "--sample-length", "0"], "argument --sample-length"),
    (["experiment", "complexity", "--lengths", "8", "0"], "argument --lengths: expected a positive integer, got 0"),
    (["experiment", "complexity", "--radius", "-1"], "argument --radius: expected an integer >= 0, got -1"),
    (["experiment", "complexity", "--kernel-size", "0"], "argument --kernel-size"),
    (["experiment", "rank-collapse", "--depth", "0"], "argument --depth"),
    (["experiment", "rank-collapse", "--nhead", "0"], "argument --nhead"),
    (["experiment", "rank-collapse", "--n", "-2"], "argument --n"),
    (["explain", "--digits", "-1"], "argument --digits: expected an integer >= 0, got -1"),
    (["explain", "--nhead", "0"], "argument --nhead"),
    (["explain", "--layers", "-1"], "argument --layers: expected an integer >= 0, got -1"),
    (["explain", "--max-features", "0"], "argument --max-features"),
    (["graph", "causal", "--batch", "0"], "graph causal: argument --batch: expected a positive integer, got 0"),
    (["graph", "causal", "--n", "x"], "argument --n: expected an integer, got 'x'"),
    (["graph", "window", "--radius", "-1"], "argument --radius: expected an integer >= 0, got -1"),
    (["graph", "dilated", "--dilation", "0"], "argument --dilation"),
    (["graph", "global", "--num-global", "-1"], "argument --num-global"),
    (["graph", "bigbird", "--num-random", "-1"], "argument --num-random"),
    (["graph", "bigbird", "--seed", "-1"], "argument --seed"),
    (["graph", "block", "--block-size", "0"], "argument --block-size"),
    (["graph", "strided", "--stride", "0"], "argument --stride"),
    (["graph", "strided", "--part", "all"], "argument --part: pattern option part must be one of"),
    (["graph", "convolution", "--kernel-size", "0"], "argument --kernel-size"),
    (["graph", "rows", "--height", "0"], "argument --height"),
    (["graph", "columns", "--width", "-2"], "argument --width"),
    (["graph", "grid-window", "--text-length", "-1"], "argument --text-length"),
    (["graph", "edgelist", "--file", "MISSING.txt"], "argument --file: no file 'MISSING.txt'"),
    (["graph", "edgelist"], "the edgelist pattern reads its graph from a file: give --file PATH"),
    (["graph", "causal", "--out", "picture.pdf"], "argument --out: the picture must end in .png or .svg"),
    (["graph", "causal", "--layout", "tree"], "argument --layout: invalid choice: 'tree'"),
    (["graph", "ring"], "argument PATTERN: invalid choice: 'ring'"),
    (["explore", "--pattern", "ring"], "argument --pattern: invalid choice: 'ring'"),
    (["explore", "--pattern", "window", "--radius", "-1"], "explore window: argument --radius"),
    (["explore", "--pattern", "causal", "--batch", "0"], "explore causal: argument --batch"),
    (["explore", "--checkpoint", "NO_RUN"], "argument --checkpoint: no folder 'NO_RUN'"),
    (["explore", "--out", "page.png"], "argument --out: the page must end in .html"),
    (["explore", "--pattern", "window", "--source", "a b"], "--source/--target name words of a model"),
]


@pytest.mark.parametrize("argv, fragment", BAD_OPTIONS, ids=[" ".join(argv) for argv, _ in BAD_OPTIONS])
def test_bad_option_values_are_refused_when_parsed(argv, fragment, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the project
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    assert fragment in capsys.readouterr().err


def test_output_paths_under_a_file_are_refused(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for argv in (["explain", "--html", str(blocker / "page.html")],
                 ["graph", "causal", "--out", str(blocker / "picture.png")],
                 ["explore", "--out", str(blocker / "page.html")],
                 ["experiment", "complexity", "--out", str(blocker)],
                 ["train", "copy", "--out", str(blocker / "run")]):
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 2
        assert "is a file" in capsys.readouterr().err


def test_options_a_pattern_does_not_read_are_neither_required_nor_checked(capsys):
    """`graph causal --batch 0` once complained about the grid options, which causal graphs do not use."""
    assert main(["graph", "causal", "--batch", "2", "--n", "3", "--height", "0", "--file", "MISSING"]) == 0
    assert capsys.readouterr().out.startswith("pattern causal: 6 nodes, 12 edges")


def test_an_error_the_library_raises_for_user_input_is_one_line_with_status_2(tmp_path, capsys):
    """--nhead 3 with the preset's d_model 64: the model refuses it before training starts."""
    with pytest.raises(SystemExit) as exit:
        main(["train", "copy", "--nhead", "3", "--steps", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert exit.value.code == 2
    assert err.count("\n") == 1 and err.startswith("gnn-transformer train: ") and "nhead" in err
    assert "--debug shows the traceback" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="nhead"):
        main(["--debug", "train", "copy", "--nhead", "3", "--steps", "1", "--out", str(tmp_path / "run")])


def test_no_traceback_reaches_the_terminal(tmp_path):
    """The installed entry point, in a fresh process: the message, status 2 and no traceback."""
    for argv in (["check", "--nhead", "0"], ["train", "copy", "--nhead", "3", "--steps", "1", "--out",
                                            str(tmp_path / "run")]):
        result = subprocess.run([sys.executable, "-m", "gnn_transformer", *argv], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and "nhead" in result.stderr

