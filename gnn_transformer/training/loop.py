r"""A small training loop: label smoothing, the paper's schedule, clipping, mixed precision, checkpoints.

One step (arXiv:1706.03762, section 5):

.. math::

    \mathcal{L} = \frac{1}{N_\text{tokens}} \sum_{\text{target nodes } t}
        \text{CE}_{\epsilon_{ls}}\big(\text{logits}_t, y_t\big), \qquad
    \theta \leftarrow \text{Adam}_{\beta_1 = 0.9, \beta_2 = 0.98, \epsilon = 10^{-9}}
        \big(\theta, \text{clip}(\nabla_\theta \mathcal{L}), lrate(\text{step})\big)

plus, for a model that declares an auxiliary loss (``model.auxiliary_loss = True``: its forward
called with ``return_auxiliary_loss=True`` returns ``(logits, summed auxiliary loss)``, as
ACT's ponder cost :math:`\tau \sum_i \rho_i` of the Universal Transformer), that sum, with
label smoothing :math:`\epsilon_{ls}` (0.1 in the paper) and :math:`N_\text{tokens}`
the number of target tokens of the *global* batch: in a distributed run every process
divides its sum by the all-reduced token count (times the number of processes, which
DistributedDataParallel's gradient averaging divides out again), so a ragged batch split
across processes gives the gradient of the whole batch.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .data import batch_labels, make_loader
from .distributed import Process, all_reduce_sum, barrier, context_parallel_batch
from .schedule import WarmupInverseSqrt

__all__ = ["TrainConfig", "Trainer", "token_loss", "evaluate_loss"]


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (stored in every checkpoint's ``config.json``).

    ``batch_size`` counts examples of the global batch (all processes together);
    ``cooldown`` steps at the end take a linearly falling learning rate (0: the paper's
    schedule to the last step; see :mod:`.schedule`); ``eval_every``/``checkpoint_every`` of 0 turn evaluation/periodic checkpoints off;
    ``mixed_precision`` applies on CUDA only (bfloat16 where supported, else float16 with
    a gradient scaler).
    """

    steps: int = 1000
    batch_size: int = 64
    warmup: int = 400
    lr_factor: float = 1.0
    cooldown: int = 0
    label_smoothing: float = 0.1
    clip_norm: float | None = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    mixed_precision: bool = True
    seed: int = 0
    progress: bool = True
    extra: dict = field(default_factory=dict)


def token_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> tuple[Tensor, int]:
    """Summed (label-smoothed) cross-entropy over the target nodes and their number.

    Shapes: logits (N, V); labels (N,).  Returns a 0-dim loss and ``N``.
    """
    if logits.size(0) != labels.size(0):
        raise ValueError(f"got logits for {logits.size(0)} tokens but {labels.size(0)} labels")
    loss = F.cross_entropy(logits, labels, reduction="sum", label_smoothing=label_smoothing)
    return loss, labels.numel()


def _mixed_precision(device: str, enabled: bool):
    """(autocast context factory, gradient scaler or None) for ``device``."""
    if not enabled or not str(device).startswith("cuda"):
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return partial(torch.autocast, "cuda", dtype=dtype), scaler


