import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
import transformers  # noqa: E402

from gnn_transformer.cli import main  # noqa: E402
from gnn_transformer.convert import from_hf  # noqa: E402
from gnn_transformer.convert.hf import GraphGPT2LMHeadModel  # noqa: E402
from gnn_transformer.convert.hf.parity import compare, format_table, padded_batch, run, small_model  # noqa: E402
from gnn_transformer.testing import torch_reference_mode  # noqa: E402

transformers.logging.set_verbosity_error()
SIZES = dict(d_model=32, num_layers=2, num_heads=4, vocab_size=48, max_positions=16)
CASES = [("gpt2", ""), ("bert", ""), ("bart", ""), ("t5", ""), ("t5", "v1_1")]


def model_pair(arch, variant="", dtype=torch.float64, implementation="sdpa", **config):
    hf = small_model(arch, variant, attn_implementation=implementation, **SIZES).to(dtype)
    for key, value in config.items():
        setattr(hf.config, key, value)
    return hf, from_hf(hf)


def assert_parity(arch, hf, graph, padding, **batch):
    inputs, real = padded_batch(arch, hf, padding, **batch)
    parity = compare(arch, hf, graph, inputs, real)
    assert parity.passed, f"{arch} {padding}: logits {parity.logits:.2e}, gradient {parity.gradient:.2e} " \
                          f"({parity.worst_gradient})"
    return parity


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("arch, variant", CASES)
def test_logits_and_gradients_match_the_original(arch, variant, padding, dtype):
    hf, graph = model_pair(arch, variant, dtype)
    assert_parity(arch, hf, graph, padding, batch_size=4)


@pytest.mark.parametrize("arch, variant", CASES)
def test_eager_attention_of_the_original(arch, variant):
    hf, graph = model_pair(arch, variant, implementation="eager")
    assert_parity(arch, hf, graph, "left")


@pytest.mark.parametrize("arch, config", [
    ("gpt2", dict(scale_attn_by_inverse_layer_idx=True)),
    ("gpt2", dict(scale_attn_weights=False)),
    ("gpt2", dict(activation_function="relu")),
    ("bert", dict(is_decoder=True)),
    ("bert", dict(hidden_act="gelu_new")),
    ("bart", dict(scale_embedding=True)),
])
def test_configuration_options(arch, config):
    hf = small_model(arch, **SIZES).double()
    for key, value in config.items():
        setattr(hf.config, key, value)
    hf = type(hf)(hf.config).double().eval()  # rebuilt so that every module reads the option
    assert_parity(arch, hf, from_hf(hf), "left")


@pytest.mark.parametrize("arch", ["gpt2", "bert", "bart"])
def test_untied_output_layer(arch):
    hf = small_model(arch, **SIZES).double()
    head = {"gpt2": "lm_head", "bert": "cls.predictions.decoder", "bart": "lm_head"}[arch]
    module = hf.get_submodule(head)
    module.weight = torch.nn.Parameter(module.weight.detach().clone().normal_())
    graph = from_hf(hf)
    assert not graph.tie_weights
    assert_parity(arch, hf, graph, "right")


