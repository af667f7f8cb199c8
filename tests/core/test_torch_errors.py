"""Bad input raises what torch raises: each case runs against torch 2.x and against the graph module.

A drop-in must keep ``except AssertionError`` / ``except RuntimeError`` around a torch module
working.  Every case below is run twice: against ``torch.nn`` (asserting the exact class torch
raises, so the table documents torch and fails if torch changes), and against the graph module
(asserting torch's class, the library's clear class from :mod:`gnn_transformer.errors` (a
``ValueError`` or ``TypeError``) and a fragment of the message).  A second table lists input
that torch accepts and this library refuses.
"""
import ast
import inspect
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import gnn_transformer.errors as errors
from gnn_transformer import (
    GraphMultiheadAttention,
    GraphTransformer,
    GraphTransformerDecoder,
    GraphTransformerDecoderLayer,
    GraphTransformerEncoder,
    GraphTransformerEncoderLayer,
)

TORCH = SimpleNamespace(MultiheadAttention=nn.MultiheadAttention, TransformerEncoderLayer=nn.TransformerEncoderLayer,
                        TransformerDecoderLayer=nn.TransformerDecoderLayer, TransformerEncoder=nn.TransformerEncoder,
                        TransformerDecoder=nn.TransformerDecoder, Transformer=nn.Transformer)
GRAPH = SimpleNamespace(MultiheadAttention=GraphMultiheadAttention,
                        TransformerEncoderLayer=GraphTransformerEncoderLayer,
                        TransformerDecoderLayer=GraphTransformerDecoderLayer,
                        TransformerEncoder=GraphTransformerEncoder, TransformerDecoder=GraphTransformerDecoder,
                        Transformer=GraphTransformer)

E, H, L, S, B = 8, 2, 4, 5, 3  # embed_dim, heads, target length, source length, batch


def mha(m, **options):
    return m.MultiheadAttention(E, H, **options)


def encoder_layer(m, **options):
    return m.TransformerEncoderLayer(E, H, 16, 0.0, **options)


def decoder_layer(m, **options):
    return m.TransformerDecoderLayer(E, H, 16, 0.0, **options)


def encoder(m, **options):
    return m.TransformerEncoder(encoder_layer(m, **options), 2, nn.LayerNorm(E))


def decoder(m, **options):
    return m.TransformerDecoder(decoder_layer(m, **options), 2, nn.LayerNorm(E))


def transformer(m, **options):
    return m.Transformer(E, H, 1, 1, 16, 0.0, **options)


def x(*shape):
    return torch.randn(*shape)


def blocked(*shape, dtype=torch.bool):
    return torch.zeros(*shape, dtype=dtype)


def case(name, run, torch_error, error, match):
    """``run(m)`` builds and calls a module from namespace ``m`` (TORCH or GRAPH)."""
    return pytest.param(run, torch_error, error, match, id=name)


q, kv = (lambda: x(L, B, E)), (lambda: x(S, B, E))  # seq-first query and key/value

