"""A dense reference for :class:`~gnn_transformer.variants.GraphVariantModel`, in plain torch.

Written from the papers' formulas on padded (B, L) batches with boolean masks, without any
graph code or library module: every option (norms, feed-forwards, position schemes,
ALiBi, T5 buckets, rotary) is implemented again here, so a test comparing the two
compares two independent implementations.  The reference reads its configuration from the
keyword arguments the model was built with and its weights from a ``{name: tensor}`` dict with the
graph model's parameter names, so gradients compare by name.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

GATES = {"reglu": "relu", "geglu": "gelu", "swiglu": "silu"}
ACT = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda x: 0.5 * x * (1 + torch.tanh(
    math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))), "silu": lambda x: x * torch.sigmoid(x)}


DEFAULTS = dict(norm_first=True, norm="layer", feed_forward="gelu", positions="learned", tie_weights=True,
                scale_embedding=False, layer_norm_eps=1e-5, rotary_base=10000.0, num_buckets=32, max_distance=128,
                bidirectional=True)


def variant_config(**options) -> dict:
    """The reference's configuration: the keyword arguments given to ``GraphVariantModel`` (and its own
    defaults for the others), so that a model which ignores an option is caught."""
    unknown = set(options) - set(DEFAULTS) - {"d_model", "nhead", "num_layers"}
    config = {**DEFAULTS, **{k: v for k, v in options.items() if k not in unknown}}
    activation = config["feed_forward"]
    config["gated"] = activation in GATES
    config["activation"] = GATES.get(activation, activation)
    return config


def sinusoid_table(length: int, d_model: int, dtype) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    table = torch.zeros(length, d_model, dtype=torch.float64)
    for i in range(0, d_model, 2):
        angle = torch.arange(length, dtype=torch.float64) / 10000 ** (i / d_model)
        table[:, i] = angle.sin()
        if i + 1 < d_model:
            table[:, i + 1] = angle.cos()
    return table.to(dtype)


def rotate(x: Tensor, base: float) -> Tensor:
    """Rotary positions on (B, H, L, C) via complex multiplication of channel pairs (m, m + C/2)."""
    length, c = x.size(-2), x.size(-1)
    theta = base ** (-torch.arange(0, c, 2, dtype=torch.float64) / c)  # (C/2,)
    rotation = torch.polar(torch.ones(length, c // 2, dtype=torch.float64),
                           torch.arange(length, dtype=torch.float64)[:, None] * theta)  # (L, C/2) complex
    pairs = torch.complex(x[..., : c // 2].double(), x[..., c // 2:].double()) * rotation
    return torch.cat([pairs.real, pairs.imag], dim=-1).to(x.dtype)


def t5_buckets(relative: Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> Tensor:
    """T5's bucket of each key-minus-query distance, entry by entry in Python."""
    out = torch.empty_like(relative)
    for index, r in enumerate(relative.flatten().tolist()):
        n, bucket = num_buckets, 0
        if bidirectional:
            n //= 2
            bucket = n if r > 0 else 0
            r = abs(r)
        else:
            r = max(-r, 0)
        exact = n // 2
        if r >= exact:
            r = min(exact + int(math.log(r / exact) / math.log(max_distance / exact) * (n - exact)), n - 1)
        out.view(-1)[index] = bucket + r
    return out


def alibi_matrix(heads: int, length: int, dtype) -> Tensor:
    """``-m_h |i - j|`` with ``m_h = 2^(-8h/H)`` for a power-of-two H (H, L, L)."""
    slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)], dtype=torch.float64)
    distance = (torch.arange(length)[None, :] - torch.arange(length)[:, None]).abs().double()
    return (-slopes[:, None, None] * distance).to(dtype)


