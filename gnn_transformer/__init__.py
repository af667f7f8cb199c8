r"""gnn-transformer: the Transformer of "Attention Is All You Need" as message passing on token graphs.

Every token is a node; "token i may attend to token j" is an edge ``j -> i``; one
attention layer is one round of message passing.  The encoder attends over the
complete graph of each sequence, the decoder over causal edges, cross-attention
over bipartite edges from source to target tokens.  The graph modules hold
``torch.nn.Transformer``'s weights 1:1 and reproduce its outputs and gradients.

Quick start::

    import torch
    import gnn_transformer as gt

    torch_model = torch.nn.Transformer(d_model=64, nhead=4, dropout=0.0)
    model = gt.GraphTransformer.from_torch(torch_model)        # same weights
    src, tgt = torch.randn(7, 64), torch.randn(5, 64)          # one pair, no padding
    out = model(src, tgt, gt.graphs.complete([7]), gt.graphs.causal([5]),
                gt.graphs.bipartite([7], [5]))                 # (5, 64)

Conventions FAQ
---------------

**Which way do edges point?**  ``edge_index[0]`` is the source token j (key and
value side), ``edge_index[1]`` the target token i (query side), as PyG's
``flow="source_to_target"``.  For cross-attention row 0 indexes source (encoder)
tokens and row 1 target (decoder) tokens.  Builders return edges sorted by target.

**How do torch masks map to edges?**  A torch bool mask says ``True`` = blocked; an
edge says allowed.  A float (additive) mask's ``-inf`` entries are missing edges and
its finite entries are per-edge biases added to the score.  A key padding mask
removes every edge out of a padded key.  See :func:`graphs.edges_from_mask` and
:func:`graphs.edges_to_mask`.  In the torch-style (padded) call of every module, a
padded position is still a node and a query -- torch computes an output for it, and
so do we -- but it sends no edges.

**What about a token that sees nothing (a fully masked row)?**  A target with no
incoming edge, or whose edges all carry bias ``-inf`` for a head, gets a zero
attention output for that head (before ``out_proj``).  torch's ``nn.Transformer*``
layers compute the same (their SDPA path returns zeros); ``nn.MultiheadAttention``
with ``need_weights=True`` returns NaN outputs and weights for such a row, where this
library returns zeros.  The softmax is exact and max-stabilised; no epsilon is added.

**Weights per head or averaged?**  Graph-native calls return attention weights per
edge and per head, shape (num_edges, H), never averaged.  The torch-style call of
:class:`GraphMultiheadAttention` returns torch's dense (B, L, S) weights, averaged
over heads unless ``average_attn_weights=False``.  Returned weights are those after
attention dropout, as in torch.

**Differences from torch?**  (1) fully masked rows with ``need_weights=True``: zeros,
not NaN (above).  (2) ``is_causal=True`` with a mask that is not causal raises
:class:`~errors.CausalHintError` (a ``ValueError``); torch silently follows either the hint
or the mask depending on its code path, and its eval-mode fast path accepts
``is_causal=True`` without any mask, which this library refuses in every mode.
(3) ``enable_nested_tensor`` and ``mask_check`` are accepted and ignored: there is no
padding to pack in a graph.  (4) No fast path changes results with ``eval()``: the
computation is the same in every mode.  (5) Refused where torch accepts: NaN or ``+inf``
in a float mask (``ValueError``), stacks of zero layers (``ValueError``), stacks of
layers that are not this library's (``TypeError``), an ``activation`` that is neither a
string nor a callable (``TypeError`` at construction; torch fails at the first call).
(6) Same seed, same initial weights: ``torch.manual_seed(s)`` before constructing a module
gives exactly torch's parameters and leaves the generator where torch leaves it.

**Which exceptions?**  Bad input raises a ``ValueError`` (values, shapes) or a
``TypeError`` (types, dtypes) whose message names the argument, what was given and what
is expected.  Where ``torch.nn`` raises another class for the same input (it asserts most
shapes and raises ``RuntimeError`` for others), the error is also an instance of torch's
class, so code that catches torch's exceptions keeps working: the classes in
:mod:`gnn_transformer.errors` are both, e.g. ``ShapeError(ValueError, AssertionError)``,
``MaskShapeError``, ``MaskTypeError``, ``FeatureSizeError``, ``BatchMismatchError``,
``CausalHintError``, ``NumHeadsError``, ``ActivationError``, ``InputDtypeError`` (an input
that is not floating point, or not in the dtype or on the device of the weights: a
``TypeError`` and torch's ``RuntimeError``).  Where torch's class depends on its code path
(``norm_first``, the decoder's causal-mask detection), the error is an instance of each class
torch raises there.  Graph-native inputs (``edge_index``, ``edge_bias``), which torch does not
have, raise plain ``ValueError``/``TypeError``.  Checkpoints that cannot be read or belong to
another model raise ``CheckpointError`` (a ``ValueError`` naming the file); the command line
turns every user error into one line on stderr and exit status 2 (``--debug``: the traceback).

**What is validated where?**  Once, where a call enters the library; never again inside.

* graph builders and patterns (``graphs.complete``, ``causal``, ``bipartite``, ``positions``,
  ..., ``build_pattern``, ``sequence_graph``): lengths are a 1-D integer tensor or a list of
  Python/NumPy integers (a single number, bools, floats, float tensors, sets and mappings are
  refused); ``window`` and the other integer options are integers (not bools) in range.  A
  pattern checks only the options it reads (``causal`` ignores ``height``).
* ``graph_attention``: q, k, v floating tensors of one dtype and device, shapes (T, H, C) and
  (S, H, C); ``edge_index`` an integer tensor (int64/int32; uint8, int16, ... are converted to
  int64 for every backend alike), shape (2, num_edges), indices in range; ``edge_bias``'s shape;
  ``scale`` finite and positive; ``dropout_p`` in [0, 1); ``backend`` one this installation runs.
* modules (attention, layers, stacks, models): the constructor's sizes, heads and options;
  each call its inputs (floating, in the weights' dtype and on their device, unless autocast is
  on; feature sizes; masks' dtypes and shapes, named by torch's argument names).  A torch-style
  call is told from a graph-native one by the argument's type: an integer tensor where torch
  takes a mask, that is not a (2, num_edges) edge index, is refused as a mask (``MaskTypeError``
  naming ``src_mask``, ``tgt_mask``, ...), never taken as edges.  A plain ``edge_index`` is
  checked at the outermost call and prepared once (next entry).
* mask conversion (``edges_from_mask``, ``edges_to_mask``): masks bool or floating, their
  shapes, the sizes non-negative integers.
* ``generate``: ``inputs`` a list of 1-D integer tensors, ``strategy``, and every decoding
  option (``max_new_tokens``, ``beam_size``, ``top_k``, ``attention_window`` >= 1, ``temperature``
  positive, ``length_penalty`` finite, ``bos``/``eos`` token ids), before the model runs.
* command line: every option when it is parsed (:mod:`gnn_transformer.cli.options`: positive
  sizes, ``nhead`` dividing ``d-model``, probabilities in [0, 1), devices that exist, an existing
  ``--file``, a writable ``--out``); a pattern's options only where the pattern reads them.

Nothing is validated in the hot path: layers, stacks, backends and kernels trust what the
boundary checked, and a :class:`PreparedGraph` is trusted after it was built (no host
synchronisation).  ``tests/test_fuzz.py`` draws valid and invalid inputs for each of these
surfaces: a valid one must equal a reference, an invalid one must raise this library's error,
from inside the library, naming the argument.

**Do forward hooks fire as in torch?**  Yes.  Every submodule is called through its
``__call__`` in both calls, so forward hooks and pre-hooks (and the tools built on them:
activation patching, captum, attention readers) see torch's module tree: for a module
converted with ``from_torch``, the set of submodules whose hooks fire and the outputs they
receive are torch's (``self_attn`` returns ``(attn_output, None)`` inside a layer; ``out_proj``
is applied functionally, as torch does, so its hook fires in neither).  The torch-style call
of a layer keeps torch's padded layout for the per-node operations and converts the masks to
a graph once per stack call.  To observe the per-edge tensors of one attention (q, k, v,
weights, aggregation), use :meth:`GraphMultiheadAttention.register_attention_hook`.

**Empty batches, zero-length sequences, no edges?**  Return torch's shapes (e.g. a
(5, 0, 8) input gives a (5, 0, 8) output) in both calls; a target without edges gets a zero
attention output; dtype mixes that torch accepts are accepted and computed as torch does.

**Is a graph checked on every call?**  No: once.  A plain ``edge_index`` is checked at the
outermost call (shape, dtype, range) and turned into a :class:`PreparedGraph`, which every
inner layer trusts; a prepared graph is checked when it is built.  Given prepared graphs, the
layers, stacks and models read no tensor value on the host (no synchronisation) and
``torch.compile`` traces them without graph breaks.

**Which graph does a model use?**  The one it was built with: a part of the model
(``model.graph``; ``model.graph_for(lengths)`` builds it), not a class attribute.  Encoder-only
and decoder-only models are one :class:`GraphSequenceModel` on the complete or the causal graph.

**Which backend computes attention?**  ``backend="reference"`` (the default) is PyG
message passing, the literal definition.  ``"chunked"`` (torch, chunks of target nodes,
for CPU) and ``"fused"`` (Triton kernels on block-sparse tiles, for CUDA) compute the same
exactly without keeping per-edge tensors; ``"auto"`` picks one (:func:`select_backend`).
Prepare a graph once with :func:`prepare_graph` and pass the result wherever an
``edge_index`` goes, so that every layer reuses it.  Weights returned by the fast
backends are recomputed in a second pass and carry no gradient.

**Which torch path is compared against?**  :func:`testing.torch_reference_mode`: the
MATH backend of ``scaled_dot_product_attention`` with the MHA fast path (and thereby
nested tensors) off, because torch's fused kernels differ from its math path by about
1e-5 in float32 gradients; an unpinned comparison would measure torch, not us.
"""
from . import backends, core, errors, graphs
from ._aliases import install as _install_aliases
from .backends import PreparedGraph, available_backends, prepare_graph, select_backend
from .core import functional
from .core.attention import GraphMultiheadAttention
from .core.embedding import SinusoidalPositionalEncoding, TokenEmbedding
from .core.functional import graph_attention
from .core.layers import GraphTransformerDecoderLayer, GraphTransformerEncoderLayer
from .core.model import GraphDecoderModel, GraphEncoderModel, GraphSequenceModel, GraphTransformerModel
from .core.stacks import GraphTransformer, GraphTransformerDecoder, GraphTransformerEncoder
from .graphs import patterns

__version__ = "0.1.0"

# Loaded on first use, so that ``import gnn_transformer`` loads the core alone.
_LAZY_PACKAGES = ("analysis", "variants", "convert", "generation", "training", "tasks", "explain", "explorer",
                  "testing", "cli")
_install_aliases(__name__)


def __getattr__(name: str):
    if name in _LAZY_PACKAGES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_PACKAGES])


__all__ = [
    "graphs",
    "functional",
    "patterns",
    "backends",
    "core",
    "errors",
    *_LAZY_PACKAGES,
    "graph_attention",
    "available_backends",
    "select_backend",
    "PreparedGraph",
    "prepare_graph",
    "GraphMultiheadAttention",
    "GraphTransformerEncoderLayer",
    "GraphTransformerDecoderLayer",
    "GraphTransformerEncoder",
    "GraphTransformerDecoder",
    "GraphTransformer",
    "GraphTransformerModel",
    "GraphSequenceModel",
    "GraphEncoderModel",
    "GraphDecoderModel",
    "TokenEmbedding",
    "SinusoidalPositionalEncoding",
]
