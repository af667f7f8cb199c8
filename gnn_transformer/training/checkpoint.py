"""Checkpoints in safetensors with their configuration beside them, written atomically.

A checkpoint is a folder ``step-00001000/`` holding

* ``model.safetensors`` -- the model's parameters and buffers (tied weights stored once);
* ``optimizer.safetensors`` -- the optimizer's tensors (Adam's moments, step counts) and
  the random number generator states of torch (and CUDA);
* ``config.json`` -- the configuration needed to rebuild the model and the run;
* ``state.json`` -- the step, the optimizer's parameter groups and other non-tensor state,
  Python's ``random`` state.

Atomicity: the folder is written under a temporary name, every file is flushed and
``fsync``-ed, the folder is renamed into place (``os.replace``, atomic on POSIX) and its
parent synced; only then is the small pointer file ``latest`` replaced (temporary file,
``fsync``, ``os.replace``) to name it.  A crash at any moment leaves ``latest`` naming a
complete checkpoint (or no ``latest`` at all before the first one); stray temporary
folders are removed by the next save.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "atomic_write", "CheckpointError"]

LATEST = "latest"
_TMP_PREFIX = ".tmp-"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupted) or does not fit the model."""


def _read(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)``; an unreadable file becomes an error that names it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the checkpoint is incomplete")
    try:
        return read(path)
    except Exception as error:  # safetensors, json and unicode errors all mean: not what was written
        raise CheckpointError(f"{path} cannot be read, it is truncated or corrupted "
                              f"({type(error).__name__}: {error})") from error


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("checkpoints need safetensors: pip install 'gnn-transformer[train]'") from error
    return safetensors.torch


def _fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write a file so that ``path`` holds either its old content or the complete new one.

    ``write(tmp_path)`` writes the new content to a temporary file in the same folder; it is
    then ``fsync``-ed and renamed over ``path`` with ``os.replace``, and the folder is synced.
    """
    path = Path(path)
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        write(tmp)
        _fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_path(path.parent)
    return path


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """An optimizer's state split into tensors (for safetensors) and the rest (for JSON)."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, state in state_dict["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _optimizer_state_dict(tensors: dict, json_part: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in json_part["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": json_part["param_groups"]}


def _rng_tensors() -> dict:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    return tensors


def _restore_rng(tensors: dict, python_state) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    version, internal, gauss = python_state
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(directory: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int,
                    config: dict, state: dict | None = None, keep: int = 2) -> Path:
    """Write checkpoint ``directory/step-<step>/`` atomically and point ``directory/latest`` at it.

    Args:
        directory: the run's checkpoint folder (created if needed).
        model, optimizer: what to save (the optimizer may be ``None``).
        step: the number of optimizer steps taken.
        config: JSON-serialisable configuration, written to ``config.json``.
        state: more JSON-serialisable run state, stored in ``state.json``.
        keep: how many checkpoints to keep (older ones are deleted after the new one is in place).

    Returns:
        the checkpoint's folder.
    """
    st = _safetensors()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stray in directory.glob(f"{_TMP_PREFIX}*"):  # left by a crash during an earlier save
        shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
    name = f"step-{step:08d}"
    tmp = directory / f"{_TMP_PREFIX}{name}.{os.getpid()}"
    tmp.mkdir()
    st.save_model(model, str(tmp / "model.safetensors"))
    tensors, optimizer_json = _optimizer_parts(optimizer) if optimizer is not None else ({}, None)
    st.save_file({**tensors, **_rng_tensors()}, str(tmp / "optimizer.safetensors"))
    _write_json(tmp / "config.json", config)
    _write_json(tmp / "state.json", {"step": step, "optimizer": optimizer_json, "python_rng": random.getstate(),
                                     **(state or {})})
    for file in tmp.iterdir():
        _fsync_path(file)
    _fsync_path(tmp)
    final = directory / name
    if final.exists():  # the same step saved again (e.g. after a resume): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_path(directory)
    atomic_write(directory / LATEST, lambda path: path.write_text(name + "\n"))
    checkpoints = sorted(p for p in directory.glob("step-*") if p.is_dir())
    for old in checkpoints[: max(0, len(checkpoints) - keep)]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The folder ``directory/latest`` names, or ``None`` if no checkpoint was completed."""
    pointer = Path(directory) / LATEST
    if not pointer.exists():
        return None
    checkpoint = Path(directory) / pointer.read_text().strip()
    if not (checkpoint / "state.json").exists():
        raise FileNotFoundError(f"{pointer} names {checkpoint.name}, which is missing or incomplete")
    return checkpoint


def read_config(checkpoint: str | Path) -> dict:
    """The ``config.json`` of a checkpoint folder."""
    return _read(Path(checkpoint) / "config.json", lambda path: json.loads(path.read_text()))


def _load_model(st, model: nn.Module, path: Path) -> None:
    """Load ``path`` into ``model``; a file of another model names the keys and shapes that differ."""
    tensors = _read(path, lambda path: st.load_file(str(path)))
    expected = model.state_dict()
    stored_once = {name for name in expected if name not in tensors and any(
        expected[name] is expected[other] or expected[name].data_ptr() == expected[other].data_ptr()
        for other in tensors if other in expected)}  # tied weights are stored once
    missing = sorted(set(expected) - set(tensors) - stored_once)
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{name}: {tuple(tensors[name].shape)} in the file, {tuple(expected[name].shape)} in the model"
              for name in sorted(set(tensors) & set(expected)) if tensors[name].shape != expected[name].shape]
    if missing or unexpected or shapes:
        parts = [f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "",
                 f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}" if unexpected else "",
                 "shapes differ: " + "; ".join(shapes[:3]) + (" ..." if len(shapes) > 3 else "") if shapes else ""]
        raise CheckpointError(f"{path} holds another model's weights (another configuration?): "
                              + ", ".join(part for part in parts if part))
    st.load_model(model, str(path), strict=True)


def load_checkpoint(checkpoint: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    restore_rng: bool = True) -> dict:
    """Load a checkpoint folder (or a run folder: its ``latest``) into ``model`` (and ``optimizer``).

    Restores the random number generators unless ``restore_rng`` is false.  Returns the
    ``state.json`` content (``step`` and the run's extra state) with ``config`` added.
    """
    st = _safetensors()
    checkpoint = Path(checkpoint)
    if (checkpoint / LATEST).exists():
        checkpoint = latest_checkpoint(checkpoint)
    if not (checkpoint / "model.safetensors").exists():
        raise FileNotFoundError(f"{checkpoint} is not a checkpoint folder (no model.safetensors)")
    _load_model(st, model, checkpoint / "model.safetensors")
    state = _read(checkpoint / "state.json", lambda path: json.loads(path.read_text()))
    tensors = _read(checkpoint / "optimizer.safetensors", lambda path: st.load_file(str(path)))
    if optimizer is not None:
        if state["optimizer"] is None:
            raise ValueError(f"{checkpoint} holds no optimizer state")
        optimizer.load_state_dict(_optimizer_state_dict(tensors, state["optimizer"]))
    if restore_rng:
        _restore_rng(tensors, state["python_rng"])
    state["config"] = read_config(checkpoint)
    state["path"] = str(checkpoint)
    return state
