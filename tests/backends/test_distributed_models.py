"""Layers and stacks on a DistributedGraph (gloo, forked processes): context parallel equals one process.

Each rank holds its share of one long sequence (self-attention) or of the source and target
sequences (cross-attention); every per-node part (projections, feed-forward, norms) runs on
the rank's nodes, attention through the distributed backend.  Outputs are the rows of the
single-process outputs; parameter gradients, summed over the ranks, are the single-process
gradients (what DDP's all-reduce would compute over this context-parallel group).
"""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gnn_transformer import GraphTransformerDecoder, GraphTransformerDecoderLayer, GraphTransformerEncoder, \
    GraphTransformerEncoderLayer
from gnn_transformer.backends.distributed import STRATEGIES, DistributedGraph
from gnn_transformer.graphs import bipartite, causal
from gnn_transformer.graphs.patterns import sliding_window
from gnn_transformer.testing import relative_difference

S, T, D = 13, 11, 8


def models():
    torch.manual_seed(0)
    encoder = GraphTransformerEncoder(GraphTransformerEncoderLayer(D, 2, 16, dropout=0.0, dtype=torch.float64), 2)
    decoder = GraphTransformerDecoder(GraphTransformerDecoderLayer(D, 2, 16, dropout=0.0, dtype=torch.float64), 2)
    return encoder, decoder


def inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(S, D, generator=g, dtype=torch.float64), torch.randn(T, D, generator=g, dtype=torch.float64),
            torch.randn(T, D, generator=g, dtype=torch.float64))  # src, tgt, loss weights


GRAPHS = (sliding_window([S], 2), causal([T]), bipartite([S], [T]))


def forward_backward(encoder, decoder, src, tgt, w, graphs, rows=slice(None)):
    memory = encoder(src, graphs[0])
    out = decoder(tgt, memory, graphs[1], graphs[2])
    (out * w[rows]).sum().backward()
    return out.detach()


def _worker(rank, world_size, init_file, folder):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        results = {}
        for strategy in STRATEGIES:
            encoder, decoder = models()
            self_src = DistributedGraph(GRAPHS[0], S, strategy=strategy)
            self_tgt = DistributedGraph(GRAPHS[1], T, strategy=strategy)
            cross = DistributedGraph(GRAPHS[2], S, T, self_src.sources, self_tgt.targets, strategy=strategy)
            src, tgt, w = inputs()
            mine_s, mine_t = self_src.sources.nodes(rank), self_tgt.targets.nodes(rank)
            out = forward_backward(encoder, decoder, src[mine_s], tgt[mine_t], w, (self_src, self_tgt, cross), mine_t)
            grads = {n: p.grad.clone() for n, p in [*encoder.named_parameters("enc."), *decoder.named_parameters("dec.")]}
            for g in grads.values():
                dist.all_reduce(g)
            results[strategy] = {"out": out, "rows": mine_t, "grads": grads}
        torch.save(results, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 3])
def test_encoder_and_decoder_split_across_ranks_equal_one_process(world_size, tmp_path):
    mp.start_processes(_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size,
                       join=True, start_method="fork")
    encoder, decoder = models()
    out = forward_backward(encoder, decoder, *inputs(), GRAPHS)
    grads = {n: p.grad for n, p in [*encoder.named_parameters("enc."), *decoder.named_parameters("dec.")]}
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]
    for strategy in STRATEGIES:
        for result in (r[strategy] for r in ranks):
            assert relative_difference(result["out"], out[result["rows"]]) <= 1e-12, strategy
            assert result["grads"].keys() == grads.keys()
            for name, grad in grads.items():
                assert relative_difference(result["grads"][name], grad) <= 1e-12, (strategy, name)


def test_attention_on_a_distributed_graph_in_one_process_is_attention_on_its_edges():
    from gnn_transformer import GraphMultiheadAttention

    torch.manual_seed(0)
    attention = GraphMultiheadAttention(D, 2, dtype=torch.float64)
    x = inputs()[0]
    graph = DistributedGraph(GRAPHS[0], S, strategy="ring")
    assert relative_difference(attention(x, x, x, graph), attention(x, x, x, GRAPHS[0])) <= 1e-12
    with pytest.raises(ValueError, match="supports no edge_bias"):
        attention(x, x, x, graph, edge_bias=torch.zeros(GRAPHS[0].size(1), 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown strategy 'rings'"):
        DistributedGraph(GRAPHS[0], S, strategy="rings")
