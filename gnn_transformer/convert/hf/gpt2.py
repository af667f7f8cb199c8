r"""GPT-2 (Radford et al. 2019) as message passing on causal token graphs.

.. math::

    h^0_i = W_\text{te}[t_i] + W_\text{pe}[p_i], \qquad
    h \leftarrow h + \text{MHA}_{G}(\text{LN}_1(h)), \quad h \leftarrow h + \text{FFN}(\text{LN}_2(h)), \qquad
    \text{logits}_i = \text{LN}_f(h_i)\, W_\text{te}^\top

with :math:`G` the causal graph of each sequence (keys restricted to the real tokens),
pre-norm layers, :math:`\text{FFN}(x) = \text{GELU}_\text{tanh}(x W_1 + b_1) W_2 + b_2` (GPT-2's
``gelu_new`` is GELU's tanh approximation) and scores scaled by :math:`1/\sqrt{C}`.
GPT-2 stores its projections as ``Conv1D`` (in, out) matrices: they are transposed into
``torch.nn.Linear``/``MultiheadAttention`` layout on import, ``c_attn`` becoming ``in_proj_weight``.
"""
from __future__ import annotations

from torch import Tensor, nn

from ...core.interface import AttentionSite, DecodingState, InputPart, check_token_ids, sites_from_stacks
from ...core.layers import GraphTransformerEncoderLayer
from ...core.stacks import GraphTransformerEncoder
from ...variants.models import LearnedPositionalEmbedding
from .common import (HFGraphModel, WeightEntry, activation_name, check_unsupported, cross_entropy, node_positions,
                     per_layer_entries, self_graph, tied, token_ids, token_mask)


