"""Training utilities: a small readable loop, the paper's schedule, graph batches, atomic checkpoints, DDP.

* :mod:`.schedule` -- :class:`WarmupInverseSqrt`, the warm-up / inverse-square-root learning rate;
* :mod:`.data` -- examples as PyG graphs, :class:`GlobalBatchSampler` (resumable, sharded), :func:`make_loader`;
* :mod:`.loop` -- :class:`TrainConfig`, :class:`Trainer` (label smoothing, clipping, mixed precision on
  GPU, tqdm bar with loss and tokens/s, periodic evaluation, checkpoints, resuming);
* :mod:`.checkpoint` -- safetensors checkpoints with ``config.json`` beside them, written atomically;
* :mod:`.distributed` -- torchrun set-up (gloo on CPU, NCCL on GPU), the global token count, context
  parallel x data parallel (:func:`context_parallel_batch`).
"""
from .checkpoint import CheckpointError, atomic_write, latest_checkpoint, load_checkpoint, save_checkpoint
from .data import GlobalBatchSampler, LanguageModelExamples, Seq2SeqExamples, batch_labels, make_loader
from .distributed import Process, context_parallel_batch, init_from_env
from .loop import TrainConfig, Trainer, evaluate_loss, token_loss
from .schedule import WarmupInverseSqrt, cooldown_factor, transformer_lr

__all__ = [
    "TrainConfig",
    "Trainer",
    "token_loss",
    "evaluate_loss",
    "WarmupInverseSqrt",
    "transformer_lr",
    "cooldown_factor",
    "Seq2SeqExamples",
    "LanguageModelExamples",
    "GlobalBatchSampler",
    "make_loader",
    "batch_labels",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "atomic_write",
    "CheckpointError",
    "Process",
    "init_from_env",
    "context_parallel_batch",
]
