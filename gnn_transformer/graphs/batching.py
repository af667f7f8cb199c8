"""Token sequences as PyG ``Data`` / ``HeteroData``, collated by PyG into disjoint-union batches."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from .builders import bipartite, causal, complete, positions

__all__ = ["sequence_data", "seq2seq_data", "seq2seq_batch"]


def sequence_data(tokens: Tensor, graph: str | Callable[[list[int]], Tensor] = "complete"):
    r"""One token sequence as a PyG ``Data``: ``x`` (token ids), ``position`` and ``edge_index``.

    ``graph`` is ``"complete"`` (encoder-only models), ``"causal"`` (decoder-only
    models) or a function of the lengths, such as a model's own graph
    (``sequence_data(tokens, model.graph)``).  Collate with
    ``torch_geometric.data.Batch.from_data_list`` or PyG's ``DataLoader``: edge indices
    are offset per sequence, positions are not.
    """
    from torch_geometric.data import Data

    builders = {"complete": complete, "causal": causal}
    if not callable(graph) and graph not in builders:
        raise ValueError(f"graph must be 'complete' or 'causal' (or a function of the lengths), got {graph!r}")
    tokens = _as_token_ids(tokens, "tokens")
    lengths = [tokens.numel()]
    build = graph if callable(graph) else builders[graph]
    return Data(x=tokens, position=positions(lengths), edge_index=build(lengths))


def seq2seq_data(src_tokens: Tensor, tgt_tokens: Tensor, labels: Tensor | None = None):
    r"""One source/target pair as a PyG ``HeteroData``, the seq2seq unit of this library.

    Node types ``'src'`` and ``'tgt'`` each carry ``x`` (token ids) and ``position``;
    ``labels`` (optional, one per target token) is stored as ``data['tgt'].y``.
    Edge types::

        ('src', 'to', 'src')  complete graph  (encoder self-attention)
        ('tgt', 'to', 'tgt')  causal graph    (decoder masked self-attention)
        ('src', 'to', 'tgt')  bipartite graph (cross-attention)

    ``torch_geometric.data.Batch.from_data_list`` and PyG's ``DataLoader`` collate
    such pairs into one disjoint-union batch: source indices are offset by source
    counts and target indices by target counts, per edge type.
    """
    from torch_geometric.data import HeteroData

    src_tokens = _as_token_ids(src_tokens, "src_tokens")
    tgt_tokens = _as_token_ids(tgt_tokens, "tgt_tokens")
    src_len, tgt_len = [src_tokens.numel()], [tgt_tokens.numel()]
    data = HeteroData()
    data["src"].x = src_tokens
    data["src"].position = positions(src_len)
    data["tgt"].x = tgt_tokens
    data["tgt"].position = positions(tgt_len)
    if labels is not None:
        labels = _as_token_ids(labels, "labels")
        if labels.numel() != tgt_tokens.numel():
            raise ValueError(
                f"labels has {labels.numel()} entries but the target has {tgt_tokens.numel()} tokens"
            )
        data["tgt"].y = labels
    data["src", "to", "src"].edge_index = complete(src_len)
    data["tgt", "to", "tgt"].edge_index = causal(tgt_len)
    data["src", "to", "tgt"].edge_index = bipartite(src_len, tgt_len)
    return data


def seq2seq_batch(src_tokens: Sequence[Tensor], tgt_tokens: Sequence[Tensor], labels=None):
    """A ragged batch of pairs as one collated ``HeteroData`` (no padding anywhere)."""
    if len(src_tokens) == 0:
        raise ValueError("seq2seq_batch() got an empty batch: pass at least one pair")
    if len(src_tokens) != len(tgt_tokens):
        raise ValueError(f"got {len(src_tokens)} sources but {len(tgt_tokens)} targets")
    from torch_geometric.data import Batch

    labels = [None] * len(src_tokens) if labels is None else labels
    pairs = [seq2seq_data(s, t, y) for s, t, y in zip(src_tokens, tgt_tokens, labels)]
    return Batch.from_data_list(pairs)


def _as_token_ids(tokens, name: str) -> Tensor:
    tokens = torch.as_tensor(tokens)
    if tokens.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of token ids, got shape {tuple(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
    return tokens.long()