class GraphGPT2LMHeadModel(HFGraphModel):
    """``transformers.GPT2LMHeadModel`` on token graphs; ``forward`` takes the original's call.

    Args:
        model: the ``GPT2LMHeadModel`` whose configuration (and weight tying) to reproduce.
        backend: attention backend of every layer.

    Call: ``forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
    labels=None)`` -> ``CausalLMOutputWithCrossAttentions`` with ``logits`` (B, L, vocab)
    (and ``loss``, the next-token cross-entropy, when ``labels`` are given).
    """

    hf_classes = ("GPT2LMHeadModel",)

    def __init__(self, model: nn.Module, *, backend: str = "reference") -> None:
        super().__init__()
        config = model.config
        if config.add_cross_attention:
            raise NotImplementedError("GPT-2 with add_cross_attention is not supported")
        if config.reorder_and_upcast_attn and config._attn_implementation == "eager":
            raise NotImplementedError("reorder_and_upcast_attn (float32 scores in the eager path) is not reproduced")
        d, heads = config.n_embd, config.n_head
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, d)
        self.wpe = LearnedPositionalEmbedding(config.n_positions, d)
        self.drop = nn.Dropout(config.embd_pdrop)
        layer = GraphTransformerEncoderLayer(
            d, heads, config.n_inner or 4 * d, dropout=config.resid_pdrop,
            activation=activation_name(config.activation_function), layer_norm_eps=config.layer_norm_epsilon,
            norm_first=True, backend=backend,
        )
        layer.self_attn.dropout, layer.dropout.p = config.attn_pdrop, 0.0  # GPT-2: no dropout inside the MLP
        self.decoder = GraphTransformerEncoder(layer, config.n_layer, nn.LayerNorm(d, eps=config.layer_norm_epsilon))
        for index, block in enumerate(self.decoder.layers):
            scale = (d // heads) ** -0.5 if config.scale_attn_weights else 1.0
            block.self_attn.scale = scale / (index + 1) if config.scale_attn_by_inverse_layer_idx else scale
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.tie_weights = tied(model.lm_head, model.transformer.wte)
        if self.tie_weights:
            self.lm_head.weight = self.wte.weight

    def weight_map(self) -> list[WeightEntry]:
        entries = [WeightEntry("wte.weight", ("transformer.wte.weight",)),
                   WeightEntry("wpe.weight", ("transformer.wpe.weight",)),
                   WeightEntry("decoder.norm.weight", ("transformer.ln_f.weight",)),
                   WeightEntry("decoder.norm.bias", ("transformer.ln_f.bias",))]
        for i in range(len(self.decoder.layers)):
            entries += per_layer_entries(f"decoder.layers.{i}.", f"transformer.h.{i}.", [
                ("self_attn.in_proj_weight", "attn.c_attn.weight", True),
                ("self_attn.in_proj_bias", "attn.c_attn.bias"),
                ("self_attn.out_proj.weight", "attn.c_proj.weight", True),
                ("self_attn.out_proj.bias", "attn.c_proj.bias"),
                ("linear1.weight", "mlp.c_fc.weight", True), ("linear1.bias", "mlp.c_fc.bias"),
                ("linear2.weight", "mlp.c_proj.weight", True), ("linear2.bias", "mlp.c_proj.bias"),
                ("norm1.weight", "ln_1.weight"), ("norm1.bias", "ln_1.bias"),
                ("norm2.weight", "ln_2.weight"), ("norm2.bias", "ln_2.bias"),
            ])
        if not self.tie_weights:
            entries.append(WeightEntry("lm_head.weight", ("lm_head.weight",)))
        return entries

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                labels: Tensor | None = None, *, inputs_embeds=None, cache=None, past_key_values=None,
                use_cache=None, encoder_hidden_states=None, return_dict=None):
        """Logits (B, L, vocab) of a padded batch; see the class docstring."""
        from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

        check_unsupported(inputs_embeds=inputs_embeds, cache=cache, past_key_values=past_key_values,
                          use_cache=use_cache, encoder_hidden_states=encoder_hidden_states)
        input_ids = token_ids(input_ids)
        b, length = input_ids.shape
        mask = token_mask(attention_mask, b, length, "attention_mask", input_ids.device)
        position = node_positions(position_ids, b, length, input_ids.device)  # (B * L,)
        x = self.wte(input_ids.reshape(-1)) + self.wpe(position)  # (B * L, d)
        if token_type_ids is not None:
            x = x + self.wte(token_type_ids.expand(b, length).reshape(-1))  # GPT-2 embeds token types with wte
        x = self.decoder(self.drop(x), edge_index=self_graph(mask, causal=True), position=position)
        logits = self.lm_head(x).view(b, length, -1)  # (B, L, vocab)
        loss = None if labels is None else cross_entropy(logits[:, :-1], labels[:, 1:])
        return CausalLMOutputWithCrossAttentions(loss=loss, logits=logits)

    # ------------------------------------------------------------------ the tools' interface
    def attention_sites(self) -> list[AttentionSite]:
        """One masked self-attention per layer, on the causal graph."""
        return sites_from_stacks(self, [("decoder", "decoder self")])

    def input_parts(self) -> list[InputPart]:
        """Token embeddings ``wte`` and learned positions ``wpe``, summed."""
        return [InputPart("tokens", "embedding", "wte", 0, "e_i = W_te[token_i]"),
                InputPart("tokens", "positional", "wpe", 0, "PE_i = W_pe[pos_i]   (learned)")]

    def begin_decoding(self, inputs, *, bos: int | None = None):
        """The prompts are the first tokens (``bos`` is not used)."""
        check_token_ids(inputs, self.config.vocab_size, "prompts")
        device = self.lm_head.weight.device
        return DecodingState.decoder_only(len(self.decoder.layers), device), [t.to(device) for t in inputs]

    def decode_step(self, state: DecodingState, tokens: Tensor, position: Tensor, edge_index: Tensor, group: Tensor):
        """Logits of the new nodes (n, V) and their attention weights per layer ``{"self"}``."""
        state.grow(position)
        x = self.drop(self.wte(tokens) + self.wpe(position))  # (n, d)
        x, weights = self.decoder(x, edge_index, None, True, position=position, cache=state.cache)
        return self.lm_head(x), [{"self": w} for w in weights]