RAISED = [
    # constructors
    case("mha: embed_dim not a multiple of num_heads", lambda m: m.MultiheadAttention(10, 3),
         AssertionError, errors.NumHeadsError, r"embed_dim \(d_model\) = 10 must be a positive multiple of num_heads"),
    case("mha: num_heads 0", lambda m: m.MultiheadAttention(E, 0),
         ValueError, ValueError, "num_heads must be positive, got 0"),
    case("mha: embed_dim 0", lambda m: m.MultiheadAttention(0, H),
         ValueError, ValueError, r"embed_dim \(d_model\) must be positive, got 0"),
    case("encoder layer: nhead not dividing d_model", lambda m: m.TransformerEncoderLayer(10, 3),
         AssertionError, errors.NumHeadsError, "multiple of num_heads"),
    case("encoder layer: unknown activation", lambda m: encoder_layer(m, activation="tanh"),
         RuntimeError, errors.ActivationError, "activation should be 'relu', 'gelu' or a callable .* not 'tanh'"),
    case("decoder layer: unknown activation", lambda m: decoder_layer(m, activation="swish"),
         RuntimeError, errors.ActivationError, "not 'swish'"),
    case("transformer: nhead not dividing d_model", lambda m: m.Transformer(10, 3, 1, 1),
         AssertionError, errors.NumHeadsError, "multiple of num_heads"),
    case("transformer: unknown activation", lambda m: transformer(m, activation="tanh"),
         RuntimeError, errors.ActivationError, "not 'tanh'"),
    # MultiheadAttention: ranks and batched/unbatched mixes
    case("mha: batched query, unbatched key and value", lambda m: mha(m)(q(), x(S, E), x(S, E)),
         AssertionError, errors.BatchMismatchError, r"all be batched \(3-D\) or all unbatched \(2-D\), got 3-D, 2-D"),
    case("mha: unbatched query, batched key and value", lambda m: mha(m)(x(L, E), kv(), kv()),
         AssertionError, errors.BatchMismatchError, "got 2-D, 3-D and 3-D"),
    case("mha: 4-D query", lambda m: mha(m)(x(L, B, 1, E), x(S, B, 1, E), x(S, B, 1, E)),
         AssertionError, errors.ShapeError, r"query must be \(L, F\) unbatched, .* got \(4, 3, 1, 8\)"),
    case("mha: 1-D query", lambda m: mha(m)(x(E), x(E), x(E)), AssertionError, errors.ShapeError, r"got \(8,\)"),
    # MultiheadAttention: feature sizes
    case("mha: query of the wrong embed_dim", lambda m: mha(m)(x(L, B, E + 1), kv(), kv()),
         AssertionError, errors.FeatureSizeError, "query has 9 features per node but the module expects 8"),
    case("mha: unbatched query of the wrong embed_dim", lambda m: mha(m)(x(L, E + 1), x(S, E), x(S, E)),
         AssertionError, errors.FeatureSizeError, "query has 9 features per node"),
    case("mha: key of the wrong embed_dim", lambda m: mha(m)(q(), x(S, B, E + 1), kv()),
         AssertionError, errors.FeatureSizeError, "key has 9 features per node but the module expects 8"),
    case("mha: key and value of the wrong embed_dim", lambda m: mha(m)(q(), x(S, B, E + 1), x(S, B, E + 1)),
         RuntimeError, errors.FeatureSizeError, "key has 9 features per node"),
    case("mha: key of the wrong kdim", lambda m: mha(m, kdim=6, vdim=7)(q(), x(S, B, 7), x(S, B, 7)),
         AssertionError, errors.FeatureSizeError, "key has 7 features per node but the module expects 6"),
    # MultiheadAttention: key/value and batch mismatches
    case("mha: key and value of different lengths", lambda m: mha(m)(q(), kv(), x(S + 1, B, E)),
         AssertionError, errors.ShapeError,
         r"key \(5, 3, 8\) and value \(6, 3, 8\) must have the same batch and length"),
    case("mha: key and value of different batch sizes", lambda m: mha(m)(q(), kv(), x(S, B + 1, E)),
         AssertionError, errors.ShapeError, "must have the same batch and length"),
    case("mha (kdim, vdim): key and value of different lengths",
         lambda m: mha(m, kdim=6, vdim=7)(q(), x(S, B, 6), x(S + 1, B, 7)),
         AssertionError, errors.ShapeError, "must have the same batch and length"),
    case("mha: query batch differs from key batch", lambda m: mha(m)(x(L, B + 1, E), kv(), kv()),
         RuntimeError, errors.BatchMismatchError, "queries have batch size 4 but keys have 3"),
    case("mha (batch_first): query batch differs from key batch",
         lambda m: mha(m, batch_first=True)(x(B + 1, L, E), x(B, S, E), x(B, S, E)),
         RuntimeError, errors.BatchMismatchError, "queries have batch size 4 but keys have 3"),
    # MultiheadAttention: masks
    case("mha: 2-D attn_mask of the wrong size", lambda m: mha(m)(q(), kv(), kv(), attn_mask=blocked(L, S + 1)),
         RuntimeError, errors.MaskShapeError,
         r"attn_mask has shape \(4, 6\) but should be \(tgt_len, src_len\) = \(4, 5\)"),
    case("mha: 3-D attn_mask of the wrong size", lambda m: mha(m)(q(), kv(), kv(), attn_mask=blocked(B * H + 1, L, S)),
         RuntimeError, errors.MaskShapeError, r"a 3-D mask should be \(batch_size \* num_heads, tgt_len, src_len\)"),
    case("mha: 4-D attn_mask", lambda m: mha(m)(q(), kv(), kv(), attn_mask=blocked(1, B * H, L, S)),
         AssertionError, errors.MaskShapeError, "attn_mask must be 2-D or 3-D, got 4-D"),
    case("mha: unbatched, 3-D attn_mask of the wrong size",
         lambda m: mha(m)(x(L, E), x(S, E), x(S, E), attn_mask=blocked(H + 1, L, S)),
         AssertionError, errors.MaskShapeError, r"attn_mask has shape \(3, 4, 5\)"),
    case("mha: integer attn_mask", lambda m: mha(m)(q(), kv(), kv(), attn_mask=blocked(L, S, dtype=torch.long)),
         AssertionError, errors.MaskTypeError,
         "attn_mask must be a bool or floating-point tensor, got dtype torch.int64"),
    case("mha: integer key_padding_mask",
         lambda m: mha(m)(q(), kv(), kv(), key_padding_mask=blocked(B, S, dtype=torch.long)),
         AssertionError, errors.MaskTypeError, "key_padding_mask must be a bool or floating-point tensor"),
    case("mha: key_padding_mask of the wrong length",
         lambda m: mha(m)(q(), kv(), kv(), key_padding_mask=blocked(B, S + 1)),
         AssertionError, errors.MaskShapeError,
         r"key_padding_mask has shape \(3, 6\) but should be \(batch_size, src_len\) = \(3, 5\)"),
    case("mha: key_padding_mask of the wrong batch",
         lambda m: mha(m)(q(), kv(), kv(), key_padding_mask=blocked(B + 1, S)),
         AssertionError, errors.MaskShapeError, r"key_padding_mask has shape \(4, 5\)"),
    case("mha: 1-D key_padding_mask, batched input", lambda m: mha(m)(q(), kv(), kv(), key_padding_mask=blocked(S)),
         AssertionError, errors.MaskShapeError, r"key_padding_mask has shape \(5,\)"),
    case("mha: 2-D key_padding_mask, unbatched input",
         lambda m: mha(m)(x(L, E), x(S, E), x(S, E), key_padding_mask=blocked(1, S)),
         AssertionError, errors.MaskShapeError,
         r"key_padding_mask of an unbatched input must be 1-D \(S,\), got \(1, 5\)"),
    case("mha: is_causal without attn_mask", lambda m: mha(m)(q(), kv(), kv(), is_causal=True),
         RuntimeError, errors.CausalHintError, "is_causal=True needs attn_mask"),
    # encoder layer
    case("encoder layer: src of the wrong d_model", lambda m: encoder_layer(m)(x(L, B, E + 1)),
         AssertionError, errors.FeatureSizeError, "src has 9 features per token but the module expects 8"),
    case("encoder layer (norm_first): src of the wrong d_model",
         lambda m: encoder_layer(m, norm_first=True)(x(L, B, E + 1)),
         RuntimeError, errors.FeatureSizeError, "src has 9 features per token"),
    case("encoder layer: 4-D src", lambda m: encoder_layer(m)(x(L, B, 1, E)),
         AssertionError, errors.ShapeError, r"src must be \(L, F\) unbatched"),
    case("encoder layer: src_mask of the wrong size", lambda m: encoder_layer(m)(q(), src_mask=blocked(L + 1, L)),
         RuntimeError, errors.MaskShapeError, r"src_mask has shape \(5, 4\) but should be"),
    case("encoder layer: integer src_mask", lambda m: encoder_layer(m)(q(), src_mask=blocked(L, L, dtype=torch.int32)),
         AssertionError, errors.MaskTypeError,
         "src_mask must be a bool or floating-point tensor, got dtype torch.int32"),
    case("encoder layer (batch_first): integer src_key_padding_mask",
         lambda m: encoder_layer(m, batch_first=True)(x(B, L, E),
                                                      src_key_padding_mask=blocked(B, L, dtype=torch.int32)),
         AssertionError, errors.MaskTypeError, "src_key_padding_mask must be a bool or floating-point"),
    case("encoder layer: src_key_padding_mask of the wrong length",
         lambda m: encoder_layer(m)(q(), src_key_padding_mask=blocked(B, L + 1)),
         AssertionError, errors.MaskShapeError, r"src_key_padding_mask has shape \(3, 5\) but should be"),
    case("encoder layer: is_causal without src_mask", lambda m: encoder_layer(m)(q(), is_causal=True),
         RuntimeError, errors.CausalHintError, "is_causal=True needs src_mask"),
    # decoder layer
    case("decoder layer: tgt of the wrong d_model", lambda m: decoder_layer(m)(x(L, B, E + 1), kv()),
         AssertionError, errors.FeatureSizeError, "tgt has 9 features per token"),
    case("decoder layer (norm_first): tgt of the wrong d_model",
         lambda m: decoder_layer(m, norm_first=True)(x(L, B, E + 1), kv()),
         RuntimeError, errors.FeatureSizeError, "tgt has 9 features per token"),
    case("decoder layer: memory of the wrong d_model", lambda m: decoder_layer(m)(q(), x(S, B, E + 1)),
         RuntimeError, errors.FeatureSizeError, "memory has 9 features per token but the module expects 8"),
    case("decoder layer: tgt and memory batches differ", lambda m: decoder_layer(m)(q(), x(S, B + 1, E)),
         RuntimeError, errors.BatchMismatchError, "queries have batch size 3 but keys have 4"),
    case("decoder layer (batch_first): tgt and memory batches differ",
         lambda m: decoder_layer(m, batch_first=True)(x(B, L, E), x(B + 1, S, E)),
         RuntimeError, errors.BatchMismatchError, "queries have batch size 3 but keys have 4"),
    case("decoder layer: batched tgt, unbatched memory", lambda m: decoder_layer(m)(q(), x(S, E)),
         AssertionError, errors.BatchMismatchError,
         r"the queries are batched \(3-D\) but the keys are unbatched \(2-D\)"),
    case("decoder layer: unbatched tgt, batched memory", lambda m: decoder_layer(m)(x(L, E), kv()),
         AssertionError, errors.BatchMismatchError, r"the queries are unbatched \(2-D\) but the keys are batched"),
    case("decoder layer: memory_mask of the wrong size",
         lambda m: decoder_layer(m)(q(), kv(), memory_mask=blocked(L, S + 1)),
         RuntimeError, errors.MaskShapeError, r"memory_mask has shape \(4, 6\) but should be"),
    case("decoder layer: integer tgt_mask",
         lambda m: decoder_layer(m)(q(), kv(), tgt_mask=blocked(L, L, dtype=torch.long)),
         AssertionError, errors.MaskTypeError, "tgt_mask must be a bool or floating-point tensor"),
    case("decoder layer: memory_key_padding_mask of the wrong batch",
         lambda m: decoder_layer(m)(q(), kv(), memory_key_padding_mask=blocked(B + 1, S)),
         AssertionError, errors.MaskShapeError, r"memory_key_padding_mask has shape \(4, 5\)"),
    case("decoder layer: tgt_is_causal without tgt_mask", lambda m: decoder_layer(m)(q(), kv(), tgt_is_causal=True),
         RuntimeError, errors.CausalHintError, "is_causal=True needs tgt_mask"),
    case("decoder layer: memory_is_causal without memory_mask",
         lambda m: decoder_layer(m)(q(), kv(), memory_is_causal=True),
         RuntimeError, errors.CausalHintError, "is_causal=True needs memory_mask"),
    # encoder and decoder stacks
    case("encoder: src of the wrong d_model", lambda m: encoder(m)(x(L, B, E + 1)),
         AssertionError, errors.FeatureSizeError, "src has 9 features per token"),
    case("encoder (norm_first): src of the wrong d_model", lambda m: encoder(m, norm_first=True)(x(L, B, E + 1)),
         RuntimeError, errors.FeatureSizeError, "src has 9 features per token"),
    case("encoder: integer mask", lambda m: encoder(m)(q(), mask=blocked(L, L, dtype=torch.long)),
         AssertionError, errors.MaskTypeError, "mask must be a bool or floating-point tensor"),
    case("encoder: mask of the wrong size", lambda m: encoder(m)(q(), mask=blocked(L, L + 1)),
         RuntimeError, errors.MaskShapeError, r"mask has shape \(4, 5\) but should be"),
    case("encoder: src_key_padding_mask of the wrong length",
         lambda m: encoder(m)(q(), src_key_padding_mask=blocked(B, L + 1)),
         AssertionError, errors.MaskShapeError, r"src_key_padding_mask has shape \(3, 5\)"),
    case("encoder: is_causal without mask", lambda m: encoder(m)(q(), is_causal=True),
         RuntimeError, errors.CausalHintError, "is_causal=True needs mask"),
    case("decoder: integer tgt_mask (tgt_is_causal=None detects a causal mask first)",
         lambda m: decoder(m)(q(), kv(), tgt_mask=blocked(L, L, dtype=torch.long)),
         RuntimeError, errors.MaskTypeError, "tgt_mask must be a bool or floating-point tensor"),
    case("decoder: integer tgt_mask, tgt_is_causal=False",
         lambda m: decoder(m)(q(), kv(), tgt_mask=blocked(L, L, dtype=torch.long), tgt_is_causal=False),
         AssertionError, errors.MaskTypeError, "tgt_mask must be a bool or floating-point tensor"),
    case("decoder: memory of the wrong d_model", lambda m: decoder(m)(q(), x(S, B, E + 1)),
         RuntimeError, errors.FeatureSizeError, "memory has 9 features per token"),
    case("decoder: tgt and memory batches differ", lambda m: decoder(m)(q(), x(S, B + 1, E)),
         RuntimeError, errors.BatchMismatchError, "queries have batch size 3 but keys have 4"),
    case("decoder: unbatched, 3-D tgt_mask of the wrong size",
         lambda m: decoder(m)(x(L, E), x(S, E), tgt_mask=blocked(H + 1, L, L)),
         AssertionError, errors.MaskShapeError, r"tgt_mask has shape \(3, 4, 4\)"),
    case("decoder: memory_key_padding_mask of the wrong length",
         lambda m: decoder(m)(q(), kv(), memory_key_padding_mask=blocked(B, S + 1)),
         AssertionError, errors.MaskShapeError, r"memory_key_padding_mask has shape \(3, 6\)"),
    # Transformer
    case("transformer: src and tgt batches differ", lambda m: transformer(m)(kv(), x(L, B + 1, E)),
         RuntimeError, errors.BatchMismatchError, "the batch number of src and tgt must be equal, got 3 and 4"),
    case("transformer (batch_first): src and tgt batches differ",
         lambda m: transformer(m, batch_first=True)(x(B, S, E), x(B + 1, L, E)),
         RuntimeError, errors.BatchMismatchError, "the batch number of src and tgt must be equal, got 3 and 4"),
    case("transformer: src of the wrong d_model", lambda m: transformer(m)(x(S, B, E + 1), q()),
         RuntimeError, errors.FeatureSizeError, "the feature number of src and tgt must be equal to d_model=8, got 9"),
    case("transformer: tgt of the wrong d_model", lambda m: transformer(m)(kv(), x(L, B, E + 1)),
         RuntimeError, errors.FeatureSizeError, "got 8 and 9"),
    case("transformer: batched src, unbatched tgt", lambda m: transformer(m)(kv(), x(L, E)),
         RuntimeError, errors.BatchMismatchError, "src is 3-D but tgt is 2-D"),
    case("transformer: unbatched src, batched tgt", lambda m: transformer(m)(x(S, E), q()),
         AssertionError, errors.BatchMismatchError, "src is 2-D but tgt is 3-D"),
    case("transformer: 4-D src and tgt", lambda m: transformer(m)(x(S, B, 1, E), x(L, B, 1, E)),
         AssertionError, errors.ShapeError, r"src must be \(L, F\) unbatched"),
    case("transformer: integer src_mask",
         lambda m: transformer(m)(kv(), q(), src_mask=blocked(S, S, dtype=torch.int32)),
         AssertionError, errors.MaskTypeError, "must be a bool or floating-point tensor, got dtype torch.int32"),
    case("transformer: integer tgt_mask",
         lambda m: transformer(m)(kv(), q(), tgt_mask=blocked(L, L, dtype=torch.int32)),
         RuntimeError, errors.MaskTypeError, "tgt_mask must be a bool or floating-point tensor"),
    case("transformer: memory_mask of the wrong size",
         lambda m: transformer(m)(kv(), q(), memory_mask=blocked(L + 1, S)),
         RuntimeError, errors.MaskShapeError, r"memory_mask has shape \(5, 5\) but should be"),
    case("transformer: 1-D memory_key_padding_mask",
         lambda m: transformer(m)(kv(), q(), memory_key_padding_mask=blocked(S)),
         AssertionError, errors.MaskShapeError, r"memory_key_padding_mask has shape \(5,\)"),
    case("transformer: src_is_causal without src_mask", lambda m: transformer(m)(kv(), q(), src_is_causal=True),
         RuntimeError, errors.CausalHintError, "is_causal=True needs"),
    case("transformer: tgt_is_causal without tgt_mask", lambda m: transformer(m)(kv(), q(), tgt_is_causal=True),
         RuntimeError, errors.CausalHintError, "is_causal=True needs tgt_mask"),
]


