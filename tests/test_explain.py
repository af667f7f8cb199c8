"""explain: the printed numbers are the model's own tensors, every stage is there, in order."""
import html.parser
import re

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.utils import scatter

from gnn_transformer import GraphDecoderModel, GraphEncoderModel, GraphSequenceModel, GraphTransformerModel, graphs
from gnn_transformer.core.model import paper_parts
from gnn_transformer.cli import main
from gnn_transformer.tasks.demo import demo_batch, demo_model
from gnn_transformer.explain import explain
from gnn_transformer.tasks.base import Vocabulary

DIGITS = 3


# ---- reading numbers back out of the text -------------------------------------------------------

def _section(text: str, title: str) -> list[str]:
    """The lines of the stage whose header contains ``title``."""
    sections = text.split("\n== ")
    matches = [s for s in sections if title in s.splitlines()[0]]
    assert len(matches) == 1, f"{len(matches)} stages titled {title!r}"
    return matches[0].splitlines()


def _table(text: str, stage: str, table: str) -> list[dict]:
    """Rows (column -> cell string) of one table of one stage, with wrapped parts joined."""
    lines, rows = _section(text, stage), None
    for number, line in enumerate(lines):
        if re.match(re.escape(table) + r"(?!\w)", line.strip()):  # a title, not a formula like logits_i = ...
            header = lines[number + 1].split()
            block = []
            for row_line in lines[number + 2:]:
                if not row_line.strip() or row_line.strip().startswith("("):
                    break
                block.append(dict(zip(header, row_line.split())))
            rows = block if rows is None else [{**a, **b} for a, b in zip(rows, block)]
    assert rows, f"no table {table!r} in stage {stage!r}"
    return rows


def _values(rows: list[dict], columns: list[str]) -> torch.Tensor:
    return torch.tensor([[float(row[c]) for c in columns] for row in rows], dtype=torch.float64)


def assert_printed(rows: list[dict], columns: list[str], expected: torch.Tensor, digits: int = DIGITS) -> None:
    """Every printed value is ``expected`` rounded to ``digits`` decimals."""
    printed = _values(rows, columns)
    assert printed.shape == expected.shape
    error = (printed - expected.detach().to(torch.float64)).abs().max().item()
    assert error <= 0.5 * 10 ** -digits + 1e-6, f"printed values differ from the model's by {error}"


def cols(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{c}" for c in range(n)]


# ---- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo():
    model, vocabulary = demo_model()
    batch = demo_batch(vocabulary)
    explanation = explain()
    return model, vocabulary, batch, explanation, explanation.text()


EXPECTED_KEYS = (
    ["source.embedding", "source.positional", "source.input", "encoder.graph"]
    + [f"encoder.{layer}.{part}" for layer in (0, 1) for part in
       ("self_attention", "self_attention.norm", "feed_forward", "feed_forward.norm")]
    + ["encoder.final_norm", "target.embedding", "target.positional", "target.input", "decoder.graph"]
    + [f"decoder.{layer}.{part}" for layer in (0, 1) for part in
       ("self_attention", "self_attention.norm", "cross_attention", "cross_attention.norm", "feed_forward",
        "feed_forward.norm")]
    + ["decoder.final_norm", "output.logits", "output.probabilities"]
)


def test_every_stage_is_there_in_the_order_of_the_paper(demo):
    *_, explanation, text = demo
    assert [stage.key for stage in explanation.stages] == EXPECTED_KEYS
    headers = [line for line in text.splitlines() if line.startswith("== ")]
    assert [h.split(". ", 1)[1].rsplit(" =", 1)[0].rstrip(" =") for h in headers] == \
        [stage.title for stage in explanation.stages]
    assert max(len(line) for line in text.splitlines()) <= 110
    for stage in explanation.stages:
        assert stage.formula and stage.text and stage.tables


def test_printed_inputs_and_encoder_attention_are_the_models(demo):
    model, _, batch, _, text = demo
    src = batch["src"]
    x = model.src_embed(src.x) + model.positional(src.position)  # (3, 8)
    assert_printed(_table(text, "Source tokens: embedding + positional", "x = e + PE"), cols("x", 8), x)
    attention = model.transformer.encoder.layers[0].self_attn
    q, k, v = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).view(3, 3, 2, 4).unbind(1)  # (3, 2, 4)
    stage = "Encoder layer 1 · self-attention"
    for head in (0, 1):
        rows = _table(text, stage, f"head {head}: projections q, k, v")
        assert_printed(rows, cols("q", 4), q[:, head])
        assert_printed(rows, cols("k", 4) + cols("v", 4), torch.cat([k[:, head], v[:, head]], -1))
    edge_index = graphs.complete([3])
    out, weights = attention.forward_graph(x, x, x, edge_index, return_attention_weights=True)
    source, target = edge_index
    rows = _table(text, stage, "head 1: edges")
    assert [(int(r["j"]), int(r["i"])) for r in rows] == list(zip(source.tolist(), target.tolist()))
    assert [r["source"] for r in rows[:3]] == ["the", "cat", "sat"]
    assert_printed(rows, ["score"], ((q[target, 1] * k[source, 1]).sum(-1) / 2).unsqueeze(-1))
    assert_printed(rows, ["weight"], weights[:, 1:2])
    assert_printed(rows, cols("m", 4), weights[:, 1:2] * v[source, 1])
    aggregated = scatter(weights.unsqueeze(-1) * v[source], target, dim=0, reduce="sum")  # (3, 2, 4)
    assert_printed(_table(text, stage, "head 1: aggregation"), cols("h", 4) + ["Σα"],
                   torch.cat([aggregated[:, 1], torch.ones(3, 1)], -1))
    assert_printed(_table(text, stage, "output projection"), cols("o", 8), out)
    layer = model.transformer.encoder.layers[0]
    rows = _table(text, "Encoder layer 1 · norm1", "normalised output")
    normalised = layer.norm1(x + out)
    assert_printed(rows, cols("n", 8), normalised)
    assert_printed(rows, ["mean", "std"], torch.tensor([[0.0, 1.0]]).expand(3, 2))  # per token: axis -1
    hidden = F.relu(layer.linear1(normalised))  # (3, 16): printed in two parts
    assert_printed(_table(text, "Encoder layer 1 · feed-forward", "relu(...)"), cols("z", 16), hidden)


