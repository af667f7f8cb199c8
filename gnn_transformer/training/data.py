"""Training examples as PyG graphs, batched by PyG's ``DataLoader`` into one disjoint union (no padding).

A seq2seq example (source ``x``, target ``y``) becomes a :func:`~gnn_transformer.graphs.seq2seq_data`
pair whose decoder input is ``[bos] + y`` and whose labels are ``y + [eos]`` ("the output
embeddings are offset by one position", arXiv:1706.03762, section 3.1).  A language-model
example (a token window ``w``) becomes a causal :func:`~gnn_transformer.graphs.sequence_data`
with input ``w[:-1]`` and labels ``w[1:]``.

Batches are drawn by :class:`GlobalBatchSampler`: batch ``s`` of a run is a function of
``(seed, s)`` only, so a resumed run sees exactly the batches it would have seen, and in
a distributed run every process takes its own slice of the same global batch.
"""
from __future__ import annotations

import copy
from typing import Iterator, Sequence

import torch
from torch import Tensor

from ..graphs import causal
from ..graphs.batching import seq2seq_data, sequence_data

__all__ = ["Seq2SeqExamples", "LanguageModelExamples", "GlobalBatchSampler", "make_loader", "batch_labels"]


class Seq2SeqExamples(torch.utils.data.Dataset):
    """(source, target) pairs of token-id lists; item ``i`` is a ``HeteroData`` with labels ``data['tgt'].y``.

    The graphs of a pair depend on its two lengths only: they are built once per pair of
    lengths (by :func:`~gnn_transformer.graphs.seq2seq_data`) and shared by the items.
    """

    def __init__(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], bos: int, eos: int) -> None:
        if len(pairs) == 0:
            raise ValueError("Seq2SeqExamples needs at least one (source, target) pair")
        self.pairs, self.bos, self.eos = list(pairs), bos, eos
        self._templates: dict[tuple[int, int], object] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        source, target = self.pairs[index]
        source = torch.as_tensor(list(source), dtype=torch.long)
        target = torch.as_tensor(list(target), dtype=torch.long)
        decoder_input = torch.cat([target.new_tensor([self.bos]), target])  # (T + 1,)
        labels = torch.cat([target, target.new_tensor([self.eos])])  # (T + 1,)
        lengths = (source.numel(), decoder_input.numel())
        if lengths not in self._templates:
            self._templates[lengths] = seq2seq_data(source, decoder_input, labels)
        data = copy.copy(self._templates[lengths])  # shares the edge and position tensors
        data["src"].x, data["tgt"].x, data["tgt"].y = source, decoder_input, labels
        return data


class LanguageModelExamples(torch.utils.data.Dataset):
    """Windows of ``window + 1`` tokens from one long token tensor, starting every ``stride`` tokens.

    Item ``i`` is a causal ``Data`` with ``x = w[:-1]``, labels ``y = w[1:]``; with
    ``attention_window`` its graph is the sliding-window causal graph
    ``graphs.causal([window], attention_window)`` (each token sees the last
    ``attention_window`` tokens), so a model can be trained on long sequences at the cost
    of short contexts and decoded with the same window for as many tokens as it saw.
    """

    def __init__(self, tokens: Tensor, window: int, stride: int | None = None,
                 attention_window: int | None = None) -> None:
        stride = window if stride is None else stride
        if tokens.dim() != 1 or tokens.numel() <= window:
            raise ValueError(f"tokens must be 1-D and longer than window={window}, got shape {tuple(tokens.shape)}")
        self.tokens, self.window = tokens.long(), window
        self.starts = torch.arange(0, tokens.numel() - window, stride)  # (num_examples,)
        self.edge_index = causal([window], attention_window)  # the same graph for every window

    def __len__(self) -> int:
        return self.starts.numel()

    def __getitem__(self, index: int):
        start = int(self.starts[index])
        chunk = self.tokens[start : start + self.window + 1]  # (window + 1,)
        data = sequence_data(chunk[:-1], "causal")
        data.edge_index, data.y = self.edge_index, chunk[1:]
        return data


def batch_labels(batch) -> Tensor:
    """The labels of a collated batch: ``batch['tgt'].y`` (seq2seq) or ``batch.y`` (language model)."""
    if hasattr(batch, "node_types"):
        return batch["tgt"].y
    return batch.y


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Indices of each process's slice of global batch ``start_step``, ``start_step + 1``, ... (endless).

    Global batch ``s`` is ``batch_size`` indices of a permutation of the examples drawn
    from ``seed`` and the epoch; process ``rank`` of ``world_size`` takes the ``rank``-th of
    ``world_size`` contiguous, nearly equal slices (ragged in tokens, which the loss
    normalisation by the global token count absorbs).

    Args:
        num_examples: size of the dataset.
        batch_size: examples per global batch (all processes together).
        seed: the seed of the permutations.
        rank, world_size: this process and the number of processes.
        start_step: the first global batch (a resumed run starts where it stopped).
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_step: int = 0) -> None:
        if not 1 <= batch_size <= num_examples:
            raise ValueError(f"batch_size must be between 1 and the number of examples ({num_examples}), "
                             f"got {batch_size}")
        if batch_size < world_size:
            raise ValueError(f"batch_size ({batch_size}) must be at least the number of processes ({world_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.batches_per_epoch = num_examples // batch_size

    def global_batch(self, step: int) -> Tensor:
        """The indices of global batch ``step`` (every process agrees on it), (batch_size,)."""
        epoch, offset = divmod(step, self.batches_per_epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_examples, generator=generator)
        return order[offset * self.batch_size : (offset + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield torch.tensor_split(self.global_batch(step), self.world_size)[self.rank].tolist()
            step += 1


def make_loader(dataset, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start_step: int = 0):
    """PyG ``DataLoader`` over ``dataset`` yielding this process's part of every global batch from ``start_step``."""
    from torch_geometric.loader import DataLoader

    sampler = GlobalBatchSampler(len(dataset), batch_size, seed, rank, world_size, start_step)
    # its own generator: creating the iterator must not draw from the global one (dropout's stream)
    return DataLoader(dataset, batch_sampler=sampler, generator=torch.Generator().manual_seed(seed))
