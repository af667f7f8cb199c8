"""End to end: the graph models against torch.nn with identical weights, in one process and one run.

    python comparisons/bench_model.py --quick       # CPU, float32, a few sizes, a few minutes on 1 thread
    python comparisons/bench_model.py               # every size (d_model 64-512, 2-6 layers, 1 x 512 .. 64 x 32)
    python comparisons/bench_model.py --tiny        # a smoke run at toy sizes (gpu_check.py --dry-run)

Each row is one model size and one batch (``B x L``: B sequences of L tokens, sources and
targets alike; ``ragged``: lengths drawn from a range).  The graph model runs with
``backend="auto"`` (segments or tiles of ``"chunked"`` on CPU, the fused kernels on CUDA); its torch
twin (:class:`~gnn_transformer.testing.dense_models.DenseTransformerModel`:
``nn.Embedding`` + sinusoidal table + ``nn.Transformer`` + ``nn.Linear``, or the
``nn.TransformerEncoder`` with a causal mask of the decoder-only model) is built from the graph
model by the library's conversion (``to_torch`` and a strict ``load_state_dict``), so both hold
the same weights; the script checks that their logits agree before timing.  Columns, medians
over ``--repeats`` runs after a warm-up, in ms, and graph / torch ratios:

* ``train``: forward + cross-entropy + backward + ``Adam.step`` + ``zero_grad`` (dropout 0:
  both do the same arithmetic; torch's fused SDPA dropout and the library's hashed dropout
  are different algorithms); the graph model's batch carries plain edge indices, so every
  step prepares its graphs (CSR, segment or tile plan) as a training loop over changing batches does;
* ``train*``: the same with the batch's graphs prepared once beforehand (``prepare_graph``,
  as a data loader can do once per batch and epoch);
* ``fwd``: inference forward (``eval``, no grad): the graph model on the batch, torch on the
  padded batch with its key-padding and causal masks (torch's inference fast path where it
  applies);
* ``greedy``: greedy decoding of ``--tokens`` tokens for every sequence of the batch (end
  token disabled): the graph model grows its graph with a key/value cache
  (:class:`~gnn_transformer.generation.GrowingSeq2SeqGraph`), torch recomputes its padded
  batch each step (``nn.Transformer`` has no cache); both decode the same tokens (checked).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gnn_transformer import GraphDecoderModel, GraphTransformerModel, graphs
from gnn_transformer.backends.prepared import prepare_graph
from gnn_transformer.generation import GrowingCausalGraph, GrowingSeq2SeqGraph, greedy
from gnn_transformer.testing.dense_decoding import DenseCausalDecoding, DenseSeq2SeqDecoding
from gnn_transformer.testing.dense_models import DenseSingleStackModel, DenseTransformerModel
from measure import CLOCK, timed, use_clock

VOCAB = 1000


@dataclass
class Row:
    model: str  # "seq2seq" | "decoder"
    d_model: int
    layers: int
    batch: int
    length: int
    ragged: bool = False

    @property
    def name(self) -> str:
        lengths = f"{self.length // 4}-{self.length}" if self.ragged else str(self.length)
        return f"{self.model} d{self.d_model} L{self.layers} {self.batch}x{lengths}"

    def lengths(self) -> list[int]:
        if not self.ragged:
            return [self.length] * self.batch
        generator = torch.Generator().manual_seed(self.batch * 1000 + self.length)
        return torch.randint(self.length // 4, self.length + 1, (self.batch,), generator=generator).tolist()


def rows(size: str) -> list[Row]:
    if size == "tiny":
        return [Row("seq2seq", 32, 1, 2, 8), Row("decoder", 32, 1, 2, 8, ragged=True)]
    quick = [Row("seq2seq", 64, 2, 64, 32), Row("seq2seq", 128, 3, 16, 48), Row("seq2seq", 128, 3, 16, 48, True),
             Row("seq2seq", 256, 4, 4, 128), Row("decoder", 128, 3, 16, 48), Row("decoder", 128, 3, 16, 48, True)]
    if size == "quick":
        return quick
    return [*quick, Row("seq2seq", 512, 6, 1, 512), Row("seq2seq", 512, 6, 8, 64), Row("decoder", 512, 6, 1, 512),
            Row("decoder", 256, 4, 64, 32, True)]


def tokens(lengths: list[int], device, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(2, VOCAB, (n,), generator=generator).to(device) for n in lengths]


def padded(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([s.numel() for s in sequences], device=sequences[0].device)
    out = torch.zeros(len(sequences), int(lengths.max()), dtype=torch.long, device=sequences[0].device)
    for row, sequence in zip(out, sequences):
        row[: sequence.numel()] = sequence
    return out, lengths


def prepared(batch, model_kind: str):
    """A copy of the batch whose graphs are prepared once (``prepare_graph``)."""
    batch = batch.clone()
    if model_kind == "seq2seq":
        for (src, _, dst), store in zip(batch.edge_types, batch.edge_stores):
            store.edge_index = prepare_graph(store.edge_index, batch[src].num_nodes, batch[dst].num_nodes)
    else:
        batch.edge_index = prepare_graph(batch.edge_index, batch.num_nodes)
    return batch


class Pair:
    """A graph model, its torch twin with the same weights, one batch in both layouts."""

    def __init__(self, row: Row, device, dtype) -> None:
        torch.manual_seed(0)
        common = dict(d_model=row.d_model, nhead=max(1, row.d_model // 32), dim_feedforward=4 * row.d_model,
                      dropout=0.0, device=device, dtype=dtype, backend="auto")
        lengths = row.lengths()
        self.kind, self.device = row.model, device
        if row.model == "seq2seq":
            self.graph = GraphTransformerModel(VOCAB, num_encoder_layers=row.layers, num_decoder_layers=row.layers,
                                               **common)
            self.torch = DenseTransformerModel(self.graph)
            self.sources, targets = tokens(lengths, device, 1), tokens(lengths, device, 2)
            labels = tokens(lengths, device, 3)
            self.batch = graphs.seq2seq_batch(self.sources, targets, labels).to(device)
            src, src_lengths = padded(self.sources)
            tgt, tgt_lengths = padded(targets)
            self.dense_inputs = (src, tgt, src_lengths, tgt_lengths)
            self.labels = self.batch["tgt"].y
            lengths_ = tgt_lengths
        else:
            self.graph = GraphDecoderModel(VOCAB, num_layers=row.layers, **common)
            self.torch = DenseSingleStackModel(self.graph, causal=True)
            from torch_geometric.data import Batch

            self.sources = tokens(lengths, device, 1)
            labels = tokens(lengths, device, 3)
            data = [graphs.sequence_data(t.cpu(), "causal") for t in self.sources]
            for item, y in zip(data, labels):
                item.y = y.cpu()
            self.batch = Batch.from_data_list(data).to(device)
            tok, lengths_ = padded(self.sources)
            self.dense_inputs = (tok, lengths_)
            self.labels = self.batch.y
        self.valid = torch.arange(max(lengths), device=device)[None, :] < lengths_[:, None]  # (B, L) real positions
        self.prepared_batch = prepared(self.batch, row.model)

    def check(self) -> float:
        """Largest difference of the logits of both models (same weights, same tokens)."""
        with torch.no_grad():
            graph = self.graph.eval()(self.batch)
            dense = self.torch.eval()(*self.dense_inputs)[self.valid]
        return float((graph - dense).abs().max() / dense.abs().max().clamp(min=1))

    def train_step(self, which: str):
        model = self.graph if which != "torch" else self.torch
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        batch = self.prepared_batch if which == "graph*" else self.batch

        def step():
            logits = model(batch) if which != "torch" else model(*self.dense_inputs)[self.valid]
            F.cross_entropy(logits, self.labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    def forward(self, which: str):
        def run():
            with torch.no_grad():
                return self.graph(self.batch) if which == "graph" else self.torch(*self.dense_inputs)
        return run

    def decode(self, which: str, count: int):
        first = [s[:1] for s in self.sources]  # decoder-only: a one-token prompt

        def run():
            with torch.no_grad():
                if self.kind == "seq2seq":
                    scorer = (GrowingSeq2SeqGraph(self.graph, self.sources, bos=0) if which == "graph"
                              else DenseSeq2SeqDecoding(self.graph, self.sources, bos=0))
                else:
                    scorer = GrowingCausalGraph(self.graph, first) if which == "graph" else DenseCausalDecoding(
                        self.graph, first)
                return [h.tokens.tolist() for h in greedy(scorer, max_new_tokens=count)]
        return run


def measure(row: Row, device, dtype, repeats: int, count: int) -> dict:
    pair = Pair(row, device, dtype)
    result = {"row": row.name, "check": pair.check()}
    for mode in ("train", "fwd", "greedy"):
        if mode == "train":
            makers = {"graph": pair.train_step("graph"), "graph*": pair.train_step("graph*"),
                      "torch": pair.train_step("torch")}
        elif mode == "fwd":
            pair.graph.eval(), pair.torch.eval()
            makers = {"graph": pair.forward("graph"), "torch": pair.forward("torch")}
        else:
            pair.graph.eval(), pair.torch.eval()
            graph_tokens, torch_tokens = pair.decode("graph", count)(), pair.decode("torch", count)()
            result["greedy_same"] = graph_tokens == torch_tokens
            makers = {"graph": pair.decode("graph", count), "torch": pair.decode("torch", count)}
        for name, fn in makers.items():
            result[f"{mode} {name}"] = timed(fn, device, repeats if mode != "greedy" else max(1, repeats // 3), warmup=True)
    return result


HEADER = (f"{'model':28} {'train ms':>9} {'torch':>8} {'ratio':>6} {'train* ms':>9} {'ratio':>6} "
          f"{'fwd ms':>8} {'torch':>8} {'ratio':>6} {'greedy ms':>10} {'torch':>9} {'ratio':>6}  logits diff")


def line(r: dict) -> str:
    return (f"{r['row']:28} {r['train graph']:>9.1f} {r['train torch']:>8.1f} "
            f"{r['train graph'] / r['train torch']:>6.2f} {r['train graph*']:>9.1f} "
            f"{r['train graph*'] / r['train torch']:>6.2f} {r['fwd graph']:>8.1f} {r['fwd torch']:>8.1f} "
            f"{r['fwd graph'] / r['fwd torch']:>6.2f} {r['greedy graph']:>10.1f} {r['greedy torch']:>9.1f} "
            f"{r['greedy graph'] / r['greedy torch']:>6.2f}  {r['check']:.1e}"
            f"{'' if r['greedy_same'] else ' (greedy tokens differ)'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few sizes (CPU, a few minutes)")
    size.add_argument("--tiny", action="store_true", help="toy sizes: a smoke run of the whole script")
    parser.add_argument("--device", default=None, help="default: cuda where present, else cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per cell (default 5; greedy a third)")
    parser.add_argument("--tokens", type=int, default=32, help="greedy: new tokens per sequence")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--rows", default=None, help="comma-separated substrings of row names")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                        help="cpu: the process's CPU time, steadier than wall time on a shared CPU machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_clock(args.clock)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype)
    size_name = "tiny" if args.tiny else "quick" if args.quick else "full"
    selected = [r for r in rows(size_name) if args.rows is None or any(s in r.name for s in args.rows.split(","))]
    repeats = args.repeats or (1 if args.tiny else 5)
    count = 4 if args.tiny else args.tokens
    start = time.perf_counter()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; {args.dtype}; heads d_model / 32, feed-forward 4 d_model, vocabulary {VOCAB}; "
          f"median of {repeats} (greedy: {max(1, repeats // 3)}), {args.clock} time, {count} greedy tokens; "
          f"torch {torch.__version__}")
    print(HEADER + "\n" + "-" * len(HEADER), flush=True)
    results = []
    for row in selected:  # each row printed when measured
        results.append(measure(row, device, dtype, repeats, count))
        print(line(results[-1]), flush=True)
    print(f"{time.perf_counter() - start:.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "dtype": args.dtype, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