def test_printed_memory_decoder_and_output_are_the_models(demo):
    model, vocabulary, batch, _, text = demo
    memory = model.encode(batch)
    assert_printed(_table(text, "Encoder output: final norm", "normalised output"), cols("n", 8), memory)
    _, weights = model.decode(batch, memory, return_attention_weights=True)
    rows = _table(text, "Decoder layer 2 · cross-attention", "head 0: edges")
    assert [(r["source"], r["target"]) for r in rows[:4]] == [("the", "<s>"), ("cat", "<s>"), ("sat", "<s>"),
                                                              ("the", "le")]
    assert_printed(rows, ["weight"], weights[1]["cross"][:, :1])
    rows = _table(text, "Decoder layer 1 · masked self-attention", "head 1: edges")
    assert [(int(r["j"]), int(r["i"])) for r in rows] == [(0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2)]
    assert_printed(rows, ["weight"], weights[0]["self"][:, 1:])
    logits, probabilities = model(batch), model.probs(batch)
    assert_printed(_table(text, "Output: logits", "logits"), vocabulary.symbols, logits)
    assert_printed(_table(text, "Output: probabilities", "probabilities"), vocabulary.symbols, probabilities)
    top = _table(text, "Output: probabilities", "top 3")
    assert [row["word1"] for row in top] == [vocabulary.symbols[i] for i in probabilities.argmax(-1).tolist()]
    edges = _table(text, "Decoder graphs", "causal")
    assert [row["in-degree"] for row in edges] == ["1", "2", "3"]


@pytest.mark.parametrize("norm_first", [False, True])
def test_a_users_model_with_fewer_layers_shown(norm_first):
    torch.manual_seed(1)
    model = GraphTransformerModel(9, 7, d_model=8, nhead=2, num_encoder_layers=3, num_decoder_layers=1,
                                  dim_feedforward=12, norm_first=norm_first, dtype=torch.float64).train()
    batch = graphs.seq2seq_batch([torch.tensor([1, 2, 3, 4])], [torch.tensor([0, 5])])
    explanation = explain(model, batch, layers=1, digits=5)
    assert model.training  # the mode is restored; the run itself had no dropout
    model.eval()
    text = explanation.text()
    assert "encoder.summary" in [stage.key for stage in explanation.stages]
    assert ("encoder.0.self_attention.residual" in [s.key for s in explanation.stages]) == norm_first
    x = model.src_embed(batch["src"].x) + model.positional(batch["src"].position, dtype=torch.float64)
    for layer in model.transformer.encoder.layers[:2]:
        x = layer.forward_graph(x, graphs.complete([4]))
    assert_printed(_table(text, "Encoder layers 2 to 3", "output of layer 2"), cols("x", 8), x, digits=5)
    assert_printed(_table(text, "Encoder output", "normalised output"), cols("n", 8), model.encode(batch), digits=5)
    assert_printed(_table(text, "Output: logits", "logits"), [str(c) for c in range(7)], model(batch), digits=5)
    assert _table(text, "Source tokens: embedding ×", "token embeddings")[0]["token"] == "1"  # ids without vocabulary


