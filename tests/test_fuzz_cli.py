"""Hostile command lines, generated: every option of every subcommand refuses a bad value in one
line on stderr (exit 2, the option named, no traceback), and pattern options are checked only
where the pattern reads them.

Examples per test: the hypothesis profile (``ci``: 25, see tests/conftest.py).
"""
from __future__ import annotations

import argparse

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gnn_transformer.graphs.patterns import OPTIONS, PATTERNS

PATTERN_NAMES = sorted(name for name in PATTERNS if PATTERNS[name].input != "file")


def cli_options():
    """(argv prefix, flag, its type) for every option of every subcommand that has a checking type."""
    from gnn_transformer.cli import build_parser

    prefixes = {"graph": ["graph", "causal"], "train": ["train", "copy"]}
    found = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, path + [name])
            elif action.option_strings and getattr(action.type, "__module__", "").startswith("gnn_transformer.cli"):
                found.append((prefixes.get(path[0], path), action.option_strings[-1], action.type.__name__))

    walk(build_parser(), [])
    return found


BAD_VALUES = {
    "positive_int": st.one_of(st.integers(-10, 0).map(str), st.sampled_from(["x", "1.5", "", "nan"])),
    "non_negative_int": st.one_of(st.integers(-10, -1).map(str), st.sampled_from(["x", "2.0"])),
    "probability": st.one_of(st.floats(1.0, 10.0).map(str), st.floats(-10.0, -0.01).map(str),
                             st.sampled_from(["nan", "inf", "x"])),
    "positive_float": st.one_of(st.floats(-10.0, 0.0).map(str), st.sampled_from(["nan", "-inf", "x"])),
    "fraction": st.one_of(st.floats(1.0, 10.0, exclude_min=True).map(str), st.floats(-10.0, -0.01).map(str),
                          st.sampled_from(["nan", "inf", "x"])),
    "halting_threshold": st.one_of(st.floats(1.0, 10.0, exclude_min=True).map(str), st.floats(-10.0, 0.0).map(str),
                                   st.sampled_from(["nan", "inf", "x"])),
    "device": st.sampled_from(["tpu", "gpu0", "cuda:99", "mps", "", "cuda:x"]),
    "existing_file": st.just("/no/such/file.txt"),
    "output_file": st.sampled_from(["{blocker}/x.html", "{tmp}"]),
    "output_folder": st.just("{blocker}/run"),
    "picture_file": st.sampled_from(["{blocker}/x.png", "{tmp}/x.txt", "{tmp}"]),
    "page_file": st.sampled_from(["{blocker}/x.html", "{tmp}/x.png"]),
    "run_folder": st.sampled_from(["/no/such/run", "{blocker}"]),
}
CLI_OPTIONS = cli_options()


def run_cli(argv, capsys):
    from gnn_transformer.cli import main

    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err
    return exit.value.code, err


def test_every_cli_option_type_has_bad_values_to_draw():
    """The draw below samples options at random: every option type must have bad values, or a new
    one is tested only when hypothesis happens to pick it."""
    kinds = {kind for _, _, kind in CLI_OPTIONS}
    assert kinds <= set(BAD_VALUES), f"no bad values for {sorted(kinds - set(BAD_VALUES))}"


@given(choice=st.sampled_from(CLI_OPTIONS), data=st.data())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_cli_option_refuses_a_bad_value_in_one_line(choice, data, capsys, monkeypatch, tmp_path):
    prefix, flag, kind = choice
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    value = data.draw(BAD_VALUES[kind]).format(blocker=blocker, tmp=tmp_path)
    code, err = run_cli([*prefix, f"{flag}={value}"], capsys)
    assert code == 2, err
    assert "Traceback" not in err and f"argument {flag}" in err, err


PATTERN_FLAGS = [(command, name, OPTIONS[key]) for command in ("graph", "explore")
                 for name in PATTERN_NAMES for key in PATTERNS[name].used_options
                 if OPTIONS[key].type is int]


@given(choice=st.sampled_from(PATTERN_FLAGS), data=st.data())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_pattern_option_refuses_a_bad_value_in_one_line(choice, data, capsys, monkeypatch, tmp_path):
    command, name, option = choice
    monkeypatch.chdir(tmp_path)
    value = data.draw(st.one_of(st.integers(-5, option.minimum - 1).map(str), st.sampled_from(["x", "1.5"])))
    argv = ["graph", name] if command == "graph" else ["explore", "--pattern", name]
    code, err = run_cli([*argv, f"{option.flag}={value}"], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and f"argument {option.flag}" in err, err


@pytest.mark.parametrize("argv", [["graph", "causal", "--batch", "1", "--n", "3", "--height", "0", "--width", "x",
                                   "--radius", "-1", "--kernel-size", "0"],
                                  ["graph", "rows", "--height", "2", "--width", "2", "--n", "-3"]])
def test_options_a_pattern_does_not_read_are_not_checked(argv, capsys):
    from gnn_transformer.cli import main

    assert main(argv) == 0
    assert "maximum path length" in capsys.readouterr().out
