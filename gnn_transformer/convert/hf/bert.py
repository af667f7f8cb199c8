r"""BERT (Devlin et al., arXiv:1810.04805) as message passing on complete token graphs.

.. math::

    h^0_i = \text{LN}_e\big(W_\text{word}[t_i] + W_\text{pos}[p_i] + W_\text{type}[s_i]\big), \qquad
    h \leftarrow \text{LN}_1\big(h + \text{MHA}_{G}(h)\big), \quad h \leftarrow \text{LN}_2\big(h + \text{FFN}(h)\big)

(post-norm, exact GELU, LayerNorm :math:`\epsilon = 10^{-12}`), with :math:`G` the complete graph
of the real tokens of each sequence (padded positions receive messages but send none).
The masked-LM head is :math:`\text{logits}_i = \text{LN}_h(\text{GELU}(h_i W_h + b_h)) W_\text{word}^\top + b`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...core.interface import AttentionSite, DecodingState, InputPart, check_token_ids, sites_from_stacks
from ...core.layers import GraphTransformerEncoderLayer, resolve_activation
from ...core.stacks import GraphTransformerEncoder
from ...variants.models import LearnedPositionalEmbedding
from .common import (HFGraphModel, WeightEntry, activation_name, check_unsupported, cross_entropy, node_positions,
                     per_layer_entries, self_graph, tied, token_ids, token_mask)


class GraphBertForMaskedLM(HFGraphModel):
    """``transformers.BertForMaskedLM`` on token graphs; ``forward`` takes the original's call.

    Call: ``forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
    labels=None)`` -> ``MaskedLMOutput`` with ``logits`` (B, L, vocab).
    """

    hf_classes = ("BertForMaskedLM",)

    def __init__(self, model: nn.Module, *, backend: str = "reference") -> None:
        super().__init__()
        config = model.config
        if getattr(config, "add_cross_attention", False):
            raise NotImplementedError("BERT with add_cross_attention is not supported")
        d, eps = config.hidden_size, config.layer_norm_eps
        self.config, self.causal = config, bool(config.is_decoder)
        self.word_embeddings = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.position_embeddings = LearnedPositionalEmbedding(config.max_position_embeddings, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.embedding_norm = nn.LayerNorm(d, eps=eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        activation = activation_name(config.hidden_act)
        layer = GraphTransformerEncoderLayer(d, config.num_attention_heads, config.intermediate_size,
                                             dropout=config.hidden_dropout_prob, activation=activation,
                                             layer_norm_eps=eps, norm_first=False, backend=backend)
        layer.self_attn.dropout, layer.dropout.p = config.attention_probs_dropout_prob, 0.0
        self.encoder = GraphTransformerEncoder(layer, config.num_hidden_layers)
        self.transform = nn.Linear(d, d)
        self.transform_activation = resolve_activation(activation)
        self.transform_norm = nn.LayerNorm(d, eps=eps)
        self.decoder = nn.Linear(d, config.vocab_size)
        self.tie_weights = tied(model.cls.predictions.decoder, model.bert.embeddings.word_embeddings)
        if self.tie_weights:
            self.decoder.weight = self.word_embeddings.weight

    def weight_map(self) -> list[WeightEntry]:
        entries = per_layer_entries("", "bert.embeddings.", [
            ("word_embeddings.weight", "word_embeddings.weight"),
            ("position_embeddings.weight", "position_embeddings.weight"),
            ("token_type_embeddings.weight", "token_type_embeddings.weight"),
            ("embedding_norm.weight", "LayerNorm.weight"), ("embedding_norm.bias", "LayerNorm.bias"),
        ])
        for i in range(len(self.encoder.layers)):
            entries += per_layer_entries(f"encoder.layers.{i}.", f"bert.encoder.layer.{i}.", [
                ("self_attn.in_proj_weight", tuple(f"attention.self.{n}.weight" for n in ("query", "key", "value"))),
                ("self_attn.in_proj_bias", tuple(f"attention.self.{n}.bias" for n in ("query", "key", "value"))),
                ("self_attn.out_proj.weight", "attention.output.dense.weight"),
                ("self_attn.out_proj.bias", "attention.output.dense.bias"),
                ("norm1.weight", "attention.output.LayerNorm.weight"),
                ("norm1.bias", "attention.output.LayerNorm.bias"),
                ("linear1.weight", "intermediate.dense.weight"), ("linear1.bias", "intermediate.dense.bias"),
                ("linear2.weight", "output.dense.weight"), ("linear2.bias", "output.dense.bias"),
                ("norm2.weight", "output.LayerNorm.weight"), ("norm2.bias", "output.LayerNorm.bias"),
            ])
        entries += per_layer_entries("", "cls.predictions.", [
            ("transform.weight", "transform.dense.weight"), ("transform.bias", "transform.dense.bias"),
            ("transform_norm.weight", "transform.LayerNorm.weight"),
            ("transform_norm.bias", "transform.LayerNorm.bias"),
            ("decoder.bias", "bias"),
        ])
        if not self.tie_weights:
            entries.append(WeightEntry("decoder.weight", ("cls.predictions.decoder.weight",)))
        return entries

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                labels: Tensor | None = None, *, inputs_embeds=None, encoder_hidden_states=None, return_dict=None):
        """Masked-LM logits (B, L, vocab) of a padded batch; see the class docstring."""
        from transformers.modeling_outputs import MaskedLMOutput

        check_unsupported(inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states)
        input_ids = token_ids(input_ids)
        b, length = input_ids.shape
        device = input_ids.device
        mask = token_mask(attention_mask, b, length, "attention_mask", device)
        position = node_positions(position_ids, b, length, device)  # (B * L,)
        types = (token_type_ids.expand(b, length).reshape(-1) if token_type_ids is not None
                 else position.new_zeros(b * length))
        x = self.word_embeddings(input_ids.reshape(-1)) + self.token_type_embeddings(types) \
            + self.position_embeddings(position)  # (B * L, d)
        x = self.dropout(self.embedding_norm(x))
        x = self.encoder(x, edge_index=self_graph(mask, causal=self.causal), position=position)
        x = self.transform_norm(self.transform_activation(self.transform(x)))
        logits = self.decoder(x).view(b, length, -1)  # (B, L, vocab)
        return MaskedLMOutput(loss=None if labels is None else cross_entropy(logits, labels), logits=logits)

    # ------------------------------------------------------------------ the tools' interface
    def attention_sites(self) -> list[AttentionSite]:
        """One self-attention per layer, on the complete graph (causal with ``config.is_decoder``)."""
        return sites_from_stacks(self, [("encoder", "decoder self" if self.causal else "encoder self")])

    def input_parts(self) -> list[InputPart]:
        """Word, position and token-type embeddings; their sum is normalised (``embedding_norm``)."""
        return [InputPart("tokens", "embedding", "word_embeddings", 0, "e_i = W_word[token_i]"),
                InputPart("tokens", "positional", "position_embeddings", 0, "PE_i = W_pos[pos_i]   (learned)"),
                InputPart("tokens", "token type", "token_type_embeddings", 0, "T_i = W_type[type_i]   (segment A = 0, B = 1)")]

    def begin_decoding(self, inputs, *, bos: int | None = None):
        """Only a BERT built with ``is_decoder=True`` (causal graph) decodes; its prompts are the first tokens."""
        if not self.causal:
            raise ValueError("this BERT attends over the complete graph (config.is_decoder is False), so it cannot "
                             "decode one token at a time")
        check_token_ids(inputs, self.config.vocab_size, "prompts")
        device = self.decoder.weight.device
        return DecodingState.decoder_only(len(self.encoder.layers), device), [t.to(device) for t in inputs]

    def decode_step(self, state: DecodingState, tokens: Tensor, position: Tensor, edge_index: Tensor, group: Tensor):
        """Logits of the new nodes (n, V) and their attention weights per layer ``{"self"}`` (token type 0)."""
        state.grow(position)
        x = self.word_embeddings(tokens) + self.token_type_embeddings(torch.zeros_like(tokens)) \
            + self.position_embeddings(position)  # (n, d)
        x = self.dropout(self.embedding_norm(x))
        x, weights = self.encoder(x, edge_index, None, True, position=position, cache=state.cache)
        x = self.transform_norm(self.transform_activation(self.transform(x)))
        return self.decoder(x), [{"self": w} for w in weights]
