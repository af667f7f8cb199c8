r"""Linear (kernelised) attention as message passing, and the same model run as an RNN.

"Finetuning Pretrained Transformers into RNNs" (Kasai et al., arXiv:2103.13076) replaces the
softmax kernel :math:`\exp(\langle q, k \rangle)` by a feature-map product
:math:`\langle \phi(q), \phi(k) \rangle` (Katharopoulos et al., arXiv:2006.16236):

.. math::

    o_i = \frac{\sum_{j \to i} \langle \phi(q_i), \phi(k_j) \rangle\, v_j}
               {\sum_{j \to i} \langle \phi(q_i), \phi(k_j) \rangle}

On any graph this is one round of message passing: the edge ``j -> i`` carries the weight
:math:`\langle \phi(q_i), \phi(k_j) \rangle` times :math:`v_j`, each node sums its messages and
their weights.  On the *causal* graph the sums over :math:`j \le i` factor through two running
states, which makes the model a recurrent network with constant memory per step:

.. math::

    S_i = S_{i-1} + \phi(k_i)\, v_i^\top, \qquad z_i = z_{i-1} + \phi(k_i), \qquad
    o_i = \frac{\phi(q_i)^\top S_i}{\phi(q_i)^\top z_i}

Feature maps: ``"elu"`` :math:`\phi(x) = \text{elu}(x) + 1` (Katharopoulos et al.) and ``"t2r"``
:math:`\phi(x) = \text{relu}(W_\phi x + b_\phi)`, learned per head (T2R, Kasai et al.).  A target
whose weights sum to zero (possible with ``"t2r"``) gets a zero output, the library's convention.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from ..core.attention import GraphMultiheadAttention

__all__ = ["GraphLinearAttention", "RecurrentState", "EluFeatureMap", "T2RFeatureMap", "to_linear_attention",
           "run_recurrent"]


class EluFeatureMap(nn.Module):
    r""":math:`\phi(x) = \text{elu}(x) + 1 > 0`, per channel (no parameters).  Shapes: (N, H, C) -> (N, H, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x) + 1