@pytest.mark.parametrize("run, torch_error, error, match", RAISED)
def test_torch_raises(run, torch_error, error, match):
    with pytest.raises(Exception) as info:
        run(TORCH)
    assert type(info.value) is torch_error, f"torch raised {type(info.value).__name__}: {info.value}"


@pytest.mark.parametrize("run, torch_error, error, match", RAISED)
def test_graph_module_raises_torchs_class_and_its_own(run, torch_error, error, match):
    with pytest.raises(error, match=match) as info:
        run(GRAPH)
    assert isinstance(info.value, torch_error)
    assert isinstance(info.value, (ValueError, TypeError))


def refused(name, run, error, match):
    return pytest.param(run, error, match, id=name)


def _eval_no_grad_encoder_layer_with_causal_hint(m):
    """torch's fast path (eval, no grad, batch_first) ignores ``is_causal``; its slow path refuses it."""
    layer = encoder_layer(m, batch_first=True).eval()
    with torch.no_grad():
        layer(x(B, L, E), is_causal=True)


REFUSED = [
    refused("mha: NaN in attn_mask", lambda m: mha(m)(q(), kv(), kv(), attn_mask=torch.full((L, S), float("nan"))),
            ValueError, "attn_mask contains NaN or \\+inf"),
    refused("mha: +inf in attn_mask", lambda m: mha(m)(q(), kv(), kv(), attn_mask=torch.full((L, S), float("inf"))),
            ValueError, "attn_mask contains NaN or \\+inf"),
    refused("mha: is_causal with a mask that is not causal",
            lambda m: mha(m)(q(), q(), q(), attn_mask=blocked(L, L), is_causal=True),
            errors.CausalHintError, "is_causal=True was given, but attn_mask is not causal"),
    refused("encoder layer (eval, no grad, batch_first): is_causal without src_mask",
            _eval_no_grad_encoder_layer_with_causal_hint, errors.CausalHintError, "is_causal=True needs src_mask"),
    refused("encoder layer: activation neither a string nor a callable", lambda m: encoder_layer(m, activation=3),
            TypeError, "activation must be a string or a callable, got int"),
    refused("encoder: no layers", lambda m: m.TransformerEncoder(encoder_layer(m), 0),
            ValueError, "num_layers must be at least 1, got 0"),
    refused("encoder: a layer of another class", lambda m: m.TransformerEncoder(nn.Linear(E, E), 2),
            TypeError, "encoder_layer must be a GraphTransformerEncoderLayer, got Linear"),
    refused("decoder: a layer of another class", lambda m: m.TransformerDecoder(nn.Linear(E, E), 2),
            TypeError, "decoder_layer must be a GraphTransformerDecoderLayer, got Linear"),
]


@pytest.mark.parametrize("run, error, match", REFUSED)
def test_torch_accepts_what_the_graph_module_refuses(run, error, match):
    run(TORCH)
    with pytest.raises(error, match=match):
        run(GRAPH)


def test_exception_classes_are_the_librarys_and_torchs():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, (ValueError, TypeError)) and cls.__doc__, name
        assert issubclass(cls, (AssertionError, RuntimeError)), f"{name} adds no torch class"


def test_errors_module_imports_nothing_from_the_package():
    tree = ast.parse(inspect.getsource(errors))
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert all(module == "__future__" for module in imported), imported
