"""The distributed backend (gloo on CPU, spawned processes): every strategy equals one process.

One process group per world size runs every case (graph x partition x strategy) and saves
its rank's outputs, gradients and bytes sent; the tests compare them with the reference
backend on the whole graph, computed here, and with the edge cut counted here with sets.
"""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gnn_transformer.analysis.complexity import complexity_table, table_1_layers
from gnn_transformer.backends import run_backend
from gnn_transformer.backends.distributed import STRATEGIES, DistributedGraph, distributed_graph_attention
from gnn_transformer.graphs import bipartite, causal, complete
from gnn_transformer.graphs.patterns import dilated_window, sliding_window
from gnn_transformer.testing import relative_difference

H, C, CV = 3, 4, 5  # three heads: an uneven head split over 2 ranks, and over 3 heads with 4 ranks


def _random_graph(num_sources, num_targets, num_edges, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, num_sources, (num_edges,), generator=g),
                        torch.randint(0, num_targets, (num_edges,), generator=g)])  # repeats, isolated targets


def cases(world_size):
    """name -> (edge_index, S, T or None, source owner or None, target owner or None)."""
    g = torch.Generator().manual_seed(world_size)
    lopsided = torch.randint(0, max(world_size - 1, 1), (19,), generator=g)  # rank P - 1 owns nothing
    return {
        "complete": (complete([5, 8, 4]), 17, None, None, None),
        "causal": (causal([9, 8]), 17, None, None, None),
        "window": (sliding_window([17], 2), 17, None, None, None),
        "dilated": (dilated_window([17], 2, 3), 17, None, None, None),
        "random": (_random_graph(17, 17, 60, 1), 17, None, None, None),
        "bipartite": (bipartite([7, 5], [4, 3]), 12, 7, None, None),
        "random_cross_partition": (_random_graph(19, 11, 50, 2), 19, 11, lopsided,
                                   torch.randint(0, world_size, (11,), generator=g)),
        "tiny": (complete([2]), 2, None, None, None),  # fewer nodes than ranks: empty shards
    }