def test_a_batch_of_pairs_is_explained_pair_by_pair():
    model, vocabulary = demo_model()
    ids = [torch.tensor(vocabulary.encode(words)) for words in (["the", "cat"], ["a", "dog", "sat"],
                                                                  ["<s>", "le", "chat"], ["<s>", "le", "chien"])]
    pairs = graphs.seq2seq_batch(ids[:2], ids[2:])
    explanation = explain(model, pairs, vocabulary=vocabulary)
    assert explanation.heading.endswith("on 'the cat' -> '<s> le chat'; 'a dog sat' -> '<s> le chien'")
    text = explanation.text()
    assert [row["in-degree"] for row in _table(text, "Encoder graph", "complete")] == ["2", "2", "3", "3", "3"]
    assert_printed(_table(text, "Output: logits", "logits"), vocabulary.symbols, model(pairs))


@pytest.mark.parametrize("model_class, graph", [(GraphDecoderModel, "causal"), (GraphEncoderModel, "complete")])
def test_single_stack_models(model_class, graph):
    torch.manual_seed(0)
    model = model_class(5, d_model=8, nhead=2, num_layers=1, dim_feedforward=16).eval()
    data = graphs.sequence_data(torch.tensor([2, 3, 4]), graph)
    vocabulary = Vocabulary(["a", "b", "c"])
    explanation = explain(model, data, vocabulary=vocabulary)
    text = explanation.text()
    assert explanation.stages[3].key == "stack.graph"
    assert [row["in-degree"] for row in _table(text, f"graph: {graph}", graph)] == \
        (["1", "2", "3"] if graph == "causal" else ["3", "3", "3"])
    assert_printed(_table(text, "Output: logits", "logits"), vocabulary.symbols, model(data))


def test_the_stack_is_named_by_the_graph_the_model_declares():
    """explain asks the model for its graph: a pattern graph that is causal makes a decoder-only stack."""
    torch.manual_seed(0)
    window = graphs.sequence_graph("window", radius=1, causal=True)
    model = GraphSequenceModel(**paper_parts(5, d_model=8, nhead=2, num_layers=1, dim_feedforward=16),
                               graph=window).eval()
    explanation = explain(model, graphs.sequence_data(torch.tensor([2, 3, 4, 2]), model.graph))
    graph_stage = explanation.stage("stack.graph")
    assert graph_stage.title == "Decoder-only stack graph: window"
    assert "masked self-attention (window graph)" in explanation.stage("stack.0.self_attention").title
    assert [row["in-degree"] for row in _table(explanation.text(), "graph: window", "window")] == ["1", "2", "2", "2"]


def test_long_vectors_are_cut_and_said_so():
    torch.manual_seed(0)
    model = GraphEncoderModel(5, d_model=32, nhead=2, num_layers=1, dim_feedforward=32).eval()
    explanation = explain(model, graphs.sequence_data(torch.tensor([2, 3]), "complete"), max_features=6)
    table = explanation.stage("tokens.input").table("x = e + PE")
    assert table.columns == ["i", "token", *cols("x", 6), "…"] and "first 6" in table.note
    assert "(vectors of more than 6 features show the first 6" in explanation.text()


class _Checker(html.parser.HTMLParser):
    """Checks that tags nest and close, and keeps the text of every table cell."""

    VOID = {"meta", "br"}

    def __init__(self):
        super().__init__()
        self.open, self.cells, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"</{tag}> does not close the open tag"

    def handle_data(self, data):
        if self.open and self.open[-1] in ("td", "th"):
            self.cells.append(data)


