import pytest
import torch

from gnn_transformer.variants.switch import SwitchFeedForward
from gnn_transformer.testing import relative_difference
from gnn_transformer.testing.dense_switch import dense_switch

DT = torch.float64


def compare_with_dense(switch: SwitchFeedForward, x: torch.Tensor):
    """Outputs, loss and every gradient of the graph routing against the dense dispatch/combine reference."""
    params = {name: p.detach().clone().requires_grad_(True) for name, p in switch.named_parameters()}
    x_graph, x_dense = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, routing = switch(x_graph)
    expected, expected_loss = dense_switch(x_dense, params["router.weight"], params["w1"], params.get("b1"),
                                           params["w2"], params.get("b2"), routing.capacity)
    upstream = torch.randn(out.shape, dtype=x.dtype)
    ((out * upstream).sum() + routing.load_balancing_loss).backward()
    ((expected * upstream).sum() + expected_loss).backward()
    assert relative_difference(out, expected) < 1e-12
    assert relative_difference(routing.load_balancing_loss, expected_loss) < 1e-12
    assert relative_difference(x_graph.grad, x_dense.grad) < 1e-12
    for name, p in switch.named_parameters():
        assert relative_difference(p.grad, params[name].grad) < 1e-12, name
    return routing


@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, 1.25, 0.0])
@pytest.mark.parametrize("bias", [True, False])
def test_graph_routing_equals_dense_dispatch(capacity_factor, bias):
    switch = SwitchFeedForward(8, 12, num_experts=4, capacity_factor=capacity_factor, bias=bias, dtype=DT)
    routing = compare_with_dense(switch, torch.randn(23, 8, dtype=DT))
    assert routing.edge_index.size(1) == int((~routing.dropped).sum())
    if capacity_factor == 0.0:
        assert not routing.dropped.any()


def test_dropped_tokens_pass_through_as_zero_and_capacity_is_respected():
    switch = SwitchFeedForward(8, 12, num_experts=3, capacity_factor=0.5, dtype=DT)
    with torch.no_grad():
        switch.router.weight.zero_()
        switch.router.weight[1, 0] = 10.0  # every token with x[:, 0] > 0 prefers expert 1
    x = torch.randn(30, 8, dtype=DT)
    x[:, 0] = x[:, 0].abs() + 0.1
    with torch.no_grad():
        out, routing = switch(x)
    assert routing.capacity == 5
    assert (routing.expert == 1).all() and int((~routing.dropped).sum()) == 5
    assert routing.edge_index[0].tolist() == [0, 1, 2, 3, 4]  # first come, first served
    assert torch.equal(out[routing.dropped], torch.zeros_like(out[routing.dropped]))
    degree = torch.bincount(routing.edge_index[1], minlength=3)
    assert int(degree.max()) <= routing.capacity
    assert float(routing.load_balancing_loss) == pytest.approx(3 * float(routing.probs[:, 1].mean()), rel=1e-12)


def test_load_balancing_loss_is_one_for_a_uniform_router():
    switch = SwitchFeedForward(4, 8, num_experts=4, dtype=DT)
    with torch.no_grad():
        switch.router.weight.zero_()
    with torch.no_grad():
        _, routing = switch(torch.randn(16, 4, dtype=DT))
    assert float(routing.load_balancing_loss) == pytest.approx(1.0)


def test_jitter_only_in_training():
    switch = SwitchFeedForward(4, 8, num_experts=2, router_jitter=0.5, dtype=DT)
    x = torch.randn(10, 4, dtype=DT)
    switch.eval()
    assert torch.equal(switch.route(x).probs, switch.route(x).probs)
    switch.train()
    assert not torch.equal(switch.route(x).probs, switch.route(x).probs)


def test_bad_input():
    with pytest.raises(ValueError, match="num_experts must be at least 1"):
        SwitchFeedForward(4, 8, num_experts=0)
    with pytest.raises(ValueError, match=r"expects x of shape \(N, 4\)"):
        SwitchFeedForward(4, 8, num_experts=2)(torch.randn(3, 5))