def tensors(num_sources, num_targets, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(num_targets, H, C, generator=g, dtype=torch.float64)
    k = torch.randn(num_sources, H, C, generator=g, dtype=torch.float64)
    v = torch.randn(num_sources, H, CV, generator=g, dtype=torch.float64)
    w = torch.randn(num_targets, H, CV, generator=g, dtype=torch.float64)  # loss = sum(out * w)
    return q, k, v, w


def reference(edge_index, num_sources, num_targets, seed):
    q, k, v, w = (t.requires_grad_(i < 3) for i, t in enumerate(tensors(num_sources, num_targets, seed)))
    out, _ = run_backend(q, k, v, edge_index, None, C ** -0.5, 0.0, "reference", True)
    (out * w).sum().backward()
    return {"out": out.detach(), "dq": q.grad, "dk": k.grad, "dv": v.grad}


def _run_cases(world_size):
    rank, results = dist.get_rank(), {}
    for seed, (name, (edges, S, T, src_owner, tgt_owner)) in enumerate(cases(world_size).items()):
        graph = DistributedGraph(edges, S, T, src_owner, tgt_owner)
        T = S if T is None else T
        mine_t, mine_s = graph.targets.nodes(rank), graph.sources.nodes(rank)
        q, k, v, w = tensors(S, T, seed)
        for strategy in STRATEGIES:
            ql, kl, vl = (x[m].clone().requires_grad_() for x, m in ((q, mine_t), (k, mine_s), (v, mine_s)))
            graph.traffic.reset()
            out = distributed_graph_attention(ql, kl, vl, graph, strategy=strategy)
            sent_forward = graph.traffic.forward
            (out * w[mine_t]).sum().backward()
            results[name, strategy] = {
                "out": out.detach(), "dq": ql.grad, "dk": kl.grad, "dv": vl.grad, "targets": mine_t,
                "sources": mine_s, "forward": sent_forward, "backward": graph.traffic.backward,
                "predicted": graph.predicted_bytes(strategy, H, C, CV, 8), "calls": dict(graph.traffic.calls),
                "computed": [o for o, block in enumerate(graph.ring_blocks) if block is not None]}
    return results


def _run_errors():
    rank, errors = dist.get_rank(), {}
    edges = complete([6])
    for what, build in {
        "graph": lambda: DistributedGraph(complete([6]) if rank == 0 else causal([6]), 6),
        "partition": lambda: DistributedGraph(edges, 6, source_partition=torch.tensor([0, 0, 0, 1, 1, rank % 2])),
        "features": lambda: distributed_graph_attention(torch.zeros(7, H, C), torch.zeros(3, H, C),
                                                        torch.zeros(3, H, C), DistributedGraph(edges, 6)),
        "strategy": lambda: distributed_graph_attention(torch.zeros(3, H, C), torch.zeros(3, H, C),
                                                        torch.zeros(3, H, C), DistributedGraph(edges, 6), strategy="x"),
        "owner": lambda: DistributedGraph(edges, 6, source_partition=torch.tensor([0, 0, 0, 1, 1, 5])),
        "keys": lambda: distributed_graph_attention(torch.zeros(3, H, C), torch.zeros(6, H, C),
                                                    torch.zeros(3, H, C), DistributedGraph(edges, 6)),
        "values": lambda: distributed_graph_attention(torch.zeros(3, H, C), torch.zeros(3, H, C),
                                                      torch.zeros(2, H, C), DistributedGraph(edges, 6)),
        "cross_targets": lambda: distributed_graph_attention(torch.zeros(4, H, C), torch.zeros(3, H, C),
                                                             torch.zeros(3, H, C),
                                                             DistributedGraph(bipartite([6], [5]), 6, 5)),
        "module": lambda: _attention()(torch.zeros(6, H * C), torch.zeros(6, H * C), torch.zeros(6, H * C),
                                       DistributedGraph(edges, 6)),
    }.items():
        try:
            build()
            errors[what] = None
        except (ValueError, TypeError) as error:
            errors[what] = str(error)
    return errors


def _attention():
    from gnn_transformer import GraphMultiheadAttention

    return GraphMultiheadAttention(H * C, H)


def _run_table_1():
    """Halo exchange's forward bytes on the graphs of the complexity table (n = 16): per row, per layer."""
    sent = {}
    for spec in table_1_layers():
        built = spec.build(16)
        for index, edges in enumerate(built if isinstance(built, list) else [built]):
            nodes = spec.nodes(16)
            graph = DistributedGraph(edges, nodes, check=False)
            q, k, v, _ = tensors(nodes, nodes, 0)
            mine = graph.targets.nodes(graph.rank)
            distributed_graph_attention(q[mine], k[mine], v[mine], graph, strategy="halo")
            sent[spec.layer, index] = graph.traffic.forward
    return sent


def _worker(rank, world_size, init_file, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        results = _run_cases(world_size)
        errors = _run_errors() if world_size == 2 else {}
        torch.save({"cases": results, "errors": errors, "table_1": _run_table_1()}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


_RUNS = {}


def run(world_size, tmp_path_factory):
    if world_size not in _RUNS:
        path = tmp_path_factory.mktemp(f"world{world_size}")
        # forked, not spawned: a spawned child imports torch again (~20 s on a loaded CI core), a fork ~0.1 s
        mp.start_processes(_worker, args=(world_size, str(path / "init"), str(path)), nprocs=world_size, join=True,
                           start_method="fork")
        _RUNS[world_size] = [torch.load(path / f"rank{r}.pt") for r in range(world_size)]
    return _RUNS[world_size]


def cut(edge_index, src_owner, tgt_owner, rank):
    """(rows rank sends, rows rank receives) in halo exchange, counted with sets."""
    sent, received = set(), set()
    for j, i in edge_index.t().tolist():
        if src_owner[j] == rank and tgt_owner[i] != rank:
            sent.add((tgt_owner[i], j))
        if src_owner[j] != rank and tgt_owner[i] == rank:
            received.add(j)
    return len(sent), len(received)


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", list(cases(2)))
def test_every_strategy_gives_the_outputs_and_gradients_of_one_process(world_size, strategy, name, tmp_path_factory):
    ranks = run(world_size, tmp_path_factory)
    edges, S, T, _, _ = cases(world_size)[name]
    T = S if T is None else T
    expected = reference(edges, S, T, list(cases(world_size)).index(name))
    covered_t, covered_s = torch.zeros(T, dtype=torch.bool), torch.zeros(S, dtype=torch.bool)
    for result in ranks:
        got = result["cases"][name, strategy]
        t, s = got["targets"], got["sources"]
        covered_t[t], covered_s[s] = True, True
        assert relative_difference(got["out"], expected["out"][t]) <= 1e-12
        assert relative_difference(got["dq"], expected["dq"][t]) <= 1e-12
        assert relative_difference(got["dk"], expected["dk"][s]) <= 1e-12  # remote gradients came home
        assert relative_difference(got["dv"], expected["dv"][s]) <= 1e-12
    assert covered_t.all() and covered_s.all()  # the shards cover the graph


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bytes_sent_are_the_bytes_predicted(world_size, strategy, tmp_path_factory):
    for result in run(world_size, tmp_path_factory):
        for name in cases(world_size):
            got = result["cases"][name, strategy]
            assert (got["forward"], got["backward"]) == (got["predicted"]["forward"], got["predicted"]["backward"])


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_halo_sends_exactly_the_edge_cut_one_all_to_all_each_way(world_size, tmp_path_factory):
    row = H * (C + CV) * 8
    nonzero = 0
    for rank, result in enumerate(run(world_size, tmp_path_factory)):
        for name, (edges, S, T, src_owner, tgt_owner) in cases(world_size).items():
            got = result["cases"][name, "halo"]
            src_owner = _owners(S, world_size, src_owner)
            tgt_owner = src_owner if T is None else _owners(T, world_size, tgt_owner)
            sent, received = cut(edges, src_owner, tgt_owner, rank)
            assert got["forward"] == sent * row and got["backward"] == received * row, name
            assert got["calls"] == {"forward": 1, "backward": 1}
            nonzero += sent
    assert nonzero > 0


def _owners(n, world_size, owner):
    if owner is not None:
        return owner.tolist()
    result = [0] * n
    for rank, part in enumerate(torch.tensor_split(torch.arange(n), world_size)):
        for i in part.tolist():
            result[i] = rank
    return result


def test_ring_passes_on_every_block_but_one_and_skips_blocks_without_edges(tmp_path_factory):
    """Ring on 17 nodes in blocks of 6, 6, 5: rank r passes on every block but rank r + 1's (P - 1 sends)."""
    row = H * (C + CV) * 8
    blocks = [6, 6, 5]
    for rank, result in enumerate(run(3, tmp_path_factory)):
        for name in ("complete", "causal", "window"):
            assert result["cases"][name, "ring"]["forward"] == row * (17 - blocks[(rank + 1) % 3])
            assert result["cases"][name, "ring"]["calls"]["forward"] == 2
        # causal over sequences [9, 8]: rank 0 (nodes 0-5) sees only its own block, rank 1 (6-11)
        # blocks 0 and 1, rank 2 (12-16, the second sequence from 9) blocks 1 and 2
        assert result["cases"]["causal", "ring"]["computed"] == [[0], [0, 1], [1, 2]][rank]
        assert result["cases"]["complete", "ring"]["computed"] == [0, 1, 2]  # sequence 5-12 spans every block


def test_bad_input_raises_clear_errors(tmp_path_factory):
    for errors in (r["errors"] for r in run(2, tmp_path_factory)):
        assert "disagree on the graph's edge_index" in errors["graph"]
        assert "disagree on the graph's source_partition" in errors["partition"]
        assert "q has 7 rows" in errors["features"]
        assert "unknown strategy 'x'" in errors["strategy"]
        assert "ranks 0..5" in errors["owner"] and "0..1" in errors["owner"]
        assert "k has 6 rows, but rank" in errors["keys"] and "holds 3 of the 6 source nodes" in errors["keys"]
        assert "v has 2 rows" in errors["values"]
        assert "q has 4 rows" in errors["cross_targets"] and "of the 5 target nodes" in errors["cross_targets"]
        assert "q has 6 rows, but rank" in errors["module"]  # the whole sequence given where a share is expected


def test_one_process_without_a_group_is_the_local_backend():
    assert not dist.is_initialized()
    edges = causal([6, 4])
    graph = DistributedGraph(edges, 10)
    q, k, v, _ = tensors(10, 10, 0)
    for strategy in STRATEGIES:
        out = distributed_graph_attention(q, k, v, graph, strategy=strategy)
        expected, _ = run_backend(q, k, v, edges, None, C ** -0.5, 0.0, "reference", True)
        assert relative_difference(out, expected) <= 1e-12
        assert graph.predicted_bytes(strategy, H, C) == {"forward": 0, "backward": 0}
    assert graph.traffic.forward == 0


@pytest.mark.parametrize("world_size", [2, 4])
def test_the_complexity_tables_communication_column_is_what_halo_exchange_sends(world_size, tmp_path_factory):
    """``experiment complexity``'s column, counted on the graphs, against the bytes measured on P ranks."""
    ranks = run(world_size, tmp_path_factory)
    d = 12
    rows = {row.layer: row for row in complexity_table([16], d, devices=world_size)}
    assert len(rows) == len(table_1_layers())
    for spec in table_1_layers():
        keys = sorted(key for key in ranks[0]["table_1"] if key[0] == spec.layer)
        message = 2 * d if spec.messages == "attention" else d  # a key and a value, or one d-vector
        sent_rows = [sum(r["table_1"][key] for r in ranks) / (H * (C + CV) * 8) for key in keys]  # every rank
        assert rows[spec.layer].communication == sum(sent_rows) / len(keys) * message, spec.layer
    complete, window = rows["Self-Attention"], rows["Self-Attention (restricted)"]
    assert complete.communication == (world_size - 1) * 16 * 2 * d  # every rank's rows to every other: O(n d)
    assert window.communication == (world_size - 1) * 2 * 4 * 2 * d  # r = 4 rows each way per boundary: O(r d)
