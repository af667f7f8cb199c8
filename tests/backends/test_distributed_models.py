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


# ---------------------------------------------------------------- the complete models, context parallel
# A ragged batch of two pairs (seq2seq) and of two sequences (decoder-only), split into contiguous
# node ranges over the ranks across the sequence boundary; the cross-attention graph has its source
# and target nodes both split.
PAIRS = ([torch.tensor([3, 4, 5, 6, 7, 8, 9]), torch.tensor([5, 6, 7, 8, 9])],
         [torch.tensor([1, 2, 3, 4, 5, 6]), torch.tensor([7, 8, 9, 2])])
SEQUENCES = (torch.tensor([1, 5, 2, 8, 3, 9, 4, 7, 6]), torch.tensor([2, 4, 6, 8, 1, 3, 5]))


def full_models():
    from gnn_transformer import GraphDecoderModel, GraphTransformerModel

    torch.manual_seed(0)
    seq2seq = GraphTransformerModel(10, 12, d_model=D, nhead=2, num_encoder_layers=2, num_decoder_layers=2,
                                    dim_feedforward=16, dropout=0.0, dtype=torch.float64)
    decoder = GraphDecoderModel(10, d_model=D, nhead=2, num_layers=2, dim_feedforward=16, dropout=0.0,
                                tie_weights=True, dtype=torch.float64)
    return {"seq2seq": seq2seq, "decoder": decoder}


def full_batches():
    from torch_geometric.data import Batch

    from gnn_transformer.graphs import seq2seq_batch, sequence_data

    return {"seq2seq": seq2seq_batch(*PAIRS), "decoder": Batch.from_data_list([sequence_data(s, "causal")
                                                                             for s in SEQUENCES])}


def logit_weights(num_tokens, vocab):
    return torch.randn(num_tokens, vocab, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def model_forward_backward(model, batch, rows=slice(None)):
    logits = model(batch)  # (N_r, V)
    w = logit_weights(*(batch_rows(batch), logits.size(1)))  # the same weights for every split
    (logits * w[rows]).sum().backward()
    return logits.detach()


def batch_rows(batch):
    return batch["tgt"].num_nodes if hasattr(batch, "node_types") else batch.num_nodes


def _model_worker(rank, world_size, init_file, folder):
    from gnn_transformer.training.distributed import context_parallel_batch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        results = {}
        for name, batch in full_batches().items():
            for strategy in STRATEGIES:
                model = full_models()[name]
                share = context_parallel_batch(batch, strategy=strategy)
                labelled = share["tgt"] if name == "seq2seq" else share
                rows = torch.tensor_split(torch.arange(batch_rows(batch)), world_size)[rank]
                assert torch.equal(labelled.position, (batch["tgt"] if name == "seq2seq" else batch).position[rows])
                logits = model(share)  # (T_r, V)
                w = logit_weights(batch_rows(batch), logits.size(1))
                (logits * w[rows]).sum().backward()
                grads = {n: p.grad.clone() for n, p in model.named_parameters()}
                for g in grads.values():
                    dist.all_reduce(g)
                results[name, strategy] = {"out": logits.detach(), "rows": rows, "grads": grads}
        torch.save(results, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 4])
def test_encoder_decoder_and_decoder_only_models_split_across_ranks_equal_one_process(world_size, tmp_path):
    """Logits (this rank's rows) and every parameter gradient (summed over the ranks) within 1e-10."""
    mp.start_processes(_model_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size,
                       join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]
    for name, batch in full_batches().items():
        model = full_models()[name]
        logits = model_forward_backward(model, batch)
        grads = {n: p.grad for n, p in model.named_parameters()}
        assert all(g is not None and g.abs().max() > 0 for g in grads.values())
        for strategy in STRATEGIES:
            seen = torch.cat([r[name, strategy]["rows"] for r in ranks])
            assert torch.equal(seen, torch.arange(logits.size(0)))  # the ranks' rows are the batch's
            for result in (r[name, strategy] for r in ranks):
                assert relative_difference(result["out"], logits[result["rows"]]) <= 1e-10, (name, strategy)
                assert result["grads"].keys() == grads.keys()
                for key, grad in grads.items():
                    assert relative_difference(result["grads"][key], grad) <= 1e-10, (name, strategy, key)


@pytest.mark.parametrize("what", ["weights", "dropout", "cache", "bias_kv", "add_zero_attn"])
def test_attention_refuses_what_the_strategies_do_not_carry(what):
    """Every strategy serves every graph (ring and head-parallel too: any edges, any number of heads);
    what none of them carries is refused by name before any communication."""
    from gnn_transformer import GraphMultiheadAttention
    from gnn_transformer.core.attention import KeyValueCache

    options = {"dropout": {"dropout": 0.1}, "bias_kv": {"add_bias_kv": True},
               "add_zero_attn": {"add_zero_attn": True}}.get(what, {})
    attention = GraphMultiheadAttention(D, 2, dtype=torch.float64, **options)
    x, graph = inputs()[0], DistributedGraph(GRAPHS[0], S)
    call = {"weights": {"return_attention_weights": True}, "cache": {"cache": KeyValueCache()}}.get(what, {})
    with pytest.raises(ValueError, match="attention on a DistributedGraph supports no edge_bias, attention weights"):
        attention(x, x, x, graph, **call)
    if what == "dropout":  # in eval mode dropout is off: the call runs
        assert relative_difference(attention.eval()(x, x, x, graph), attention(x, x, x, GRAPHS[0])) <= 1e-12


def test_a_batch_the_backend_cannot_split_is_refused():
    from torch_geometric.data import Batch

    from gnn_transformer.graphs import sequence_data
    from gnn_transformer.training.distributed import context_parallel_batch

    batch = Batch.from_data_list([sequence_data(s, "causal") for s in SEQUENCES])
    batch.edge_bias = torch.zeros(batch.edge_index.size(1), 2)
    with pytest.raises(ValueError, match="carries an edge_bias"):
        context_parallel_batch(batch)
    del batch.edge_bias
    batch.edge_index = [batch.edge_index, batch.edge_index]  # one edge set per layer
    with pytest.raises(ValueError, match=r"edge_index must be one edge set \(2, num_edges\).*got list"):
        context_parallel_batch(batch)


def test_a_world_of_one_process_falls_back_to_the_local_backends(tmp_path):
    """An initialised process group of one rank: no plan, no communication, the local backend's result."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        models = full_models()
        model, batch = models["decoder"], full_batches()["decoder"]
        from gnn_transformer.training.distributed import context_parallel_batch

        for strategy in STRATEGIES:
            share = context_parallel_batch(batch, strategy=strategy)
            assert share.edge_index.world_size == 1 and share.num_nodes == batch.num_nodes
            assert relative_difference(model(share), model(batch)) <= 1e-12
            assert share.edge_index.traffic.forward == 0 and "halo" not in vars(share.edge_index)  # no plan built
    finally:
        dist.destroy_process_group()
