"""The explorer of Hugging Face models saved with save_pretrained: BERT, GPT-2, BART, T5 as token graphs."""
import json

import pytest
import torch

from gnn_transformer.analysis.recording import record
from gnn_transformer.cli import main
from gnn_transformer.convert.hf import from_hf
from gnn_transformer.convert.hf.parity import small_model
from gnn_transformer.explorer import explore
from tests.test_explorer_browser import ROUNDING, Opened, expected_edges

pytest.importorskip("transformers")

EXPECTED_KINDS = {"gpt2": ["decoder self"], "bert": ["encoder self"],
                  "bart": ["encoder self", "decoder self", "cross"], "t5": ["encoder self", "decoder self", "cross"]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(architecture -> save_pretrained folder, and the originals) for the four architectures."""
    folders, originals = {}, {}
    for arch in EXPECTED_KINDS:
        model = small_model(arch)
        folder = tmp_path_factory.mktemp(arch)
        model.save_pretrained(folder)
        folders[arch], originals[arch] = folder, model
    return folders, originals


def _word_tokenizer(folder, vocab_size):
    """A word-level tokenizer of words w0 .. w{V-1}, built locally and saved beside the model."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="w0").save_pretrained(folder)


@pytest.mark.parametrize("arch", list(EXPECTED_KINDS))
def test_every_architecture_is_explored_from_its_saved_folder(saved, arch):
    folders, originals = saved
    data = explore(hf=folders[arch], source="5 17 3 9").data
    assert [kind["kind"] for kind in data["kinds"]] == EXPECTED_KINDS[arch]
    assert data["tokens"]["source"] == ["5", "17", "3", "9"]  # no tokenizer saved: token ids
    layers = originals[arch].config.num_hidden_layers if arch != "t5" else originals[arch].config.num_layers
    assert len(data["views"]) == layers * len(EXPECTED_KINDS[arch])
    # every view holds the weights the imported model computes on the same call
    graph_model = from_hf(originals[arch]).eval()
    inputs = {"input_ids": torch.tensor([[5, 17, 3, 9]])}
    if arch in ("bart", "t5"):
        target = [originals[arch].config.decoder_start_token_id] + [int(t) for t in data["tokens"]["target"][1:]]
        inputs["decoder_input_ids"] = torch.tensor([target])
    with record(graph_model) as recording, torch.no_grad():
        graph_model(**inputs)
    for view in data["views"]:
        entry = recording.attention_of(view["kind"], view["layer"])
        assert view["edges"] == entry.edge_index.t().tolist()
        assert torch.allclose(torch.tensor(view["weights"], dtype=torch.float64), entry.weights.double(), rtol=1e-5,
                              atol=1e-7)
    json.dumps(data, allow_nan=False)
    if arch == "t5":  # relative buckets enter the scores of both self-attentions as per-edge biases, an edge feature
        assert all(entry.edge_bias is not None for entry in recording.attention if entry.kind != "cross")
        for view in data["views"]:
            entry = recording.attention_of(view["kind"], view["layer"])
            if view["kind"] == "cross":
                assert "biases" not in view
            else:
                assert torch.allclose(torch.tensor(view["biases"], dtype=torch.float64), entry.edge_bias.double(),
                                      rtol=1e-5, atol=1e-7)
    else:
        assert all("biases" not in view for view in data["views"])
    if arch == "gpt2":
        assert all(j <= i for view in data["views"] for j, i in view["edges"])  # the causal graph


def test_a_saved_tokenizer_labels_the_tokens_and_the_command_line_writes_the_page(saved, tmp_path):
    folders, originals = saved
    folder = tmp_path / "gpt2"
    originals["gpt2"].save_pretrained(folder)
    _word_tokenizer(folder, originals["gpt2"].config.vocab_size)
    data = explore(hf=folder, source="w5 w17 w3").data
    assert data["tokens"]["source"] == ["w5", "w17", "w3"]
    assert all(label.startswith("w") for label in data["predictions"]["labels"])
    out = tmp_path / "page.html"
    assert main(["explore", "--hf", str(folders["t5"]), "--source", "4 8 15", "--out", str(out)]) == 0
    assert "encoder self" in out.read_text() and "cross" in out.read_text()


def test_bad_folders_and_tokens_are_named(saved, tmp_path):
    folders, _ = saved
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        explore(hf=tmp_path, source="1 2")
    with pytest.raises(ValueError, match="outside the model's vocabulary of 128"):
        explore(hf=folders["bert"], source="1 200")
    with pytest.raises(ValueError, match="give token ids separated by spaces"):
        explore(hf=folders["gpt2"], source="the cat")
    with pytest.raises(TypeError, match="explore needs a model implementing gnn_transformer.core.interface "
                                        r"\(attention_sites\); this Linear lacks attention_sites"):
        explore(hf=torch.nn.Linear(2, 2), source="1 2")
    with pytest.raises(SystemExit, match="--hf needs --source"):
        main(["explore", "--hf", str(folders["gpt2"]), "--out", str(tmp_path / "x.html")])


@pytest.mark.parametrize("arch", ["gpt2", "t5"])
def test_the_page_of_a_gpt2_and_a_t5_draws_the_recorded_weights(browser, saved, tmp_path, arch):
    """In headless Chromium: every kind and layer (and two heads) of the page draws the weights recorded
    from the imported model, edge by edge."""
    folders, originals = saved
    explorer = explore(hf=folders[arch], source="5 17 3 9")
    path = explorer.save(tmp_path / f"{arch}.html")
    graph_model = from_hf(originals[arch]).eval()
    inputs = {"input_ids": torch.tensor([[5, 17, 3, 9]])}
    if arch == "t5":
        inputs["decoder_input_ids"] = torch.tensor([[0] + [int(t) for t in explorer.data["tokens"]["target"][1:]]])
    with record(graph_model) as recording, torch.no_grad():
        graph_model(**inputs)
    opened = Opened(browser, path)
    try:
        assert opened.errors == [] and opened.refused == []
        for kind in EXPECTED_KINDS[arch]:
            for layer in range(2):
                for head in (0, 3):
                    opened.choose(kind, layer, head)
                    entry = recording.attention_of(kind, layer)
                    expected = expected_edges(entry, head)
                    drawn = {(e["source"], e["target"]): e["weight"] for e in opened.drawn_edges()}
                    assert set(drawn) == set(expected)
                    for edge, weight in drawn.items():
                        assert abs(weight - expected[edge][0]) <= ROUNDING * abs(expected[edge][0]) + 1e-12
                    biases = _drawn_biases(opened)
                    if entry.edge_bias is None:  # GPT-2, and T5's cross-attention: no edge feature drawn
                        assert biases == {} and "score bias" not in opened.page.inner_text("#graph-legend")
                        continue
                    recorded = {(j, i): float(b) for (j, i), b in zip(entry.edge_index.t().tolist(),
                                                                      entry.edge_bias[:, head])}
                    assert set(biases) == set(recorded) and len(set(recorded.values())) > 1  # buckets differ
                    for edge, bias in biases.items():
                        assert abs(bias - recorded[edge]) <= ROUNDING * abs(recorded[edge]) + 1e-12
                    assert "score bias b_ij" in opened.page.inner_text("#graph-legend")
        if arch == "t5":  # hovering an edge of the encoder shows its bias beside its score and weight
            opened.choose("encoder self", 0, 1)
            page = opened.page
            x, y = page.eval_on_selector_all("#graph .edge-hit", """hits => {  // the middle of the top edge
                const hit = hits[hits.length - 1], m = hit.getScreenCTM();
                const p = hit.getPointAtLength(hit.getTotalLength() / 2);
                return [p.x * m.a + p.y * m.c + m.e, p.x * m.b + p.y * m.d + m.f]; }""")
            page.mouse.move(x, y)
            source, target = page.evaluate("([x, y]) => { const e = document.elementFromPoint(x, y); "
                                           "return [+e.dataset.source, +e.dataset.target]; }", [x, y])
            entry = recording.attention_of("encoder self", 0)
            index = entry.edge_index.t().tolist().index([source, target])
            shown = float(opened.page.inner_text("#tooltip .tip-bias"))
            assert shown == pytest.approx(float(entry.edge_bias[index, 1]), abs=6e-5)
    finally:
        opened.page.close()


def _drawn_biases(opened) -> dict:
    return {(e["source"], e["target"]): e["bias"] for e in opened.page.eval_on_selector_all(
        "#graph .edge[data-bias]", "paths => paths.map(p => ({source: +p.dataset.source, target: +p.dataset.target, "
                                   "bias: +p.dataset.bias}))")}
