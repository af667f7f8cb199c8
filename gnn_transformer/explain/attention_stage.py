r"""The stage of one multi-head attention, as message passing on its edges.

.. math::

    q_i = x_i W_Q^h,\; k_j = x_j W_K^h,\; v_j = x_j W_V^h, \qquad
    s_{ij} = \frac{q_i \cdot k_j}{\sqrt{d_k}}, \qquad
    \alpha_{ij} = \operatorname{softmax}_{j \in \mathcal N(i)} s_{ij}, \qquad
    h_i = \sum_{j \in \mathcal N(i)} \alpha_{ij} v_j

per head :math:`h`, then :math:`\operatorname{concat}_h(h_i) W_O`.  Every number comes from an
:class:`~gnn_transformer.analysis.recording.AttentionRecord` of the model's own run.
"""
from __future__ import annotations

from typing import Sequence

from ..analysis.recording import AttentionRecord
from .document import Stage, Table, feature_columns, node_table, truncation_note, vector_cells

__all__ = ["attention_stage", "ATTENTION_FORMULA"]

ATTENTION_FORMULA = (
    "q_i = x_i W_Q,   k_j = x_j W_K,   v_j = x_j W_V                (per head h, width d_k = d_model / H)\n"
    "s_ij = q_i · k_j / √d_k                                     (one number per edge j -> i)\n"
    "α_ij = exp(s_ij) / Σ_{j' ∈ N(i)} exp(s_ij')                  (softmax over the edges into i)\n"
    "m_ij = α_ij v_j,   h_i = Σ_{j ∈ N(i)} m_ij                      (messages, summed at the target)\n"
    "MultiHead(x)_i = Concat(h_i^1, ..., h_i^H) W_O"
)

_WORDS = {
    "self": ("Each token is a node. Its query, key and value are learned linear projections of that token's "
             "own vector (W_Q, W_K, W_V are shared by all tokens)."),
    "cross": ("Queries come from the decoder's tokens (the targets i); keys and values from the encoder's "
              "output, the memory (the sources j): every edge runs from a source token to a target token."),
}
_MESSAGE_PASSING = (
    "Along every edge j -> i the dot product of i's query and j's key, divided by √d_k, is one number: "
    "the score. A softmax over the edges that enter i turns the scores into weights that sum to 1; the "
    "message is the weight times j's value, and i's new vector is the sum of its incoming messages. "
    "The heads run side by side on the same edges; their results are concatenated and mixed by W_O."
)


def _label(labels: Sequence[str], node: int) -> str:
    return labels[node] if node < len(labels) else f"extra {node}"  # add_bias_kv / add_zero_attn sources


def _edge_table(record: AttentionRecord, head: int, query_labels, key_labels, max_features: int) -> Table:
    source, target = record.edge_index
    bias = record.edge_bias
    columns = ["j", "source", "i", "target"] + (["bias"] if bias is not None else [])
    columns += ["score", "weight"] + feature_columns("m", record.messages.size(-1), max_features)
    rows = []
    for edge, (j, i) in enumerate(zip(source.tolist(), target.tolist())):
        row = [j, _label(key_labels, j), i, _label(query_labels, i)]
        if bias is not None:
            row.append(float(bias[edge, min(head, bias.size(1) - 1)]))
        row += [float(record.scores[edge, head]), float(record.weights[edge, head])]
        row += vector_cells(record.messages[edge, head], max_features)
        rows.append(row)
    title = f"head {head}: edges j -> i with score s, weight α and message m = α v_j"
    return Table(title, columns, rows, keys=4, note=truncation_note([record.messages.size(-1)], max_features))


def _projection_tables(record: AttentionRecord, head: int, query_labels, key_labels, self_attention: bool,
                       max_features: int) -> list[Table]:
    q, k, v = record.query[:, head], record.key[:, head], record.value[:, head]  # (T, C), (S, C), (S, Cv)
    if self_attention and q.size(0) == k.size(0):
        return [node_table(f"head {head}: projections q, k, v of each token", query_labels,
                           [("q", q), ("k", k), ("v", v)], max_features)]
    return [node_table(f"head {head}: queries q of the target tokens", query_labels, [("q", q)], max_features),
            node_table(f"head {head}: keys k and values v of the source tokens", key_labels[: k.size(0)],
                       [("k", k), ("v", v)], max_features)]