@pytest.mark.parametrize("arch", ["gpt2", "bert", "bart", "t5"])
def test_checkpoint_on_disk(arch, tmp_path):
    """save_pretrained / from_pretrained(local_dir) / from_hf: the path a user's own checkpoint takes."""
    hf = small_model(arch, **SIZES)
    hf.save_pretrained(tmp_path)
    loaded = type(hf).from_pretrained(tmp_path).eval()
    inputs, real = padded_batch(arch, hf, "left")
    with torch.no_grad(), torch_reference_mode():
        expected = hf(**inputs).logits[real]
    with torch.no_grad():
        actual = from_hf(loaded)(**inputs).logits[real]
    assert float((actual - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


@pytest.mark.parametrize("arch", ["gpt2", "bert", "bart", "t5"])
def test_weights_map_back_to_the_original_names(arch):
    hf, graph = model_pair(arch)
    exported = graph.hf_state_dict()
    state = hf.state_dict()
    assert set(exported) >= {name for name, _ in hf.named_parameters()}
    for name, value in exported.items():
        assert torch.equal(value, state[name]), name


@pytest.mark.parametrize("arch", ["gpt2", "bert", "bart", "t5"])
def test_loss_with_labels(arch):
    hf, graph = model_pair(arch, dtype=torch.float32)
    inputs, real = padded_batch(arch, hf, "right")
    labels = (inputs["decoder_input_ids"] if "decoder_input_ids" in inputs else inputs["input_ids"]).clone()
    labels[~real] = -100
    if arch in ("bart", "t5"):
        del inputs["decoder_input_ids"]  # the decoder reads the labels shifted right, in both
    with torch.no_grad(), torch_reference_mode():
        expected = hf(**inputs, labels=labels)
    with torch.no_grad():
        actual = graph(**inputs, labels=labels)
    assert abs(float(actual.loss) - float(expected.loss)) < 1e-5 * float(expected.loss)
    assert float((actual.logits[real] - expected.logits[real]).abs().max()) < 1e-5


def test_position_ids_as_generate_passes_them():
    hf, graph = model_pair("gpt2")
    inputs, real = padded_batch("gpt2", hf, "left")
    inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # positions from the mask
    assert compare("gpt2", hf, graph, inputs, real).passed


@pytest.mark.parametrize("arch, break_it", [
    ("gpt2", lambda g: [setattr(layer, "activation", F.gelu) for layer in g.decoder.layers]),  # exact, not tanh GELU
    ("t5", lambda g: [setattr(layer.self_attn, "scale", None) for layer in g.encoder.layers]),  # scaled scores
    ("gpt2", lambda g: setattr(g.wpe, "offset", 1)),  # positions off by one
    ("bert", lambda g: setattr(g.encoder.layers[0], "norm_first", True)),  # pre-norm instead of post-norm
])
def test_each_convention_matters(arch, break_it):
    """The comparison is sharp enough to see each of the original's conventions."""
    hf, graph = model_pair(arch)
    break_it(graph)
    inputs, real = padded_batch(arch, hf, "left")
    assert not compare(arch, hf, graph, inputs, real).passed


def test_left_padding_numbers_positions_by_column():
    """Positions follow the padded column, as the original's plain call: shifting a sequence changes its logits."""
    hf, graph = model_pair("gpt2")
    ids = torch.randint(48, (1, 4))
    alone = graph(input_ids=ids).logits
    padded = graph(input_ids=torch.cat([ids.new_zeros(1, 2), ids], 1),
                   attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1]]))
    assert not torch.allclose(alone, padded.logits[:, 2:])


def test_per_layer_table():
    rows = run("gpt2", dtypes=(torch.float64,), paddings=("left",), per_layer=True, **SIZES)
    table = format_table(rows, per_layer=True)
    assert "layer 0" in table and "layer 1" in table and "FAIL" not in table
    assert all(grad < 1e-10 and out < 1e-10 for _, out, grad in rows[0].parity.layers)


def test_check_cli_arch(capsys):
    assert main(["check", "--arch", "bart", "--no-progress", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "parity bart" in out and "4/4 comparisons within tolerance" in out


def test_bad_inputs():
    hf, graph = model_pair("gpt2")
    with pytest.raises(TypeError, match="from_hf supports"):
        from_hf(transformers.GPT2Model(hf.config))
    with pytest.raises(ValueError, match=r"attention_mask must be a \(batch, length\)"):
        graph(input_ids=torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="only 0 .padding. and 1"):
        graph(input_ids=torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 2, 1]]))
    with pytest.raises(NotImplementedError, match="use_cache"):
        graph(input_ids=torch.zeros(1, 3, dtype=torch.long), use_cache=True)
    with pytest.raises(ValueError, match="input_ids is required"):
        graph(attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 16\)"):
        graph(input_ids=torch.zeros(1, 17, dtype=torch.long))
    state = hf.state_dict()
    del state["transformer.h.1.attn.c_attn.bias"]
    with pytest.raises(ValueError, match=r"the checkpoint lacks \['transformer.h.1.attn.c_attn.bias'\]"):
        GraphGPT2LMHeadModel(hf).load_hf_state_dict(state)
    t5, t5_graph = model_pair("t5")
    with pytest.raises(ValueError, match="GraphT5ForConditionalGeneration needs decoder_input_ids"):
        t5_graph(input_ids=torch.zeros(1, 3, dtype=torch.long))


def test_unsupported_configurations_are_named():
    """What the importers do not reproduce raises an error that names it, instead of a wrong model."""
    gpt2 = small_model("gpt2", **SIZES)
    gpt2.config.add_cross_attention = True
    with pytest.raises(NotImplementedError, match="GPT-2 with add_cross_attention"):
        from_hf(gpt2)
    gpt2 = small_model("gpt2", attn_implementation="eager", **SIZES)
    gpt2.config.reorder_and_upcast_attn = True
    with pytest.raises(NotImplementedError, match="reorder_and_upcast_attn"):
        from_hf(gpt2)
    bert = small_model("bert", **SIZES)
    bert.config.add_cross_attention = True
    with pytest.raises(NotImplementedError, match="BERT with add_cross_attention"):
        from_hf(bert)
    for arch, embedding in (("t5", lambda m: m.encoder), ("bart", lambda m: m.model.encoder)):
        model = small_model(arch, **SIZES)
        embedding(model).embed_tokens = torch.nn.Embedding(*model.get_input_embeddings().weight.shape)
        with pytest.raises(NotImplementedError, match="embedding is not the shared one"):
            from_hf(model)
