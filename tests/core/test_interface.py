"""The one model interface: every model names its attention sites, records them and (decoders) decodes;
the tools ask it, never a model's class."""
import ast
from pathlib import Path

import pytest
import torch
from torch import nn
from torch_geometric.utils import scatter

import gnn_transformer
from gnn_transformer import GraphDecoderModel, GraphEncoderModel, GraphTransformerModel, graphs
from gnn_transformer.analysis.recording import record
from gnn_transformer.core.interface import ATTENTION_KINDS, GraphModelInterface, require_interface
from gnn_transformer.generation import generate
from gnn_transformer.variants import GraphVariantModel

SMALL = dict(d_model=16, nhead=4, dim_feedforward=32, dropout=0.0, dtype=torch.float64)
PACKAGE = Path(gnn_transformer.__file__).parent
MODEL_CLASSES = {"GraphTransformerModel", "GraphSequenceModel", "GraphEncoderModel", "GraphDecoderModel",
                 "GraphVariantModel", "HFGraphModel", "Seq2SeqGraphModel", "GraphGPT2LMHeadModel",
                 "GraphBertForMaskedLM", "GraphBartForConditionalGeneration", "GraphT5ForConditionalGeneration"}


def _own_models():
    """(name, model, a forward call, expected kinds) of the library's own models."""
    src, tgt = [torch.tensor([3, 4, 5]), torch.tensor([6])], [torch.tensor([0, 7]), torch.tensor([0, 8, 9])]
    tokens = torch.tensor([3, 4, 5, 6])
    paper = GraphTransformerModel(11, num_encoder_layers=2, num_decoder_layers=1, **SMALL).eval()
    decoder = GraphDecoderModel(11, num_layers=2, **SMALL).eval()
    encoder = GraphEncoderModel(11, num_layers=2, **SMALL).eval()
    variant = GraphVariantModel(11, 16, 4, num_layers=2, dim_feedforward=32, dropout=0.0, positions="t5",
                                bidirectional=False, dtype=torch.float64, graph=graphs.causal).eval()
    return [
        ("paper", paper, lambda m: m(graphs.seq2seq_batch(src, tgt)), {"encoder self": 2, "decoder self": 1, "cross": 1}),
        ("decoder", decoder, lambda m: m(graphs.sequence_data(tokens, "causal")), {"decoder self": 2}),
        ("encoder", encoder, lambda m: m(graphs.sequence_data(tokens, "complete")), {"encoder self": 2}),
        ("variant", variant, lambda m: m(graphs.sequence_data(tokens, "causal")), {"decoder self": 2}),
    ]


def _hf_models():
    pytest.importorskip("transformers")
    from gnn_transformer.convert.hf import from_hf
    from gnn_transformer.convert.hf.parity import padded_batch, small_model

    out = []
    for arch, kinds in [("gpt2", {"decoder self": 2}), ("bert", {"encoder self": 2}),
                        ("bart", {"encoder self": 2, "decoder self": 2, "cross": 2}),
                        ("t5", {"encoder self": 2, "decoder self": 2, "cross": 2})]:
        hf = small_model(arch).double()
        inputs, _ = padded_batch(arch, hf)
        out.append((arch, from_hf(hf), lambda m, inputs=inputs: m(**inputs), kinds))
    return out


def _all_models():
    return _own_models() + _hf_models()


def test_every_model_implements_the_interface_and_names_its_attention_sites():
    for name, model, _, kinds in _all_models():
        assert isinstance(model, GraphModelInterface), name
        sites = model.attention_sites()
        counted = {kind: sum(site.kind == kind for site in sites) for kind in ATTENTION_KINDS}
        assert {k: v for k, v in counted.items() if v} == kinds, name
        for site in sites:
            assert model.get_submodule(site.name) is site.module