def attention_stage(key: str, title: str, record: AttentionRecord, query_labels: Sequence[str],
                    key_labels: Sequence[str], *, self_attention: bool, max_features: int, note: str = "") -> Stage:
    """The stage of one attention: per head projections, edges, aggregation; then heads joined.

    Args:
        record: the attention as the model computed it.
        query_labels, key_labels: the token of each target (query) and source (key) node.
        self_attention: queries and keys are the same tokens (one projection table per head).
        note: more words, said last (e.g. about the graph).
    """
    num_targets, num_heads, head_dim = record.query.shape  # (T, H, C)
    num_sources = record.key.size(0)
    num_edges = record.edge_index.size(1)
    value_dim = record.value.size(-1)
    tables = []
    for head in range(num_heads):
        tables += _projection_tables(record, head, query_labels, key_labels, self_attention, max_features)
        tables.append(_edge_table(record, head, query_labels, key_labels, max_features))
        weight_sums = record.weights[:, head].new_zeros(num_targets).index_add_(
            0, record.edge_index[1], record.weights[:, head])  # (T,)
        tables.append(node_table(f"head {head}: aggregation h_i = Σ_j m_ij at each target (Σ α = 1)",
                                 query_labels, [("h", record.aggregated[:, head])], max_features,
                                 extra=[("Σα", weight_sums)]))
    if record.concatenated is not None:
        tables.append(node_table("heads concatenated: Concat(h^1, ..., h^H)", query_labels,
                                 [("c", record.concatenated)], max_features))
    if record.output is not None:
        tables.append(node_table("output projection: Concat(...) W_O + b_O", query_labels,
                                 [("o", record.output)], max_features))
    bias_words = " A per-edge bias is added to each score (column bias)." if record.edge_bias is not None else ""
    words = " ".join(part for part in (_WORDS["self" if self_attention else "cross"], _MESSAGE_PASSING + bias_words,
                                       note) if part)
    shapes = [f"q: (T, H, d_k) = ({num_targets}, {num_heads}, {head_dim})",
              f"k: (S, H, d_k) = ({num_sources}, {num_heads}, {head_dim})",
              f"v: (S, H, d_v) = ({num_sources}, {num_heads}, {value_dim})",
              f"scores and weights: (edges, H) = ({num_edges}, {num_heads})",
              f"messages: (edges, H, d_v) = ({num_edges}, {num_heads}, {value_dim})",
              f"h: (T, H, d_v); concatenated: (T, H·d_v) = ({num_targets}, {num_heads * value_dim})",
              _scale_words(record.scale, head_dim)]
    return Stage(key, title, _formula(record.scale, head_dim, record.edge_bias is not None), words, shapes, tables)


_PAPER_SCORE = "s_ij = q_i · k_j / √d_k"


def _paper_scale(scale: float, head_dim: int) -> bool:
    return abs(scale - head_dim ** -0.5) <= 1e-12 * head_dim ** -0.5


def _formula(scale: float, head_dim: int, bias: bool) -> str:
    """The attention formula with the score this attention computes: its own scale, its edge bias."""
    if _paper_scale(scale, head_dim):
        score = _PAPER_SCORE
    else:
        score = "s_ij = q_i · k_j" if scale == 1.0 else f"s_ij = {scale:.4g} · q_i · k_j"
    score += " + b_ij" if bias else ""
    return ATTENTION_FORMULA.replace(_PAPER_SCORE, score.ljust(len(_PAPER_SCORE)), 1)


def _scale_words(scale: float, head_dim: int) -> str:
    if _paper_scale(scale, head_dim):
        return f"scale 1/√d_k = {scale:.4g}"
    return f"scale {scale:.4g} (not 1/√d_k = {head_dim ** -0.5:.4g}: the model's own, e.g. T5's unscaled scores)"
