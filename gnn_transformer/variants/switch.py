r"""Switch Transformer routing (Fedus, Zoph & Shazeer, arXiv:2101.03961) as a bipartite token -> expert graph.

A mixture-of-experts feed-forward replaces the one FFN by :math:`E` expert FFNs and sends each
token to one of them.  In the graph view the routing *is* a graph: a bipartite graph from token
nodes to expert nodes, chosen per token, with one edge per routed token:

.. math::

    p_i = \operatorname{softmax}(x_i W_r) \in \mathbb{R}^E, \qquad e_i = \arg\max_e p_{i,e}, \qquad
    y_i = p_{i, e_i}\, \text{FFN}_{e_i}(x_i)

An expert takes at most :math:`C = \lceil \text{capacity\_factor} \cdot N / E \rceil` tokens (in node
order, first come first served); a token over capacity gets no edge, its output is zero and the
residual connection around the layer passes it on unchanged ("the token representation is
passed directly to the next layer through the residual connection", section 2.2).  The
auxiliary load-balancing loss (eq. 4-6) is

.. math::

    \mathcal{L}_\text{aux} = E \sum_{e=1}^{E} f_e P_e, \qquad
    f_e = \frac{1}{N} \sum_i [e_i = e], \qquad P_e = \frac{1}{N} \sum_i p_{i,e}

returned unscaled (the paper multiplies it by :math:`\alpha = 10^{-2}`); it is 1 for a uniform
router and grows as routing concentrates.  Its gradient reaches the router through :math:`P`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.layers import Activation, resolve_activation

__all__ = ["SwitchFeedForward", "Routing"]


@dataclass
class Routing:
    """The routing graph of one call.

    Attributes:
        edge_index: (2, num_routed) token -> expert edges (row 0 token nodes, row 1 expert nodes),
            sorted by expert, then token.
        gate: (num_routed,) router probability of the chosen expert on each edge.
        expert: (N,) chosen expert of every token (also of dropped ones).
        dropped: (N,) True for tokens over their expert's capacity.
        probs: (N, E) router probabilities.
        capacity: tokens each expert accepts.
        load_balancing_loss: the auxiliary loss (scalar).
    """

    edge_index: Tensor
    gate: Tensor
    expert: Tensor
    dropped: Tensor
    probs: Tensor
    capacity: int
    load_balancing_loss: Tensor


class SwitchFeedForward(nn.Module):
    r"""Top-1 mixture-of-experts feed-forward with capacity and load balancing (see the module docstring).

    Args:
        d_model: node feature size.
        dim_feedforward: hidden size of each expert.
        num_experts: E.
        capacity_factor: slack over an even split of the tokens (1.0 in the paper; <= 0 means no limit).
        activation: of the experts' hidden layer.
        bias: biases in the experts (the router has none).
        router_jitter: multiplicative uniform noise :math:`x \cdot U(1 - \epsilon, 1 + \epsilon)` on the
            router's input in training mode (the paper's :math:`\epsilon = 10^{-2}`; 0 by default).

    Parameters: ``router.weight`` (E, d_model); ``w1`` (E, dim_feedforward, d_model), ``b1``
    (E, dim_feedforward), ``w2`` (E, d_model, dim_feedforward), ``b2`` (E, d_model).

    Shapes: x (N, d_model) -> y (N, d_model) and a :class:`Routing`.
    """

    def __init__(self, d_model: int, dim_feedforward: int, num_experts: int, capacity_factor: float = 1.0,
                 activation: Activation = "relu", bias: bool = True, router_jitter: float = 0.0,
                 device=None, dtype=None) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be at least 1, got {num_experts}")
        factory = {"device": device, "dtype": dtype}
        self.num_experts, self.capacity_factor, self.router_jitter = num_experts, capacity_factor, router_jitter
        self.router = nn.Linear(d_model, num_experts, bias=False, **factory)
        self.w1 = nn.Parameter(torch.empty(num_experts, dim_feedforward, d_model, **factory))
        self.w2 = nn.Parameter(torch.empty(num_experts, d_model, dim_feedforward, **factory))
        self.b1 = nn.Parameter(torch.zeros(num_experts, dim_feedforward, **factory)) if bias else None
        self.b2 = nn.Parameter(torch.zeros(num_experts, d_model, **factory)) if bias else None
        self.activation = resolve_activation(activation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each expert initialised as an ``nn.Linear`` would be."""
        for weight in (self.w1, self.w2):
            for expert in weight:
                nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
        for bias, fan_in in ((self.b1, self.w1.size(-1)), (self.b2, self.w2.size(-1))):
            if bias is not None:
                nn.init.uniform_(bias, -fan_in ** -0.5, fan_in ** -0.5)
        self.router.reset_parameters()

    def capacity(self, num_tokens: int) -> int:
        """Tokens each expert accepts: ``ceil(capacity_factor * N / E)`` (all of them without a limit)."""
        if self.capacity_factor <= 0:
            return num_tokens
        return math.ceil(self.capacity_factor * num_tokens / self.num_experts)

    def route(self, x: Tensor) -> Routing:
        """Choose an expert per token and build the token -> expert graph."""
        if x.dim() != 2 or x.size(-1) != self.router.in_features:
            raise ValueError(f"SwitchFeedForward expects x of shape (N, {self.router.in_features}), "
                             f"got {tuple(x.shape)}")
        router_input = x
        if self.training and self.router_jitter > 0:
            router_input = x * torch.empty_like(x).uniform_(1 - self.router_jitter, 1 + self.router_jitter)
        probs = torch.softmax(self.router(router_input), dim=-1)  # (N, E)
        gate, expert = probs.max(dim=-1)  # (N,), (N,)
        one_hot = F.one_hot(expert, self.num_experts)  # (N, E)
        rank = (one_hot.cumsum(dim=0) - 1).gather(1, expert[:, None]).squeeze(1)  # (N,) earlier tokens, same expert
        capacity = self.capacity(x.size(0))
        dropped = rank >= capacity
        order = torch.argsort(expert * x.size(0) + torch.arange(x.size(0), device=x.device))  # by expert, then token
        kept = order[~dropped[order]]
        edge_index = torch.stack([kept, expert[kept]])  # (2, num_routed) token -> expert
        fraction = one_hot.to(probs.dtype).mean(dim=0)  # f_e, before the capacity limit
        loss = self.num_experts * (fraction * probs.mean(dim=0)).sum()
        return Routing(edge_index, gate[kept], expert, dropped, probs, capacity, loss)

    def forward(self, x: Tensor) -> tuple[Tensor, Routing]:
        """Every token through its expert along the routing graph, scaled by its gate; zeros for dropped tokens."""
        routing = self.route(x)
        token, expert = routing.edge_index
        out = torch.zeros_like(x)  # (N, d_model)
        for e in range(self.num_experts):  # each expert node transforms the messages on its incoming edges
            edges = (expert == e).nonzero().squeeze(1)
            if edges.numel() == 0:
                continue
            messages = x[token[edges]]  # (n_e, d_model)
            hidden = self.activation(F.linear(messages, self.w1[e], None if self.b1 is None else self.b1[e]))
            result = F.linear(hidden, self.w2[e], None if self.b2 is None else self.b2[e])  # (n_e, d_model)
            out = out.index_add(0, token[edges], routing.gate[edges, None] * result)
        return out, routing

    def extra_repr(self) -> str:
        return (f"d_model={self.router.in_features}, dim_feedforward={self.w1.size(1)}, "
                f"num_experts={self.num_experts}, capacity_factor={self.capacity_factor}")
