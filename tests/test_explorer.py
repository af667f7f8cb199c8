import html
import json
import re

import pytest
import torch

from gnn_transformer import GraphDecoderModel, graphs
from gnn_transformer.cli import main
from gnn_transformer.cli.graph import PATTERNS, _build
from gnn_transformer.tasks.demo import demo_batch, demo_model
from gnn_transformer.explorer import explore
from gnn_transformer.explorer.data import SIGNIFICANT_DIGITS, round_value
from gnn_transformer.explorer.sources import pattern_namespace
from gnn_transformer.analysis.recording import record
from gnn_transformer.tasks import Vocabulary
from gnn_transformer.tasks.runs import build_model
from gnn_transformer.training import load_checkpoint
from gnn_transformer.training.checkpoint import read_config

ROUNDING = 10.0 ** (1 - SIGNIFICANT_DIGITS)  # relative error of a rounded value is at most half of this


def assert_rounded(values, tensor):
    expected = tensor.double()
    got = torch.tensor(values, dtype=torch.float64)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=ROUNDING / 2, atol=1e-12)


def assert_view_is_recorded(view, entry):
    assert view["edges"] == entry.edge_index.t().tolist()
    assert view["heads"] == entry.num_heads
    assert_rounded(view["weights"], entry.weights)
    assert_rounded(view["scores"], entry.scores)


def test_round_value_keeps_six_significant_digits_and_writes_infinity_as_null():
    assert round_value(0.123456789) == 0.123457
    assert round_value(-1234.56789) == -1234.57
    assert round_value(float("-inf")) is None and round_value(float("nan")) is None


def test_demo_data_are_the_recorded_attention():
    model, vocabulary = demo_model()
    with record(model) as recording:
        model(demo_batch(vocabulary))
    data = explore().data
    assert data["tokens"] == {"source": ["the", "cat", "sat"], "target": ["<s>", "le", "chat"]}
    assert [kind["kind"] for kind in data["kinds"]] == ["encoder self", "decoder self", "cross"]
    assert [(v["kind"], v["layer"], v["keys"], v["queries"]) for v in data["views"]] == [
        ("encoder self", 0, "source", "source"), ("encoder self", 1, "source", "source"),
        ("decoder self", 0, "target", "target"), ("decoder self", 1, "target", "target"),
        ("cross", 0, "source", "target"), ("cross", 1, "source", "target")]
    for view in data["views"]:
        assert_view_is_recorded(view, recording.attention_of(view["kind"], view["layer"]))
    json.dumps(data, allow_nan=False)  # plain JSON


def test_a_single_stack_model_and_its_vocabulary():
    vocabulary = Vocabulary(["a", "b", "c"])
    model = GraphDecoderModel(len(vocabulary), d_model=8, nhead=2, num_layers=2, dim_feedforward=16).eval()
    data = graphs.sequence_data(torch.tensor(vocabulary.encode(["a", "c", "b", "b"])), "causal")
    with record(model) as recording:
        logits = model(data)
    explorer = explore(model, data, vocabulary=vocabulary)
    assert explorer.data["kinds"] == [{"kind": "decoder self", "label": "self"}]  # the model's attention_sites()
    assert explorer.data["tokens"] == {"source": ["a", "c", "b", "b"], "target": []}
    assert explorer.data["predictions"] == {"side": "source",
                                            "labels": vocabulary.decode(logits.argmax(-1).tolist(), strip_end=False)}
    for view in explorer.data["views"]:
        assert view["edges"] == graphs.causal([4]).t().tolist()
        assert_view_is_recorded(view, recording.attention_of("decoder self", view["layer"]))
    assert explore(model, data, labels=["w", "x", "y", "z"]).data["tokens"]["source"] == ["w", "x", "y", "z"]


def _pattern_options(name, tmp_path):
    if name != "edgelist":
        return {"n": 7} if name not in ("rows", "columns", "grid-window") else {"height": 3, "width": 3,
                                                                               "text_length": 1}
    path = tmp_path / "graph.txt"
    path.write_text("0 1\n1 2\n2 3\n3 0\n")
    return {"file": str(path)}


@pytest.mark.parametrize("name", PATTERNS)
def test_every_pattern_page_has_exactly_the_patterns_edges(name, tmp_path):
    options = _pattern_options(name, tmp_path)
    pattern = _build(pattern_namespace(name, **options))
    data = explore(pattern=name, pattern_options=options).data
    assert len(data["tokens"]["source"]) == pattern.num_nodes
    assert data["tokens"]["source"][:2] == ["t0", "t1"]
    expected = sorted(map(tuple, pattern.edge_index.t().tolist()))
    assert [v["layer"] for v in data["views"]] == [0, 1]
    for view in data["views"]:
        assert sorted(map(tuple, view["edges"])) == expected
    assert data["layout"] == (pattern.layout if pattern.layout in ("grid", "circle") else "line")
    assert data["center"] == list(pattern.center)  # the star's relay node, drawn in the middle