class Trainer:
    """Train ``model`` (logits per target node from a collated batch) with Adam and the paper's schedule.

    Args:
        model: a :class:`~gnn_transformer.GraphTransformerModel` or ``GraphSequenceModel`` (or any
            module mapping a collated batch to logits for its labelled nodes).
        config: the run's :class:`TrainConfig`.
        d_model: the width that sets the schedule (default: read from the model).
        process: this process in a distributed run (default: a single process on the CPU);
            with more than one process the model is wrapped in ``DistributedDataParallel``; with
            ``process.context_parallel`` > 1 every batch is split across the process's
            context-parallel group (:func:`~.distributed.context_parallel_batch`).
        checkpoint_dir: where checkpoints go (``None``: no checkpoints).
        run_config: JSON-serialisable description of model and task, saved with each checkpoint.

    Example::

        trainer = Trainer(model, TrainConfig(steps=2000), checkpoint_dir="runs/copy")
        trainer.resume()                  # continues from runs/copy/latest if there is one
        trainer.fit(dataset, evaluate=lambda t: {"accuracy": ...})
    """

    def __init__(self, model: nn.Module, config: TrainConfig, *, d_model: int | None = None,
                 process: Process = Process(), checkpoint_dir: str | Path | None = None,
                 run_config: dict | None = None) -> None:
        self.config, self.process = config, process
        self.model = model.to(process.device)
        self.module = self.model
        if process.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [torch.device(process.device).index] if str(process.device).startswith("cuda") else None
            self.module = DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.0, betas=tuple(config.betas), eps=config.eps)
        self.schedule = WarmupInverseSqrt(d_model or _width(model), config.warmup, config.lr_factor,
                                          total=config.steps, cooldown=config.cooldown)
        self.autocast, self.scaler = _mixed_precision(process.device, config.mixed_precision)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.run_config = run_config or {}
        self.step = 0
        self.history: list[dict] = []

    # ------------------------------------------------------------------ one step
    def backward(self, batch) -> dict:
        """Forward and backward of one batch; the loss is normalised by the global token count.

        Returns ``{"loss": mean loss per token of the global batch, "tokens": global tokens}``.
        """
        self.model.train()
        batch = batch.to(self.process.device)
        if self.process.context_parallel > 1:  # this rank's nodes; attention across the replica's group
            batch = context_parallel_batch(batch, self.process.context_group, self.process.strategy)
        auxiliary = None
        with self.autocast():
            if getattr(self.model, "auxiliary_loss", False):  # e.g. ACT's ponder cost, summed over the batch
                logits, auxiliary = self.module(batch, return_auxiliary_loss=True)  # (N, V), ()
            else:
                logits = self.module(batch)  # (N, V)
        loss_sum, num_tokens = token_loss(logits.float() if logits.dtype != torch.float64 else logits,
                                          batch_labels(batch), self.config.label_smoothing)
        totals = torch.tensor([float(loss_sum.detach()), float(num_tokens)], dtype=torch.float64,
                              device=loss_sum.device)
        all_reduce_sum(totals)  # (global loss sum, global tokens)
        if auxiliary is not None:  # trained on, not reported: "loss" stays the cross-entropy per token
            loss_sum = loss_sum + auxiliary.to(loss_sum.dtype)
        loss = loss_sum * (self.process.world_size / float(totals[1]))
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return {"loss": float(totals[0] / totals[1]), "tokens": int(totals[1])}

    def optimizer_step(self) -> dict:
        """Clip, set the learning rate of the next step, update, zero the gradients."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if self.config.clip_norm is not None:
            grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm))
        lr = self.schedule.apply(self.optimizer, self.step + 1)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"lr": lr, "grad_norm": grad_norm}

    def train_step(self, batch) -> dict:
        """:meth:`backward` then :meth:`optimizer_step`; returns their statistics."""
        return {**self.backward(batch), **self.optimizer_step()}

    # ------------------------------------------------------------------ a run
    def fit(self, dataset, evaluate: Callable[["Trainer"], dict] | None = None) -> list[dict]:
        """Train from the current step to ``config.steps`` on batches of ``dataset``.

        Shows a tqdm bar with the loss (moving average) and tokens per second, calls
        ``evaluate(trainer)`` every ``eval_every`` steps (main process only; its dict is
        printed and kept in ``history``), checkpoints every ``checkpoint_every`` steps and at
        the end.
        """
        from tqdm.auto import tqdm

        config = self.config
        loader = make_loader(dataset, config.batch_size, config.seed, self.process.data_rank,
                             self.process.data_world_size, start_step=self.step)
        bar = tqdm(total=config.steps, initial=self.step, disable=not (config.progress and self.process.is_main),
                   unit="step", dynamic_ncols=True)
        average, last = None, time.perf_counter()
        for batch in loader:
            if self.step >= config.steps:
                break
            stats = self.train_step(batch)
            now = time.perf_counter()
            elapsed, last = now - last, now  # batching included
            average = stats["loss"] if average is None else 0.95 * average + 0.05 * stats["loss"]
            bar.set_postfix(loss=f"{average:.3f}", lr=f"{stats['lr']:.2e}", tok_s=f"{stats['tokens'] / elapsed:,.0f}")
            bar.update()
            if config.eval_every and self.step % config.eval_every == 0 and evaluate and self.process.is_main:
                metrics = {"step": self.step, "train_loss": average, **evaluate(self)}
                self.history.append(metrics)
                bar.write("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
            if config.checkpoint_every and self.step % config.checkpoint_every == 0 and self.step < config.steps:
                self.save()
            last = time.perf_counter()  # evaluation and checkpoints do not count against tokens/s
        bar.close()
        if self.checkpoint_dir is not None:
            self.save()
        return self.history

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path | None:
        """Write a checkpoint of the current step (main process; the others wait for it)."""
        path = None
        if self.checkpoint_dir is not None and self.process.is_main:
            state = {"scaler": self.scaler.state_dict() if self.scaler is not None else None, "history": self.history}
            path = save_checkpoint(self.checkpoint_dir, model=self.model, optimizer=self.optimizer, step=self.step,
                                   config={**self.run_config, "train": asdict(self.config)}, state=state,
                                   keep=self.config.keep_checkpoints)
        barrier()
        return path

    def resume(self, checkpoint: str | Path | None = None) -> bool:
        """Continue from ``checkpoint`` (default: the latest in ``checkpoint_dir``): model, optimizer,
        step, random number generators.  Returns whether a checkpoint was found."""
        checkpoint = checkpoint or (latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None)
        if checkpoint is None:
            return False
        state = load_checkpoint(checkpoint, model=self.model, optimizer=self.optimizer,
                                restore_rng=self.process.is_main)
        if not self.process.is_main:  # only the main process's generators are saved
            torch.manual_seed(self.config.seed * 7919 + self.process.rank * 104729 + state["step"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.history = state["step"], state.get("history", [])
        return True


def _width(model: nn.Module) -> int:
    if hasattr(model, "transformer") and hasattr(model.transformer, "d_model"):
        return model.transformer.d_model
    if hasattr(model, "encoder") and hasattr(model.encoder, "layers"):
        return model.encoder.layers[0].self_attn.embed_dim
    raise ValueError("cannot read d_model from this model: pass Trainer(..., d_model=...)")


@torch.no_grad()
def evaluate_loss(model: nn.Module, dataset, batch_size: int = 256, device: str = "cpu") -> float:
    """Mean cross-entropy per target token (no label smoothing) of ``model`` on all of ``dataset``."""
    from torch_geometric.loader import DataLoader

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        batch = batch.to(device)
        loss, tokens = token_loss(model(batch).float(), batch_labels(batch))
        total, count = total + float(loss), count + tokens
    model.train(was_training)
    return total / count
