"""Stages of a forward pass other than attention: inputs, graphs, norms, feed-forward, output.

Each builder takes tensors the model computed (from a :class:`~gnn_transformer.analysis.recording.Recording`)
and the token of every node, and returns a :class:`~.document.Stage`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..core.layers import ACTIVATIONS
from .document import ELLIPSIS, Stage, Table, node_table, row_statistics

__all__ = ["input_stages", "graph_stage", "norm_stage", "residual_stage", "feed_forward_stage",
           "layer_summary_stage", "output_stages"]

MAX_SOURCES_LISTED = 12  # sources named per target in a graph table


def _shape(name: str, tensor: Tensor, axes: str) -> str:
    return f"{name}: ({axes}) = {tuple(tensor.shape)}"


_ROLE_TITLES = {"embedding": "embedding", "positional": "positional encoding", "token type": "token type embedding"}
_ROLE_KEYS = {"embedding": "embedding", "positional": "positional", "token type": "token_type"}
_ROLE_WORDS = {
    "embedding": ("Each token id picks one row of a learned table E (one vector of d_model numbers per word of the "
                  "vocabulary). Each token is one node of the graph, and this is its first feature vector. "),
    "scaled": ("The paper multiplies the row by √d_model so that it has about the size of the positional encoding "
               "it is added to. "),
    "sinusoid": ("Attention sums over a set of edges and ignores their order, so each token's position is written "
                 "into its vector. The encoding is added, not concatenated: it has the same width d_model, and the "
                 "model learns projections that separate word from position; concatenating would make every layer "
                 "wider. In the graph the position is a node attribute, so no padding is needed."),
    "positional": ("Attention sums over a set of edges and ignores their order, so each token's position is written "
                   "into its vector: one vector per position (here from a table the model learned), added to the embedding. In the graph the "
                   "position is a node attribute, so no padding is needed."),
    "token type": ("Each token also gets the learned vector of its segment (token type: 0 for the first sentence, "
                   "1 for the second), so that attention can tell two sentences of one input apart."),
}


def _symbol(part) -> str:
    if part.role == "positional":
        return "PE"
    return {"embedding": "e", "token type": "T"}[part.role]


def _part_stage(side: str, word: str, part, value: Tensor, labels, positions: Tensor, max_features: int,
                fed: str) -> Stage:
    title = _ROLE_TITLES[part.role]
    scaled = part.role == "embedding" and "√d_model" in part.formula.split("(")[0]
    if scaled:
        title += " × √d_model"
    if part.role == "embedding":
        words = _ROLE_WORDS["embedding"] + (_ROLE_WORDS["scaled"] if scaled else "") + fed
    elif part.role == "positional":
        words = _ROLE_WORDS["sinusoid" if "sin" in part.formula else "positional"]
    else:
        words = _ROLE_WORDS["token type"]
    symbol = _symbol(part)
    extra = [("pos", positions)] if part.role == "positional" else []
    table_title = {"embedding": "token embeddings e (one row per node)", "positional": f"positional encodings {symbol}(pos)",
                   "token type": "token type embeddings T"}[part.role]
    return Stage(f"{side}.{_ROLE_KEYS[part.role]}", f"{word}: {title}", part.formula or f"{symbol}_i", words,
                 [_shape(symbol, value, "N, d_model")],
                 [node_table(table_title, labels, [(symbol.lower(), value)], max_features, extra=extra)])


def input_stages(side: str, labels: Sequence[str], parts: Sequence[tuple], x: Tensor, positions: Tensor,
                 max_features: int, *, fed: str = "") -> list[Stage]:
    """The terms of one side's node features (token embedding, positions, token types), then the input of the
    first layer.

    Args:
        side: ``"source"``, ``"target"`` or ``"tokens"`` (single-stack models); also the key prefix.
        parts: ``(InputPart, value (N, d_model))`` per term the model names (``input_parts()``); may be empty.
        x: (N, d_model) what the first layer reads.
        fed: words on what this side is fed (the decoder's teacher forcing).
    """
    word = {"source": "Source tokens", "target": "Target tokens"}.get(side, "Tokens")
    stages = [_part_stage(side, word, part, value, labels, positions, max_features, fed) for part, value in parts]
    is_sum = bool(parts) and torch.allclose(sum(value for _, value in parts), x, rtol=1e-5, atol=1e-6)
    if is_sum and len(parts) == 1:
        title, table = f"{word}: input of the first layer", "x = " + _symbol(parts[0][0])
        formula = f"x_i = {_symbol(parts[0][0])}_i          (then dropout, the identity at inference)"
        words = "The embedding alone is each node's input to the first layer: no absolute position is added."
    elif is_sum:
        symbols = [_symbol(part) for part, _ in parts]
        title = f"{word}: " + " + ".join(_ROLE_TITLES[part.role] for part, _ in parts)
        formula = "x_i = " + " + ".join(s + ("(pos_i)" if s == "PE" else "_i") for s in symbols) + \
            "          (then dropout, the identity at inference)"
        words = "The sum is each node's input to the first layer."
        table = "x = " + " + ".join(symbols)
    else:
        title = f"{word}: input of the first layer"
        formula = "x_i = the node's input to layer 1"
        words = ("What the first layer reads" + (": the model combines the terms above its own way (a norm of their "
                                                  "sum, a scale) before the stack." if parts else ".")
                 + ("" if parts else " " + fed))
        table = "x (the first layer's input)"
    return stages + [Stage(f"{side}.input", title, formula, words, [_shape("x", x, "N, d_model")],
                           [node_table(table, labels, [("x", x)], max_features)])]


def _edge_list_table(title: str, edge_index: Tensor, query_labels: Sequence[str], key_labels: Sequence[str]) -> Table:
    """One row per target node: how many edges enter it and from which source tokens."""
    source, target = edge_index
    rows = []
    for i, label in enumerate(query_labels):
        sources = source[target == i].tolist()
        named = [f"{j}:{key_labels[j] if j < len(key_labels) else j}" for j in sources[:MAX_SOURCES_LISTED]]
        if len(sources) > MAX_SOURCES_LISTED:
            named.append(ELLIPSIS)
        rows.append([i, label, len(sources), " ".join(named) or "(none)"])
    return Table(title, ["i", "token", "in-degree", "sources j:token"], rows)


def graph_stage(key: str, title: str, text: str, graphs: Sequence[tuple[str, Tensor, Sequence[str], Sequence[str]]]) -> Stage:
    """The edge sets attention runs on, as lists of sources per target.

    Args:
        graphs: (name, edge_index (2, num_edges), target labels, source labels) per edge set.
    """
    tables = [_edge_list_table(f"{name}: {edge_index.size(1)} edges j -> i", edge_index, queries, keys)
              for name, edge_index, queries, keys in graphs]
    shapes = [f"{name} edge_index: (2, edges) = {tuple(edge_index.shape)}" for name, edge_index, _, _ in graphs]
    formula = "edge_index[0] = source j (key/value side),  edge_index[1] = target i (query side)"
    return Stage(key, title, formula, text, shapes, tables)


def _norm_words(norm: nn.Module) -> tuple[str, str]:
    if isinstance(norm, nn.LayerNorm):
        return ("LayerNorm(y)_i = γ ⊙ (y_i − μ_i) / √(σ_i² + ε) + β\n"
                "μ_i, σ_i² = mean and variance of the d_model features of token i (axis -1)",
                "Layer norm normalises over the last axis, the d_model features of ONE token: each row below gets "
                "its own mean and variance. It does not mix tokens and does not look at the batch (that would be "
                "batch norm), so it is a per-node operation like every other part of the model but attention. "
                "With γ = 1 and β = 0 every normalised row has mean 0 and standard deviation 1; learned γ, β "
                "rescale that.")
    return (f"{type(norm).__name__}(y_i), over the d_model features of token i",
            f"{type(norm).__name__} normalises over the last axis, the features of one token, not over tokens "
            "or the batch (an RMSNorm divides by the root mean square and subtracts no mean).")


def norm_stage(key: str, title: str, norm: nn.Module, labels: Sequence[str], norm_input: Tensor, norm_output: Tensor,
               max_features: int, *, residual: bool, lead: str = "") -> Stage:
    """A norm: after a residual sum (post-norm, ``residual=True``) or on its own (pre-norm, a stack's
    final norm); ``lead`` is said first."""
    formula, words = _norm_words(norm)
    words = lead + words
    if residual:
        formula = "y_i = x_i + Sublayer(x)_i          (residual connection)\n" + formula
        first = node_table("residual sum y = x + Sublayer(x), with its mean and std per token", labels,
                           [("y", norm_input)], max_features, extra=row_statistics(norm_input))
    else:
        first = node_table("input y, with its mean and std per token", labels, [("y", norm_input)], max_features,
                           extra=row_statistics(norm_input))
    second = node_table("normalised output, with its mean and std per token", labels, [("n", norm_output)],
                        max_features, extra=row_statistics(norm_output))
    return Stage(key, title, formula, words, [_shape("y", norm_input, "N, d_model") + ", normalised over axis -1"],
                 [first, second])


def residual_stage(key: str, title: str, labels: Sequence[str], residual: Tensor, max_features: int) -> Stage:
    """A pre-norm residual sum x + Sublayer(Norm(x)), which goes on un-normalised."""
    return Stage(key, title, "x_i ← x_i + Sublayer(Norm(x))_i",
                 "Pre-norm layers add the sublayer's output to the un-normalised input: the residual path "
                 "carries x through the whole stack untouched by norms.",
                 [_shape("x", residual, "N, d_model")],
                 [node_table("x + Sublayer(Norm(x))", labels, [("x", residual)], max_features)])


def _activation_name(activation) -> str:
    for name, function in ACTIVATIONS.items():
        if activation is function:
            return name
    return getattr(activation, "__name__", type(activation).__name__)


def feed_forward_stage(key: str, title: str, layer: nn.Module, labels: Sequence[str], first: Tensor, hidden: Tensor,
                       output: Tensor, max_features: int) -> Stage:
    """The position-wise feed-forward network: linear1, activation, linear2 (per node)."""
    act = _activation_name(layer.activation)
    gated = getattr(layer, "linear_v", None) is not None
    formula = f"FFN(x_i) = {act}(x_i W_1 + b_1) W_2 + b_2"
    if gated:
        formula = f"FFN(x_i) = ({act}(x_i W_1 + b_1) ⊙ (x_i V + c)) W_2 + b_2          (gated)"
    words = ("The same two-layer network is applied to every token separately (position-wise): it widens the "
             f"vector from d_model = {output.size(-1)} to d_ff = {first.size(-1)}, applies {act}, and projects back. "
             "No information moves between tokens here; only attention moves it along edges.")
    tables = [node_table("x W_1 + b_1 (linear1)", labels, [("a", first)], max_features),
              node_table(f"{act}(...){' ⊙ gate' if gated else ''} (the hidden layer)", labels, [("z", hidden)],
                         max_features),
              node_table("output z W_2 + b_2 (linear2)", labels, [("f", output)], max_features)]
    shapes = [_shape("hidden", hidden, "N, d_ff"), _shape("output", output, "N, d_model")]
    return Stage(key, title, formula, words, shapes, tables)


def layer_summary_stage(key: str, title: str, outputs: Sequence[tuple[int, Tensor]], labels: Sequence[str],
                        max_features: int) -> Stage:
    """Layers not shown in full: only each one's output."""
    tables = [node_table(f"output of layer {layer + 1}", labels, [("x", out)], max_features) for layer, out in outputs]
    return Stage(key, title, "x ← Layer_l(x)",
                 "These layers compute the same stages as the ones shown in full, with their own weights; only "
                 "their outputs are printed (ask for more layers to see every stage).",
                 [_shape("x", outputs[0][1], "N, d_model")], tables)


def output_stages(labels: Sequence[str], logits: Tensor, vocabulary_words: Sequence[str], max_features: int,
                  top: int = 3) -> list[Stage]:
    """Logits, probabilities (softmax over the vocabulary) and the top predicted words per position."""
    probabilities = torch.softmax(logits.to(torch.float64), dim=-1).to(logits.dtype)  # (T, V)
    words = list(vocabulary_words)
    vocab_size = logits.size(-1)

    def vocabulary_table(title: str, values: Tensor) -> Table:
        shown = min(vocab_size, max_features)
        columns = ["i", "token"] + words[:shown] + ([ELLIPSIS] if shown < vocab_size else [])
        rows = [[i, label] + [float(v) for v in values[i, :shown]] + ([ELLIPSIS] if shown < vocab_size else [])
                for i, label in enumerate(labels)]
        note = f"the first {shown} of {vocab_size} words; the top-{top} table lists the likeliest" if shown < vocab_size else ""
        return Table(title, columns, rows, note=note)

    count = min(top, vocab_size)
    best = probabilities.topk(count, dim=-1)
    top_rows = []
    for i, label in enumerate(labels):
        row = [i, label]
        for rank in range(count):
            row += [words[int(best.indices[i, rank])], float(best.values[i, rank])]
        top_rows.append(row)
    top_columns = ["i", "token"] + [name for rank in range(1, count + 1) for name in (f"word{rank}", f"p{rank}")]
    logit_stage = Stage(
        "output.logits", "Output: logits",
        "logits_i = y_i W_out + b_out          (one score per vocabulary word)",
        "A final linear layer maps each target token's vector to one score per word of the vocabulary. The "
        "token at position i predicts the word at position i + 1: with the target shifted right, all positions "
        "are predicted at once during training; at inference the decoder is run again with each new word.",
        [_shape("logits", logits, "T, vocabulary")],
        [vocabulary_table("logits (one row per target position)", logits)],
    )
    probability_stage = Stage(
        "output.probabilities", "Output: probabilities",
        "p_i(w) = exp(logits_i(w)) / Σ_w' exp(logits_i(w'))",
        "A softmax over the vocabulary (the last axis) turns each row of logits into a probability "
        "distribution over the next word (an untrained model, like the demo's, has no reason to prefer the right "
        "word: its numbers show how the computation flows, not a translation).",
        [_shape("p", probabilities, "T, vocabulary")],
        [vocabulary_table("probabilities (each row sums to 1)", probabilities),
         Table(f"top {count} predicted next words", top_columns, top_rows)],
    )
    return [logit_stage, probability_stage]
