"""Option types of the command line: each checks its value when the arguments are parsed.

argparse turns a ``ValueError``/``TypeError``/``argparse.ArgumentTypeError`` raised by a type
into ``gnn-transformer ...: error: argument --nhead: ...`` and exit status 2, so a bad value
never reaches the library (and never shows a traceback).  Checks that involve two options
(``--nhead`` dividing ``--d-model``) are made by :func:`check_divides` right after parsing.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

__all__ = ["positive_int", "non_negative_int", "probability", "positive_float", "halting_threshold", "device",
           "existing_file", "output_file", "output_folder"]


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes, counts, steps)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (warm-up steps, seeds)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def probability(text: str) -> float:
    """A probability in [0, 1) (dropout, label smoothing): 1 would drop or smooth everything."""
    value = _number(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {value:g}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning-rate factors)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value:g}")
    return value


def fraction(text: str) -> float:
    """A share of a whole in [0, 1] (the share of a run's steps in its cool-down)."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {value:g}")
    return value


def halting_threshold(text: str) -> float:
    """ACT's halting threshold: a number in (0, 1]."""
    value = positive_float(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"expected a halting threshold in (0, 1], got {value:g}")
    return value


def device(text: str) -> str:
    """A torch device that exists here: ``cpu``, or ``cuda`` / ``cuda:N`` when torch sees that GPU."""
    import torch

    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a device such as 'cpu' or 'cuda', got {text!r}") from None
    if parsed.type == "cpu":
        return text
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r} was asked for but torch sees no CUDA device")
        if parsed.index is not None and parsed.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r} was asked for but torch sees {count} CUDA device(s)")
        return text
    raise argparse.ArgumentTypeError(f"device {text!r} is not supported here: use 'cpu' or 'cuda'")


def existing_file(text: str) -> str:
    """A path to a file that exists and can be read."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file {text!r}" if not path.exists() else f"{text!r} is not a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text!r} cannot be read")
    return text


def _writable_folder(folder: Path, text: str) -> None:
    """The nearest existing folder at or above ``folder`` must be a writable folder."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {str(probe)!r} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {str(probe)!r} is not writable")


def output_file(text: str) -> str:
    """A file path that can be written: not a folder, under a folder that exists or can be made."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name")
    _writable_folder(path.absolute().parent, text)
    return text


def output_folder(text: str) -> Path:
    """A folder that exists or can be made, and can be written."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    _writable_folder(path.absolute(), text)
    return path