def test_the_page_is_self_contained_and_its_data_round_trips():
    explorer = explore(source=["the", "cat"], target=["<s>", "le"])
    page = explorer.html()
    assert page.startswith("<!DOCTYPE html>") and "{{" not in page
    # the one http URL is the SVG namespace, a name the script passes to createElementNS (never fetched)
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) == {"http://www.w3.org/2000/svg"}
    assert not re.search(r"<(link|img|iframe)\b|\s(src|href)\s*=|@import|url\((?!#)", page)
    blob = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(blob) == explorer.data


def test_labels_cannot_end_the_data_script():
    model, vocabulary = demo_model()
    explorer = explore(model, demo_batch(vocabulary), labels=None, vocabulary=vocabulary,
                       title="</script><script>alert(1)</script> & more")
    page = explorer.html()
    assert "<script>alert(1)" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page  # the <title> and heading
    blob = re.search(r'id="explorer-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(blob)["title"] == "</script><script>alert(1)</script> & more"


def test_jupyter_shows_the_page_in_an_isolated_iframe():
    explorer = explore()
    shown = explorer._repr_html_()
    match = re.fullmatch(r'<iframe srcdoc="([^"]*)" sandbox="allow-scripts" style="[^"]*"></iframe>', shown)
    assert match is not None
    assert html.unescape(match.group(1)) == explorer.html()
    assert "Explorer('demo model" in repr(explorer)


def test_save_writes_the_page_and_refuses_folders_and_other_suffixes(tmp_path):
    explorer = explore()
    path = explorer.save(tmp_path / "new" / "page.html")
    assert path.read_text(encoding="utf-8") == explorer.html()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        explorer.save(tmp_path)
    with pytest.raises(ValueError, match="must end in .html"):
        explorer.save(tmp_path / "page.png")


class NoAttention(torch.nn.Module):
    def forward(self, data):
        return data.x.float()[:, None]  # (N, 1)


@pytest.mark.parametrize("call, error, message", [
    (lambda: explore(pattern="nope"), ValueError, "unknown pattern 'nope'; choose from complete"),
    (lambda: explore(pattern="window", pattern_options={"radius": 1, "wings": 2}), TypeError,
     r"unknown pattern options \['wings'\]"),
    (lambda: explore(pattern="edgelist"), ValueError, "--file"),
    (lambda: explore(source=["the", "dogg"]), ValueError, r"source words not in the model's vocabulary: \['dogg'\]"),
    (lambda: explore(torch.nn.Linear(2, 2)), ValueError, "give model and batch together"),
    (lambda: explore(pattern_options={"n": 3}), ValueError, "without a pattern"),
    (lambda: explore(pattern="window", checkpoint="x"), ValueError, "not pattern and checkpoint"),
    (lambda: explore(checkpoint="/nonexistent/run"), FileNotFoundError, "holds no checkpoint .there is no such folder"),
    (lambda: explore(NoAttention(), graphs.sequence_data(torch.tensor([0, 1]))), ValueError,
     "ran no graph attention"),
])
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2-step translate run: checkpoints written by the trainer itself."""
    out = tmp_path_factory.mktemp("translate")
    assert main(["train", "translate", "--d-model", "16", "--nhead", "2", "--num-layers", "1",
                 "--dim-feedforward", "32", "--no-progress", "--threads", "1", "--steps", "2", "--num-train", "50",
                 "--num-test", "5", "--batch-size", "8", "--no-plot", "--out", str(out)]) == 0
    return out


def test_a_trained_checkpoint_shows_its_greedy_translation_and_its_attention(trained_run):
    data = explore(checkpoint=trained_run).data
    assert data["title"].startswith("translate after 2 training steps: the ")
    source, target = data["tokens"]["source"], data["tokens"]["target"]
    assert len(source) >= 5 and target[0] == "<s>"
    # fed its own greedy translation, the model predicts at each position the next word it was fed
    assert data["predictions"]["labels"][:-1] == target[1:]
    config = read_config(trained_run / "checkpoints" / "step-00000002")
    model = build_model("seq2seq", tuple(config["vocab_sizes"]), config["model"])
    load_checkpoint(trained_run / "checkpoints", model=model, restore_rng=False)
    from gnn_transformer.tasks import get_task

    task = get_task("translate")
    batch = graphs.seq2seq_batch([torch.tensor(task.src_vocab.encode(source))],
                                 [torch.tensor(task.tgt_vocab.encode(target))])
    with record(model.eval()) as recording:
        model(batch)
    for view in data["views"]:
        assert_view_is_recorded(view, recording.attention_of(view["kind"], view["layer"]))


def test_a_checkpoint_with_chosen_words_and_its_errors(trained_run, tmp_path):
    data = explore(checkpoint=trained_run / "checkpoints", source=["the", "cat", "saw", "the", "dog"],
                   target=["<s>", "lo", "kato"]).data
    assert data["tokens"] == {"source": ["the", "cat", "saw", "the", "dog"], "target": ["<s>", "lo", "kato"]}
    with pytest.raises(ValueError, match=r"target words not in the model's vocabulary: \['katoo'\]"):
        explore(checkpoint=trained_run, target=["katoo"])
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        explore(checkpoint=tmp_path)
    step = trained_run / "checkpoints" / "step-00000002"
    decoder = tmp_path / "decoder"
    decoder.mkdir()
    for name in ("model.safetensors", "state.json"):
        (decoder / name).write_bytes((step / name).read_bytes())
    (decoder / "config.json").write_text(json.dumps({**read_config(step), "kind": "decoder", "task": "charlm"}))
    with pytest.raises(ValueError, match="saved without its attention window"):
        explore(checkpoint=decoder)


def test_cli_writes_pages(tmp_path, capsys, trained_run):
    assert main(["explore", "--out", str(tmp_path / "demo.html")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "demo.html").stat().st_size > 10_000
    assert main(["explore", "--pattern", "window", "--n", "5", "--radius", "1", "--out", str(tmp_path / "w.html")]) == 0
    page = (tmp_path / "w.html").read_text(encoding="utf-8")
    blob = json.loads(re.search(r'id="explorer-data">(.*?)</script>', page, re.S).group(1))
    from gnn_transformer.graphs.patterns import sliding_window

    assert blob["views"][0]["edges"] == sliding_window([5], 1).t().tolist()
    assert main(["explore", "--checkpoint", str(trained_run), "--out", str(tmp_path / "t.html")]) == 0
    assert "translate after 2 training steps" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--pattern", "nope"], "argument --pattern: invalid choice: 'nope'"),
    (["--checkpoint", "/nonexistent/run"], "argument --checkpoint: no folder '/nonexistent/run'"),
    (["--source", "the dogg"], "source words not in the model's vocabulary"),
    (["--pattern", "window", "--source", "the"], "--source/--target name words of a model"),
    (["--out", "page.txt"], "argument --out: the page must end in .html"),
])
def test_cli_names_bad_input(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["explore", "--out", str(tmp_path / "p.html"), *argv])
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_cli_refuses_a_folder_as_out(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["explore", "--out", str(tmp_path)])
    assert exit.value.code == 2 and "is a folder" in capsys.readouterr().err



def test_a_character_model_is_shown_on_its_window_graph(charlm_run):
    from gnn_transformer.tasks.runs import load_run

    data = explore(checkpoint=charlm_run).data
    text = "".join(" " if c == "\u2423" else c for c in data["tokens"]["source"])
    assert data["title"] == f"charlm after 3 training steps (attention window 4): {text!r}"
    assert len(text) == 40 and text[0].isupper() and data["tokens"]["target"] == []
    run = load_run(charlm_run)
    with record(run.model) as recording:
        run.model(run.language_model_data(text))
    for view in data["views"]:
        assert_view_is_recorded(view, recording.attention_of("decoder self", view["layer"]))
        assert view["edges"] == graphs.causal([40], 4).t().tolist()  # each character sees the last 4
    chosen = explore(checkpoint=charlm_run, source="def f(x):").data
    assert chosen["tokens"]["source"] == ["d", "e", "f", "\u2423", "f", "(", "x", ")", ":"]
    with pytest.raises(ValueError, match="decoder-only model reads one text"):
        explore(checkpoint=charlm_run, source="abc", target="<s>")
    with pytest.raises(ValueError, match="characters not in the model's vocabulary: \\['\u00e9'\\]"):
        explore(checkpoint=charlm_run, source="caf\u00e9")


def test_a_variant_with_alibi_shows_its_biases_as_edge_features():
    from gnn_transformer.variants import GraphVariantModel

    torch.manual_seed(0)
    model = GraphVariantModel(9, 8, 2, num_layers=2, dim_feedforward=16, dropout=0.0, positions="alibi",
                              graph=graphs.causal).eval()
    data = graphs.sequence_data(torch.tensor([2, 3, 4, 5]), "causal")
    views = explore(model, data).data["views"]
    with record(model) as recording, torch.no_grad():
        model(data)
    assert [(view["kind"], view["layer"]) for view in views] == [("decoder self", 0), ("decoder self", 1)]
    for view in views:
        entry = recording.attention_of(view["kind"], view["layer"])
        assert_view_is_recorded(view, entry)
        assert_rounded(view["biases"], entry.edge_bias.expand_as(entry.scores))  # (num_edges, H): per head slopes
        assert any(bias != 0 for row in view["biases"] for bias in row)  # edges from earlier tokens
