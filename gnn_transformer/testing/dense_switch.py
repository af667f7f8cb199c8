"""A dense reference of Switch routing, with dispatch and combine tensors as Mesh TensorFlow computes it.

Tokens go to a (E, C, d) buffer through a one-hot (N, E, C) dispatch tensor and come back through
a combine tensor holding the gates; all experts run as batched matrix products over their C
slots.  No graph, no index lists: the formulation the Switch Transformer code uses on TPUs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dense_switch(x: Tensor, router_weight: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
                 capacity: int, activation=F.relu) -> tuple[Tensor, Tensor]:
    """Outputs (N, d) and the load-balancing loss of top-1 routing with ``capacity`` slots per expert."""
    num_experts = router_weight.size(0)
    probs = torch.softmax(x @ router_weight.T, dim=-1)  # (N, E)
    expert = probs.argmax(dim=-1)
    gate = probs.gather(1, expert[:, None]).squeeze(1)  # (N,)
    chosen = F.one_hot(expert, num_experts).to(x.dtype)  # (N, E)
    slot = torch.cumsum(chosen, dim=0) * chosen - 1  # (N, E): slot in the expert's buffer, -1 elsewhere
    within = chosen * (slot < capacity).to(x.dtype)  # the tokens that fit
    dispatch = within[:, :, None] * F.one_hot(slot.clamp(0, capacity - 1).long(), capacity).to(x.dtype)  # (N, E, C)
    combine = dispatch * gate[:, None, None]
    expert_inputs = torch.einsum("nec,nd->ecd", dispatch, x)  # (E, C, d)
    hidden = torch.einsum("ecd,efd->ecf", expert_inputs, w1) + (0 if b1 is None else b1[:, None, :])
    expert_outputs = torch.einsum("ecf,edf->ecd", activation(hidden), w2) + (0 if b2 is None else b2[:, None, :])
    out = torch.einsum("nec,ecd->nd", combine, expert_outputs)  # (N, d)
    loss = num_experts * (chosen.mean(dim=0) * probs.mean(dim=0)).sum()
    return out, loss