def norm(x: Tensor, p: dict, prefix: str, kind: str, eps: float) -> Tensor:
    if kind == "rms":
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * p[prefix + "weight"]
    mean = x.mean(-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(-1, keepdim=True)
    out = (x - mean) / torch.sqrt(variance + eps) * p[prefix + "weight"]
    return out + p[prefix + "bias"] if prefix + "bias" in p else out


def linear(x: Tensor, p: dict, prefix: str) -> Tensor:
    out = x @ p[prefix + "weight"].T
    return out + p[prefix + "bias"] if prefix + "bias" in p else out


def dense_variant_logits(config: dict, p: dict, tokens: Tensor, lengths: Tensor, causal: bool) -> Tensor:
    """Logits (B, L, vocab) of right-padded tokens (B, L); ``p`` maps parameter names to tensors."""
    c = config
    b, length = tokens.shape
    eps = c["layer_norm_eps"]
    d, heads = c["d_model"], c["nhead"]
    x = p["embed.weight"][tokens]  # (B, L, d)
    if c["scale_embedding"]:
        x = x * math.sqrt(d)
    if c["positions"] == "sinusoidal":
        x = x + sinusoid_table(length, d, x.dtype)
    elif c["positions"] == "learned":
        x = x + p["positional.weight"][:length]
    real = torch.arange(length)[None, :] < lengths[:, None]  # (B, L)
    allowed = real[:, None, None, :].expand(b, 1, length, length)  # (B, 1, L, L): key j is real
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool).tril()
    bias = torch.zeros(heads, length, length, dtype=x.dtype)
    if c["positions"] == "alibi":
        bias = alibi_matrix(heads, length, x.dtype)
    elif c["positions"] == "t5":
        relative = torch.arange(length)[None, :] - torch.arange(length)[:, None]  # key - query
        table = p["relative_bias.relative_attention_bias.weight"]
        buckets = t5_buckets(relative, c["bidirectional"], c["num_buckets"], c["max_distance"])
        bias = table[buckets].permute(2, 0, 1)  # (H, L, L)
    for layer in range(c["num_layers"]):
        prefix = f"encoder.layers.{layer}."

        def attention(h: Tensor) -> Tensor:
            w, bqkv = p[prefix + "self_attn.in_proj_weight"], p.get(prefix + "self_attn.in_proj_bias")
            qkv = h @ w.T + (bqkv if bqkv is not None else 0)
            q, k, v = (t.reshape(b, length, heads, d // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
            if c["positions"] == "rotary":
                q, k = rotate(q, c["rotary_base"]), rotate(k, c["rotary_base"])
            scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads) + bias  # (B, H, L, L)
            weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
            out = (weights @ v).transpose(1, 2).reshape(b, length, d)
            return linear(out, p, prefix + "self_attn.out_proj.")

        def feed_forward(h: Tensor) -> Tensor:
            hidden = ACT[c["activation"]](linear(h, p, prefix + "linear1."))
            if c["gated"]:
                hidden = hidden * linear(h, p, prefix + "linear_v.")
            return linear(hidden, p, prefix + "linear2.")

        n1 = lambda h: norm(h, p, prefix + "norm1.", c["norm"], eps)  # noqa: E731
        n2 = lambda h: norm(h, p, prefix + "norm2.", c["norm"], eps)  # noqa: E731
        if c["norm_first"]:
            x = x + attention(n1(x))
            x = x + feed_forward(n2(x))
        else:
            x = n1(x + attention(x))
            x = n2(x + feed_forward(x))
    if c["norm_first"]:
        x = norm(x, p, "encoder.norm.", c["norm"], eps)
    out_weight = p["embed.weight"] if c["tie_weights"] else p["generator.weight"]
    return x @ out_weight.T + (p["generator.bias"] if "generator.bias" in p else 0)


# ------------------------------------------------------------------ the comparison (graph model vs this reference)
def variant_parity(model, config: dict, causal: bool, lengths=(6, 3, 1), seed: int = 0) -> tuple[float, float, str]:
    """Compare a ``GraphVariantModel`` (graph-native call on the real tokens of a ragged batch) with the
    reference on the padded batch: (logits difference, worst parameter-gradient difference, its name),
    each as :func:`~gnn_transformer.testing.relative_difference`, under the same random upstream gradient."""
    from torch_geometric.data import Batch

    from ..graphs import sequence_data
    from .parity import relative_difference

    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    vocab = model.embed.num_embeddings
    tokens = torch.randint(vocab, (len(lengths), int(lengths.max())), generator=generator)
    real = torch.arange(tokens.size(1))[None, :] < lengths[:, None]  # (B, L)
    graph = "causal" if causal else "complete"
    data = Batch.from_data_list([sequence_data(t[:n], graph) for t, n in zip(tokens, lengths.tolist())])
    params = {name: p.detach().clone().requires_grad_(True) for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    expected = dense_variant_logits(config, params, tokens, lengths, causal)[real]  # (N, vocab)
    actual = model(data)
    upstream = torch.randn(actual.shape, generator=generator, dtype=torch.float64).to(actual.dtype)
    (expected * upstream).sum().backward()
    (actual * upstream).sum().backward()
    gradients = {name: relative_difference(p.grad, params[name].grad) for name, p in model.named_parameters()}
    worst = max(gradients, key=gradients.get)
    return relative_difference(actual, expected), gradients[worst], worst