def test_html_page_is_well_formed_self_contained_and_shows_the_same_numbers(demo, tmp_path):
    *_, explanation, text = demo
    page = explanation.save_html(tmp_path / "explain.html").read_text(encoding="utf-8")
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.open == []
    names = {tag for tag, _ in checker.tags}
    assert "script" not in names and "link" not in names and "img" not in names
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert "<s>" not in page.split("<body>")[1] and "&lt;s&gt;" in page  # labels are escaped
    assert len([tag for tag, _ in checker.tags if tag == "section"]) == len(explanation.stages)
    logits = _table(text, "Output: logits", "logits")
    assert all(row[column] in checker.cells for row in logits for column in row)
    assert explanation._repr_html_().startswith('<div class="gt-explain">')


def test_cli_prints_and_writes_html(tmp_path, capsys):
    path = tmp_path / "page.html"
    assert main(["explain", "--html", str(path), "--digits", "2", "--source", "a dog sat", "--layers", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("GraphTransformerModel (d_model 8, 2 heads, 2+2 layers) on 'a dog sat' -> '<s> le chat'")
    assert "Encoder layers 2 to 2 (outputs only)" in out and f"wrote {path}" in out
    model, vocabulary = demo_model()
    batch = demo_batch(vocabulary, ["a", "dog", "sat"])
    assert_printed(_table(out, "Output: probabilities", "probabilities"), vocabulary.symbols, model.probs(batch),
                   digits=2)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_cli_explains_a_trained_checkpoint(tmp_path, capsys):
    pytest.importorskip("safetensors")
    from gnn_transformer.tasks import get_task
    from gnn_transformer.tasks.runs import build_model
    from gnn_transformer.tasks.runs import load_run
    from gnn_transformer.training.checkpoint import save_checkpoint

    torch.manual_seed(3)
    hp = dict(d_model=8, nhead=2, num_layers=1, dim_feedforward=16, dropout=0.0)
    model = build_model("seq2seq", (12, 12), hp).eval()
    config = {"task": "copy", "kind": "seq2seq", "vocab_sizes": [12, 12], "model": hp}
    save_checkpoint(tmp_path / "checkpoints", model=model, optimizer=None, step=1, config=config)
    main(["explain", "--checkpoint", str(tmp_path), "--source", "3 1 4", "--target", "<s> 3 1", "--digits", "4"])
    out = capsys.readouterr().out
    vocabulary = get_task("copy").tgt_vocab
    batch = graphs.seq2seq_batch([torch.tensor(vocabulary.encode(["3", "1", "4"]))],
                                 [torch.tensor(vocabulary.encode(["<s>", "3", "1"]))])
    assert_printed(_table(out, "Output: logits", "logits"), vocabulary.symbols, model(batch), digits=4)
    with pytest.raises(SystemExit, match="holds no checkpoint"):
        main(["explain", "--checkpoint", str(tmp_path / "nothing")])
    main(["explain", "--checkpoint", str(tmp_path)])  # a held-out sentence, fed <s>
    held_out = " ".join(vocabulary.decode(load_run(tmp_path).held_out_example()))
    assert capsys.readouterr().out.splitlines()[0].endswith(f"on '{held_out}' -> '<s>'")


def test_cli_explains_a_character_model_on_its_window_graph(charlm_run, capsys):
    from gnn_transformer.tasks.runs import load_run
    from gnn_transformer.tasks.text import visible_vocabulary

    main(["explain", "--checkpoint", str(charlm_run), "--source", "Lists are", "--layers", "1", "--digits", "4"])
    out = capsys.readouterr().out
    run = load_run(charlm_run)
    data = run.language_model_data("Lists are")
    assert out.splitlines()[0] == "GraphDecoderModel (d_model 8, 2 heads, 2 layers) on 'L i s t s \u2423 a r e'"
    graph = _section(out, "stack graph")
    assert graph[0].startswith("4. Decoder-only stack graph: sparse causal graph")
    assert "30 edges where the causal graph has 45; each token receives 1 to 4 edges, none from a later" \
        in " ".join(" ".join(graph).split())
    symbols = visible_vocabulary(run.vocabulary).symbols
    assert_printed(_table(out, "Output: logits", "logits"), symbols[:16], run.model(data)[:, :16], digits=4)
    with pytest.raises(SystemExit, match="a charlm model reads one text: give it with --source, without --target"):
        main(["explain", "--checkpoint", str(charlm_run), "--target", "<s>"])
    with pytest.raises(SystemExit, match="characters not in the model's vocabulary"):
        main(["explain", "--checkpoint", str(charlm_run), "--source", "caf\u00e9"])


@pytest.mark.parametrize("argv, message", [
    (["--source", "the zebra sat"], r"--source has words not in the vocabulary: \['zebra'\]; the vocabulary: <s> </s> the"),
    (["--target", "<s> le zorro"], r"--target has words not in the vocabulary: \['zorro'\]"),
    (["--source", "  "], "--source needs at least one word"),
    (["--digits", "0"], "digits must be an integer from 1 to 8, got 0"),
    (["--d-model", "10", "--nhead", "4"], r"--d-model \(10\) must be divisible by --nhead \(4\)"),
])
def test_cli_bad_input_is_named(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(["explain", *argv])


def test_bad_python_input_is_named():
    model, vocabulary = demo_model()
    batch = demo_batch(vocabulary)
    with pytest.raises(TypeError, match="explain needs a model implementing gnn_transformer.core.interface "
                                        r"\(attention_sites\); this Linear lacks attention_sites"):
        explain(torch.nn.Linear(2, 2), batch)
    with pytest.raises(ValueError, match="source, token_types go with hf="):
        explain(model, batch, source="the cat", token_types=[0, 0])
    with pytest.raises(TypeError, match="seq2seq batch"):
        explain(model, graphs.sequence_data(torch.tensor([2, 3]), "complete"))
    decoder = GraphDecoderModel(5, d_model=8, nhead=2, num_layers=1, dim_feedforward=8)
    with pytest.raises(TypeError, match="Data with x, position and edge_index"):
        explain(decoder, batch)
    with pytest.raises(ValueError, match="give a batch for this model"):
        explain(decoder)
    with pytest.raises(ValueError, match="digits must be an integer from 1 to 8, got 2.5"):
        explain(digits=2.5)
    with pytest.raises(ValueError, match="the model predicts 13 classes but the vocabulary has 5 symbols"):
        explain(model, batch, vocabulary=Vocabulary(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"the source tokens hold ids \[\d+(, \d+)*\] but the source vocabulary has only 3"):
        explain(model, batch, vocabulary=(Vocabulary(["x"]), vocabulary))
    with pytest.raises(TypeError, match="vocabulary must be a Vocabulary"):
        explain(model, batch, vocabulary=["the", "cat"])


def test_a_variant_with_relative_biases_is_explained_edge_by_edge():
    """A GraphVariantModel (T5 buckets, RMSNorm, SwiGLU) through the interface: no absolute positions among its
    inputs, every self-attention edge shows the bias the model adds to its score."""
    from gnn_transformer.analysis.recording import record
    from gnn_transformer.variants import GraphVariantModel

    torch.manual_seed(0)
    model = GraphVariantModel(9, 8, 2, num_layers=2, dim_feedforward=16, dropout=0.0, positions="t5", norm="rms",
                              feed_forward="swiglu", bidirectional=False, graph=graphs.causal,
                              dtype=torch.float64).eval()
    data = graphs.sequence_data(torch.tensor([2, 3, 4, 5]), "causal")
    explanation = explain(model, data, digits=6)
    keys = [stage.key for stage in explanation.stages]
    assert keys[:3] == ["tokens.embedding", "tokens.input", "stack.graph"] and "tokens.positional" not in keys
    assert explanation.heading == "GraphVariantModel (d_model 8, 2 heads, 2 layers) on '2 3 4 5'"
    with record(model) as recording, torch.no_grad():
        logits = model(data)
    text = explanation.text()
    for layer in (0, 1):
        entry = recording.attention_of("decoder self", layer)
        rows = _table(text, f"Decoder-only stack layer {layer + 1} · masked self-attention", "head 1: edges")
        assert [[int(r["j"]), int(r["i"])] for r in rows] == entry.edge_index.t().tolist()
        assert_printed(rows, ["bias", "score", "weight"],
                       torch.stack([entry.edge_bias[:, 1], entry.scores[:, 1], entry.weights[:, 1]], -1), digits=6)
    assert len(set(_values(rows, ["bias"]).flatten().tolist())) > 1  # the buckets differ
    assert_printed(_table(text, "Output: logits", "logits"), [str(c) for c in range(9)], logits, digits=6)
