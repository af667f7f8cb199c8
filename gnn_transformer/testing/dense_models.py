"""Dense references for the complete models, written with ``torch.nn`` only.

They take padded token tensors and masks, as a textbook implementation would, and
hold the same ``state_dict`` keys as the graph models, so a graph model's weights
load into them 1:1 and parameter gradients compare by name.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(length: int, d_model: int, dtype: torch.dtype, device=None) -> Tensor:
    """The paper's positional-encoding table (length, d_model), as the classic explanations build it."""
    position = torch.arange(length, dtype=dtype, device=device).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=dtype, device=device) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model, dtype=dtype, device=device)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term[: d_model // 2])
    return table


class _Embedding(nn.Module):
    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.embedding = nn.Embedding(weight.size(0), weight.size(1), device=weight.device, dtype=weight.dtype)

    def forward(self, tokens: Tensor) -> Tensor:  # (B, L) -> (B, L, d_model)
        return self.embedding(tokens) * math.sqrt(self.embedding.embedding_dim)


def _padding(lengths: Tensor, max_len: int) -> Tensor:
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]  # (B, L) True = pad


def _causal(length: int, device) -> Tensor:
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)  # True above the diagonal


class DenseTransformerModel(nn.Module):
    """``nn.Embedding`` + sinusoidal table + ``nn.Transformer`` (batch first) + ``nn.Linear``."""

    def __init__(self, graph_model) -> None:
        super().__init__()
        self.tgt_embed = _Embedding(graph_model.tgt_embed.weight)
        self.src_embed = self.tgt_embed if graph_model.tie_weights == "all" else _Embedding(graph_model.src_embed.weight)
        transformer = graph_model.transformer.to_torch()
        transformer.batch_first = True
        for layer in [*transformer.encoder.layers, *transformer.decoder.layers]:
            for attention in (getattr(layer, "self_attn", None), getattr(layer, "multihead_attn", None)):
                if attention is not None:
                    attention.batch_first = True
        self.transformer = transformer
        self.generator = nn.Linear(graph_model.generator.in_features, graph_model.generator.out_features,
                                   bias=graph_model.generator.bias is not None,
                                   device=graph_model.generator.weight.device, dtype=graph_model.generator.weight.dtype)
        if graph_model.tie_weights != "none":
            self.generator.weight = self.tgt_embed.embedding.weight
        self.load_state_dict(graph_model.state_dict(), strict=True)
        self.train(graph_model.training)

    def forward(self, src: Tensor, tgt: Tensor, src_lengths: Tensor, tgt_lengths: Tensor) -> Tensor:
        """Padded token ids src (B, S), tgt (B, T) -> logits (B, T, vocab)."""
        d_model = self.transformer.d_model
        dtype = self.generator.weight.dtype
        x = self.src_embed(src) + sinusoidal_table(src.size(1), d_model, dtype, src.device)
        y = self.tgt_embed(tgt) + sinusoidal_table(tgt.size(1), d_model, dtype, tgt.device)
        src_padding, tgt_padding = _padding(src_lengths, src.size(1)), _padding(tgt_lengths, tgt.size(1))
        causal = _causal(tgt.size(1), tgt.device)
        out = self.transformer(x, y, tgt_mask=causal, src_key_padding_mask=src_padding,
                               tgt_key_padding_mask=tgt_padding, memory_key_padding_mask=src_padding)
        return self.generator(out)


class DenseSingleStackModel(nn.Module):
    """Dense reference of the encoder-only / decoder-only models (complete or causal mask)."""

    def __init__(self, graph_model, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        encoder = graph_model.encoder.to_torch()
        for layer in encoder.layers:
            layer.self_attn.batch_first = True
        self.encoder = encoder
        self.embed = _Embedding(graph_model.embed.weight)
        self.generator = nn.Linear(graph_model.generator.in_features, graph_model.generator.out_features,
                                   bias=graph_model.generator.bias is not None,
                                   device=graph_model.generator.weight.device, dtype=graph_model.generator.weight.dtype)
        if graph_model.generator.weight is graph_model.embed.weight:
            self.generator.weight = self.embed.embedding.weight
        self.load_state_dict(graph_model.state_dict(), strict=True)
        self.train(graph_model.training)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Padded token ids (B, L) -> logits (B, L, vocab)."""
        dtype = self.generator.weight.dtype
        x = self.embed(tokens) + sinusoidal_table(tokens.size(1), self.embed.embedding.embedding_dim, dtype,
                                                  tokens.device)
        mask = _causal(tokens.size(1), tokens.device) if self.causal else None
        return self.generator(self.encoder(x, mask=mask, src_key_padding_mask=_padding(lengths, tokens.size(1))))
