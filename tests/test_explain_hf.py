"""explain on the Hugging Face imports (GPT-2, BERT, BART, T5) saved with save_pretrained: every number it
shows is the original's (attention weights, T5's relative biases, token types, logits)."""
import pytest
import torch

from gnn_transformer.cli import main
from gnn_transformer.convert.hf import from_hf
from gnn_transformer.convert.hf.parity import small_model
from gnn_transformer.explain import explain

pytest.importorskip("transformers")

SOURCE = [5, 17, 3, 9]
TARGET = [4, 8]  # after the start token
KEYS = {  # the stages of the inputs and graphs, and of layer 1's attention, in order
    "gpt2": ["tokens.embedding", "tokens.positional", "tokens.input", "stack.graph", "stack.0.self_attention"],
    "bert": ["tokens.embedding", "tokens.positional", "tokens.token_type", "tokens.input", "stack.graph",
             "stack.0.self_attention"],
    "bart": ["source.embedding", "source.positional", "source.input", "encoder.graph", "encoder.0.self_attention",
             "target.embedding", "target.positional", "target.input", "decoder.graph", "decoder.0.self_attention",
             "decoder.0.cross_attention"],
    "t5": ["source.embedding", "source.input", "encoder.graph", "encoder.0.self_attention", "target.embedding",
           "target.input", "decoder.graph", "decoder.0.self_attention", "decoder.0.cross_attention"],
}
# stage of each kind of attention -> the original's output_attentions field
ATTENTIONS = {"stack.0.self_attention": "attentions", "encoder.0.self_attention": "encoder_attentions",
              "decoder.0.self_attention": "decoder_attentions", "decoder.0.cross_attention": "cross_attentions"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(arch -> save_pretrained folder, arch -> the original with eager attention, which returns its weights)."""
    folders, originals = {}, {}
    for arch in KEYS:
        model = small_model(arch, attn_implementation="eager")
        folders[arch] = tmp_path_factory.mktemp(arch)
        model.save_pretrained(folders[arch])
        originals[arch] = model
    return folders, originals


def _original_call(model, types=None):
    call = {"input_ids": torch.tensor([SOURCE]), "output_attentions": True}
    if model.config.is_encoder_decoder:
        call["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id, *TARGET]])
    if types is not None:
        call["token_type_ids"] = torch.tensor([types])
    with torch.no_grad():
        return model(**call)


def _values(table, columns) -> torch.Tensor:
    return torch.tensor([[float(row[table.columns.index(c)]) for c in columns] for row in table.rows],
                        dtype=torch.float64)


def _close(shown: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    expected = expected.detach().double()
    assert shown.shape == expected.shape
    error = (shown - expected).abs().max().item()
    assert error <= tol * max(1.0, expected.abs().max().item()), f"shown values differ from the original's by {error}"


@pytest.mark.parametrize("arch", list(KEYS))
def test_every_architecture_is_explained_with_the_originals_numbers(saved, arch):
    folders, originals = saved
    original = originals[arch]
    explanation = explain(hf=folders[arch], source=" ".join(map(str, SOURCE)),
                          target=" ".join(map(str, TARGET)) if original.config.is_encoder_decoder else None,
                          layers=1, max_features=200)
    keys = [stage.key for stage in explanation.stages]
    assert [key for key in keys if key in KEYS[arch]] == KEYS[arch]
    assert keys[-2:] == ["output.logits", "output.probabilities"]
    out = _original_call(original)
    vocab = original.config.vocab_size
    _close(_values(explanation.stage("output.logits").table("logits"), [str(c) for c in range(vocab)]),
           out.logits[0])
    heads = original.config.num_attention_heads if arch in ("gpt2", "bert") else original.config.num_heads \
        if arch == "t5" else original.config.encoder_attention_heads
    for key, field in ATTENTIONS.items():
        if key not in KEYS[arch]:
            continue
        expected = getattr(out, field)[0][0]  # layer 1: (H, queries, keys)
        for head in range(heads):
            table = explanation.stage(key).table(f"head {head}: edges")
            j, i = (torch.tensor(table.column(c)) for c in ("j", "i"))
            _close(_values(table, ["weight"])[:, 0], expected[head, i, j])
    if arch == "t5":  # relative buckets: the bias column of every self-attention edge is the original's bias
        for key, stack in (("encoder.0.self_attention", original.encoder), ("decoder.0.self_attention",
                                                                             original.decoder)):
            table = explanation.stage(key).table("head 1: edges")
            j, i = (torch.tensor(table.column(c)) for c in ("j", "i"))
            length = int(i.max()) + 1
            bias = stack.block[0].layer[0].SelfAttention.compute_bias(length, length)[0]  # (H, queries, keys)
            _close(_values(table, ["bias"])[:, 0], bias[1, i, j])
        assert "bias" not in explanation.stage("decoder.0.cross_attention").table("head 0: edges").columns
        assert "s_ij = q_i · k_j + b_ij " in explanation.stage("encoder.0.self_attention").formula  # T5: unscaled
        assert "s_ij = q_i · k_j  " in explanation.stage("decoder.0.cross_attention").formula
        assert any("scale 1 (not 1/√d_k = 0.25" in shape for shape in explanation.stage("encoder.0.self_attention").shapes)
        assert "score bias b_ij" in explanation.stage("encoder.graph").text
    if arch == "gpt2":
        table = explanation.stage("stack.0.self_attention").table("head 0: edges")
        assert all(j <= i for j, i in zip(table.column("j"), table.column("i")))  # the causal graph
        assert explanation.stage("stack.graph").title == "Decoder-only stack graph: causal"
        assert "s_ij = q_i · k_j / √d_k " in explanation.stage("stack.0.self_attention").formula


def test_bert_token_types_are_shown_and_used(saved):
    folders, originals = saved
    original, types = originals["bert"], [0, 0, 1, 1]
    explanation = explain(hf=folders["bert"], source=SOURCE, token_types=types, max_features=64)
    rows = explanation.stage("tokens.token_type").table("token type embeddings")
    table = original.bert.embeddings.token_type_embeddings.weight[types]  # (4, 64)
    _close(_values(rows, [f"t{c}" for c in range(64)]), table)
    assert explanation.stage("stack.graph").title == "Encoder-only stack graph: complete"
    out = _original_call(original, types)
    _close(_values(explanation.stage("output.logits").table("logits"), [str(c) for c in range(64)]),
           out.logits[0, :, :64])
    without = explain(hf=folders["bert"], source=SOURCE, max_features=64)  # segment 0 everywhere: other logits
    columns = [str(c) for c in range(64)]
    assert not torch.allclose(_values(without.stage("output.logits").table("logits"), columns),
                              _values(explanation.stage("output.logits").table("logits"), columns), atol=1e-4)


def test_an_imported_object_with_a_tokenizer_and_the_command_line(saved, tmp_path, capsys):
    from tests.test_explorer_hf import _word_tokenizer

    folders, originals = saved
    folder = tmp_path / "gpt2"
    originals["gpt2"].save_pretrained(folder)
    _word_tokenizer(folder, originals["gpt2"].config.vocab_size)
    explanation = explain(hf=folder, source="w5 w17 w3")
    assert explanation.heading == "GraphGPT2LMHeadModel (d_model 64, 4 heads, 2 layers) on 'w5 w17 w3'"
    assert explanation.stage("tokens.embedding").table("token embeddings").column("token") == ["w5", "w17", "w3"]
    imported = explain(hf=from_hf(originals["gpt2"]), source=[5, 17, 3])  # an imported model object: ids
    assert imported.heading.endswith("on '5 17 3'")
    assert imported.text().split("\n", 1)[1] != ""  # the same stages ...
    assert [s.key for s in imported.stages] == [s.key for s in explanation.stages]
    html = tmp_path / "t5.html"
    assert main(["explain", "--hf", str(folders["t5"]), "--source", "4 8 15", "--target", "3", "--layers", "0",
                 "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("GraphT5ForConditionalGeneration (d_model 64, 4 heads, 2+2 layers) on '4 8 15' -> '0 3'")
    assert "bias" in html.read_text()


@pytest.mark.parametrize("call, error, message", [
    (dict(hf="missing"), FileNotFoundError, "hf missing: no such directory"),
    (dict(hf="{empty}", source="1"), FileNotFoundError, "the directory has no config.json"),
    (dict(hf="{bert}", source="1 200"), ValueError, r"source\[0\] holds token id 200, outside the model's vocabulary "
                                                    r"of 128 tokens \(ids 0..127\)"),
    (dict(hf="{t5}", source="1 2", target="7 300"), ValueError, "target.* holds token id 300"),
    (dict(hf="{gpt2}", source="the cat"), ValueError, "without a tokenizer saved beside the model, give token ids"),
    (dict(hf="{gpt2}", source="1 2", token_types=[0, 1]), ValueError,
     "token_types were given but this GraphGPT2LMHeadModel embeds no token types"),
    (dict(hf="{bert}", source="1 2", token_types=[0]), ValueError, "token_types has 1 entries for 2 source tokens"),
    (dict(hf="{gpt2}", source="1 2", target="3"), ValueError, "reads one sequence: give it as source, without a target"),
    (dict(hf="{gpt2}"), ValueError, "source is empty"),
    (dict(hf=torch.nn.Linear(2, 2), source="1"), TypeError, "explain needs a model implementing "
                                                            "gnn_transformer.core.interface"),
])
def test_bad_input_is_named(saved, tmp_path, call, error, message):
    folders, _ = saved
    if isinstance(call["hf"], str) and call["hf"].startswith("{"):
        name = call["hf"][1:-1]
        call = {**call, "hf": tmp_path if name == "empty" else folders[name]}
    with pytest.raises(error, match=message):
        explain(**call)


def test_cli_bad_input_is_named(saved, tmp_path):
    folders, _ = saved
    with pytest.raises(SystemExit, match="--hf needs --source"):
        main(["explain", "--hf", str(folders["gpt2"])])
    with pytest.raises(SystemExit, match="no config.json"):
        main(["explain", "--hf", str(tmp_path), "--source", "1"])
    with pytest.raises(SystemExit, match="--token-types '0 x': give one integer segment per token"):
        main(["explain", "--hf", str(folders["bert"]), "--source", "1 2", "--token-types", "0 x"])
    with pytest.raises(SystemExit, match="--token-types goes with --hf"):
        main(["explain", "--token-types", "0"])
