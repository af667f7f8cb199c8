r"""Exception classes: this library's clear class, and the one torch raises for the same input.

The rule: bad input raises a ``ValueError`` (wrong value or shape) or a ``TypeError``
(wrong type or dtype) whose message names the argument, what was given and what is
expected.  Where a ``torch.nn`` module raises another class for the same input (torch
asserts most shapes and raises ``RuntimeError`` for others), the error is *also* an
instance of that class, so ``except AssertionError`` or ``except RuntimeError`` around a
torch module keeps working when the graph module replaces it.  Where torch's class
depends on its code path (``norm_first`` sends a tensor through ``LayerNorm`` before the
attention checks it, ``nn.TransformerDecoder`` reads ``tgt_mask`` before its layers do),
the error is an instance of every class torch raises on one of those paths.

Inputs torch has no counterpart for (edge indices, per-edge biases, graph-native
options) raise plain ``ValueError``/``TypeError``.

This module is the bottom layer of the package: it imports nothing from it.
"""
from __future__ import annotations

__all__ = [
    "ShapeError",
    "BatchMismatchError",
    "FeatureSizeError",
    "MaskShapeError",
    "MaskTypeError",
    "CausalHintError",
    "NumHeadsError",
    "ActivationError",
    "InputDtypeError",
]


class ShapeError(ValueError, AssertionError):
    """A tensor of the wrong rank, or two tensors whose shapes disagree (key and value).

    torch asserts these (``_mha_shape_check``, the key/value shape check).
    """


class BatchMismatchError(ShapeError, RuntimeError):
    """Two inputs disagree on their batch: one batched (3-D) and one not, or different batch sizes.

    torch asserts on a batched/unbatched mix inside attention, and raises ``RuntimeError``
    for different batch sizes (a failed ``view``, or ``nn.Transformer``'s "the batch number
    of src and tgt must be equal", which a 3-D ``src`` with a 2-D ``tgt`` also hits).
    """


class FeatureSizeError(ShapeError, RuntimeError):
    """Node features (the last dimension) of the wrong size: not ``d_model``, ``kdim`` or ``vdim``.

    torch asserts in the attention (``embed_dim`` and key/value checks) or raises
    ``RuntimeError`` where the tensor first reaches a ``LayerNorm`` (``norm_first``), a
    matrix product (the decoder's ``memory``) or ``nn.Transformer``'s ``d_model`` check.
    """


class MaskShapeError(ShapeError, RuntimeError):
    """An ``attn_mask`` or ``key_padding_mask`` whose shape does not fit the queries and keys.

    torch raises ``RuntimeError`` for a batched 2-D or 3-D ``attn_mask`` of the wrong size and
    asserts on every other mask shape (wrong rank, an unbatched 3-D mask, key padding masks).
    """


class MaskTypeError(TypeError, AssertionError, RuntimeError):
    """A mask that is neither bool nor floating point.

    torch asserts in ``_canonical_mask``; ``nn.TransformerDecoder`` and ``nn.Transformer``
    (with ``tgt_is_causal=None``, the default) first compare ``tgt_mask`` with a causal mask
    of its dtype and fail with ``RuntimeError``.
    """


class CausalHintError(ValueError, RuntimeError):
    """``is_causal=True`` without a mask (torch: ``RuntimeError``), or with a mask that is not causal.

    torch accepts the second and then follows the hint or the mask depending on its code path;
    this library refuses it.
    """


class NumHeadsError(ValueError, AssertionError):
    """``embed_dim`` (``d_model``) is not a multiple of ``num_heads`` (``nhead``); torch asserts."""


class ActivationError(ValueError, RuntimeError):
    """An activation name the layer does not know; torch raises ``RuntimeError``."""


class InputDtypeError(TypeError, RuntimeError):
    """A module input that is not floating point, or not in the dtype or on the device of the weights.

    torch fails inside its matrix products (``RuntimeError``: "mat1 and mat2 must have the same dtype").
    """