class T2RFeatureMap(nn.Module):
    r"""T2R's learned feature map :math:`\phi(x) = \text{relu}(W_h x + b_h)` with its own :math:`W_h` per head.

    Shapes: (N, H, C) -> (N, H, num_features).
    """

    def __init__(self, num_heads: int, head_dim: int, num_features: int, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_heads, num_features, head_dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(num_heads, num_features, device=device, dtype=dtype))
        nn.init.normal_(self.weight, std=head_dim ** -0.5)
        nn.init.normal_(self.bias, std=0.1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(torch.einsum("nhc,hfc->nhf", x, self.weight) + self.bias)  # (N, H, F)


class LinearAttentionPropagation(MessagePassing):
    """Kernelised attention as PyG message passing: ``edge_update`` weighs, ``propagate`` sums."""

    def __init__(self) -> None:
        super().__init__(aggr="sum", node_dim=0)

    def attend(self, phi_q: Tensor, phi_k: Tensor, value: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        """Returns out (T, H, Cv) and the normalised weights (num_edges, H)."""
        size = (phi_k.size(0), phi_q.size(0))
        weight = self.edge_updater(edge_index, phi_q=phi_q, phi_k=phi_k, size=size)  # (num_edges, H)
        numerator = self.propagate(edge_index, value=value, weight=weight, size=size)  # (T, H, Cv)
        denominator = scatter(weight, edge_index[1], 0, phi_q.size(0), reduce="sum")  # (T, H)
        denominator = denominator.masked_fill(denominator == 0, 1.0)  # no weight at all: zero output
        return numerator / denominator.unsqueeze(-1), weight / denominator[edge_index[1]]

    def edge_update(self, phi_q_i: Tensor, phi_k_j: Tensor) -> Tensor:
        return (phi_q_i * phi_k_j).sum(dim=-1)  # (num_edges, H)

    def message(self, value_j: Tensor, weight: Tensor) -> Tensor:
        return weight.unsqueeze(-1) * value_j  # (num_edges, H, Cv)


class RecurrentState:
    """The running sums :math:`S` (B, H, F, Cv) and :math:`z` (B, H, F) of one attention, one row per sequence.

    Their size does not depend on how many steps have been taken: the whole past in constant memory.
    """

    def __init__(self) -> None:
        self.S: Tensor | None = None
        self.z: Tensor | None = None
        self.steps = 0


class GraphLinearAttention(GraphMultiheadAttention):
    r"""Multi-head linear attention with :class:`GraphMultiheadAttention`'s projections (see the module docstring).

    Args: those of :class:`GraphMultiheadAttention` (``dropout``, ``add_bias_kv``, ``add_zero_attn`` are
    not supported), plus keyword-only ``feature_map`` (``"elu"`` or ``"t2r"``) and ``num_features``
    (T2R's feature count, default ``head_dim``).

    Calls: ``forward_graph(query, key, value, edge_index, ...)`` passes messages on ``edge_index``;
    with ``cache=RecurrentState()`` it takes one new node per sequence (query = key = value,
    (B, E)) and advances the recurrence instead: the causal graph, run as an RNN.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, *args,
                 feature_map: str = "elu", num_features: int | None = None, **kwargs) -> None:
        super().__init__(embed_dim, num_heads, dropout, bias, *args, **kwargs)
        if dropout or self.num_virtual_sources():
            raise ValueError("linear attention supports neither attention dropout nor add_bias_kv/add_zero_attn")
        if feature_map == "elu":
            self.feature_map = EluFeatureMap()
        elif feature_map == "t2r":
            factory = {"device": self.out_proj.weight.device, "dtype": self.out_proj.weight.dtype}
            self.feature_map = T2RFeatureMap(num_heads, self.head_dim, num_features or self.head_dim, **factory)
        else:
            raise ValueError(f"feature_map should be 'elu' or 't2r', not {feature_map!r}")
        self.propagation = LinearAttentionPropagation()

    @classmethod
    def from_softmax(cls, attention: GraphMultiheadAttention, **options) -> "GraphLinearAttention":
        """The linear attention holding ``attention``'s projections (T2R's starting point before finetuning)."""
        linear = cls(attention.embed_dim, attention.num_heads, 0.0, attention.in_proj_bias is not None,
                     kdim=attention.kdim, vdim=attention.vdim, scale=attention.scale,
                     qk_transform=attention.qk_transform,
                     head_dim=attention.head_dim, device=attention.out_proj.weight.device,
                     dtype=attention.out_proj.weight.dtype, **options)
        missing, unexpected = linear.load_state_dict(attention.state_dict(), strict=False)
        if unexpected or any(not name.startswith("feature_map.") for name in missing):
            raise ValueError(f"cannot copy the projections: missing {missing}, unexpected {unexpected}")
        return linear.train(attention.training)

    def attend_projected(self, q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor,
                         edge_bias: Tensor | None = None, need_weights: bool = True) -> tuple[Tensor, Tensor | None]:
        """Linear attention on projected q (T, H, C), k, v (S, H, C) along ``edge_index``, then ``out_proj``."""
        if edge_bias is not None:
            raise ValueError("linear attention has no scores to add an edge_bias to; use rotary positions instead")
        edge_index = getattr(edge_index, "edge_index", edge_index)  # a prepared graph's plain edges
        out, weights = self.propagation.attend(self.feature_map(q), self.feature_map(k), v, edge_index)
        output = F.linear(out.flatten(1), self.out_proj.weight, self.out_proj.bias)  # (T, E), as torch applies it
        return output, weights if need_weights else None  # (T, E), (num_edges, H)

    def forward_graph(self, query: Tensor, key: Tensor | None, value: Tensor | None, edge_index: Tensor | None = None,
                      edge_bias: Tensor | None = None, return_attention_weights: bool = False, *,
                      query_position: Tensor | None = None, key_position: Tensor | None = None, cache=None):
        """Message passing on ``edge_index``, or one recurrent step with a :class:`RecurrentState` cache."""
        if not isinstance(cache, RecurrentState):
            return super().forward_graph(query, key, value, edge_index, edge_bias, return_attention_weights,
                                         query_position=query_position, key_position=key_position, cache=cache)
        if edge_bias is not None:
            raise ValueError("linear attention has no scores to add an edge_bias to; use rotary positions instead")
        out = self.step(query, key, value, cache, query_position, key_position)
        return (out, None) if return_attention_weights else out

    def step(self, query: Tensor, key: Tensor, value: Tensor, state: RecurrentState,
             query_position: Tensor | None = None, key_position: Tensor | None = None) -> Tensor:
        """One step of the recurrence for B sequences at once: node b of the inputs extends sequence b."""
        if state.S is not None and query.size(0) != state.S.size(0):
            raise ValueError(f"a recurrent step takes one node per sequence: {state.S.size(0)} sequences, "
                             f"{query.size(0)} nodes given")
        phi_q = self.feature_map(self.project_query(query, query_position))  # (B, H, F)
        k, v = self.project_key_value(key, value, key_position)  # (B, H, C), (B, H, Cv)
        phi_k = self.feature_map(k)
        update = phi_k.unsqueeze(-1) * v.unsqueeze(-2)  # (B, H, F, Cv)
        state.S = update if state.S is None else state.S + update
        state.z = phi_k if state.z is None else state.z + phi_k  # (B, H, F)
        state.steps += 1
        numerator = torch.einsum("bhf,bhfc->bhc", phi_q, state.S)  # (B, H, Cv)
        denominator = (phi_q * state.z).sum(-1)  # (B, H)
        out = numerator / denominator.masked_fill(denominator == 0, 1.0).unsqueeze(-1)
        return self.out_proj(out.reshape(query.size(0), -1))  # (B, E)


def to_linear_attention(model: nn.Module, **options) -> nn.Module:
    """Replace every self-attention of ``model``'s layers by linear attention with the same projections
    (T2R's conversion; ``options`` such as ``feature_map="t2r"`` go to :class:`GraphLinearAttention`)."""
    for module in list(model.modules()):
        attention = getattr(module, "self_attn", None)
        if isinstance(attention, GraphMultiheadAttention) and not isinstance(attention, GraphLinearAttention):
            module.self_attn = GraphLinearAttention.from_softmax(attention, **options)
    return model


def run_recurrent(model: nn.Module, tokens: Tensor) -> Tensor:
    """Logits (B, L, vocab) of a decoder-only model whose attentions are linear, one token per step.

    ``model`` has ``hidden(data, cache=...)``, ``generator`` and a stack ``encoder`` (such as
    :class:`~gnn_transformer.variants.GraphVariantModel` or
    :class:`~gnn_transformer.core.model.GraphSequenceModel`); step t feeds the t-th token of every
    sequence at position t, with one :class:`RecurrentState` per layer and no edges.
    """
    from torch_geometric.data import Data

    if tokens.dim() != 2:
        raise ValueError(f"tokens must be (batch, length), got {tuple(tokens.shape)}")
    layers = model.encoder.layers
    if not all(isinstance(layer.self_attn, GraphLinearAttention) for layer in layers):
        raise ValueError("run_recurrent needs linear attention in every layer: call to_linear_attention(model) first")
    states = [RecurrentState() for _ in layers]
    no_edges = tokens.new_zeros(2, 0)
    logits = []
    for t in range(tokens.size(1)):
        position = torch.full_like(tokens[:, t], t)
        hidden = model.hidden(Data(x=tokens[:, t], position=position, edge_index=no_edges), cache=states)
        logits.append(model.generator(hidden))  # (B, vocab)
    return torch.stack(logits, dim=1)