def test_record_covers_every_attention_of_every_model():
    """Each site's call is recorded with its kind and layer, per-edge tensors whose weights are the softmax
    of the scores (biases included) over each target's incoming edges, and messages summing to the aggregation."""
    for name, model, call, kinds in _all_models():
        with record(model) as recording, torch.no_grad():
            call(model)
        seen = {(entry.kind, entry.layer) for entry in recording.attention}
        assert seen == {(site.kind, site.layer) for site in model.attention_sites()}, name
        for entry in recording.attention:
            target = entry.edge_index[1]
            expected = torch.exp(entry.scores - scatter(entry.scores, target, 0, dim_size=entry.query.size(0),
                                                        reduce="max")[target])
            expected = expected / scatter(expected, target, 0, dim_size=entry.query.size(0), reduce="sum")[target]
            assert torch.allclose(entry.weights, expected, atol=1e-12), (name, entry.name)
            summed = scatter(entry.messages, target, 0, dim_size=entry.query.size(0), reduce="sum")
            assert torch.allclose(summed, entry.aggregated, atol=1e-12), (name, entry.name)
        if name == "t5":  # relative buckets are per-edge biases of the self-attentions, none on cross edges
            assert all((entry.edge_bias is not None) == (entry.kind != "cross") for entry in recording.attention)


def test_a_model_without_the_interface_is_refused_by_name():
    with pytest.raises(TypeError, match="lacks begin_decoding, decode_step"):
        generate(nn.Linear(3, 3), [torch.tensor([1, 2])], max_new_tokens=2)
    with pytest.raises(TypeError, match="lacks attention_sites"):
        require_interface(nn.Linear(3, 3), ("attention_sites",), "recording")


def test_an_encoder_cannot_decode_and_says_why():
    encoder = GraphEncoderModel(11, num_layers=1, **SMALL).eval()
    with pytest.raises(ValueError, match="attends over complete, not a causal graph"):
        generate(encoder, [torch.tensor([1, 2])], max_new_tokens=2)
    bert = [m for name, m, _, _ in _hf_models() if name == "bert"][0]
    with pytest.raises(ValueError, match="complete graph .*cannot decode"):
        generate(bert.eval(), [torch.tensor([1, 2])], max_new_tokens=2)


def _names_used(path: Path) -> set[str]:
    """Every identifier the code of a module uses (names, attributes, imports); docstrings and comments aside."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.name.split(".")[-1] for alias in node.names)
    return names


@pytest.mark.parametrize("part", ["generation", "analysis/recording.py"])
def test_the_tools_do_not_name_model_classes(part):
    """Generation and recording ask the interface; no model class (or class tag) appears in their code."""
    root = PACKAGE / part
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    assert files
    for path in files:
        used = _names_used(path)
        assert not used & MODEL_CLASSES, (path, used & MODEL_CLASSES)
        assert "graph_for" not in used and "decodes_causally" not in used, path


def test_the_grep_test_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from gnn_transformer import GraphTransformerModel\nisinstance(m, GraphTransformerModel)\n")
    assert _names_used(bad) & MODEL_CLASSES == {"GraphTransformerModel"}


def test_token_ids_outside_the_vocabulary_and_bad_decoder_settings_are_named():
    paper = GraphTransformerModel(11, 9, num_encoder_layers=1, num_decoder_layers=1, **SMALL).eval()
    decoder = GraphDecoderModel(11, num_layers=1, **SMALL).eval()
    with pytest.raises(ValueError, match=r"sources\[1\] holds token id 11, outside the model's vocabulary of 11"):
        generate(paper, [torch.tensor([1]), torch.tensor([2, 11])], bos=0, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"bos\[0\] holds token id 9, outside .* of 9 tokens"):
        generate(paper, [torch.tensor([1])], bos=9, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"prompts\[0\] holds token id -1"):
        generate(decoder, [torch.tensor([-1, 2])], max_new_tokens=2)
    for strategy in ("greedy", "beam", "sample"):
        with pytest.raises(ValueError, match=r"eos must be a token id of the model's vocabulary \(0..10\)"):
            generate(decoder, [torch.tensor([1, 2])], strategy=strategy, eos=11, max_new_tokens=2)
    with pytest.raises(ValueError, match="attention_window applies to decoder-only models"):
        generate(paper, [torch.tensor([1])], bos=0, max_new_tokens=2, attention_window=2)
    with pytest.raises(ValueError, match="early_stopping must be True, False or 'never'"):
        generate(decoder, [torch.tensor([1, 2])], strategy="beam", beam_scoring="hf", early_stopping="soon",
                 max_new_tokens=2)
    for hf_name in ("gpt2", "t5"):
        model = [m for name, m, _, _ in _hf_models() if name == hf_name][0].eval()
        with pytest.raises(ValueError, match="holds token id 128, outside the model's vocabulary of 128"):
            generate(model, [torch.tensor([1, 128])], max_new_tokens=2)
