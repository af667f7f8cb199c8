r"""The registry of attention patterns: every pattern by name, its options, and how it is built.

One table serves every caller: the command line turns it into argparse options
(``gnn-transformer graph PATTERN``, ``gnn-transformer explore --pattern``), the explorer
builds pages from it (``explore(pattern="window", pattern_options={"radius": 1})``), and a
model takes one of its patterns as the graph it attends over
(``sequence_graph("window", radius=2)``: a part that maps lengths to an ``edge_index``).

A :class:`PatternSpec` names its builder and the :data:`OPTIONS` the builder reads, and says
what the builder is called on (its ``input``):

==========  ===========================================  ==================================
input       the builder's first argument                 sized by the options
==========  ===========================================  ==================================
lengths     tokens per sequence of a ragged batch        ``n`` tokens x ``batch`` sequences
grids       (height, width) of each image                ``height``, ``width``, ``batch``
file        an edge list ``u v`` per line                ``file`` (and ``directed``)
==========  ===========================================  ==================================

so ``spec.build(sizes, **{name: value for name in spec.options})`` is the whole call;
:func:`build_pattern` does it for the command line's options and adds what a drawing needs.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import Tensor

from ..builders import LengthsLike, causal as causal_graph, complete as complete_graph
from .grid import grid_columns, grid_lengths, grid_rows, grid_window
from .sequence import (bigbird, block_local, chain, convolution, dilated_window, global_tokens, sliding_window, star,
                       star_lengths, strided)
from .user import from_networkx

__all__ = ["Option", "OPTIONS", "PatternSpec", "PATTERNS", "Pattern", "pattern_spec", "pattern_options",
           "build_pattern", "SequenceGraph", "sequence_graph", "as_sequence_graph"]


@dataclass(frozen=True)
class Option:
    """One option of the patterns: its Python name, type, default and help (the command line's ``--name``).

    ``minimum`` is the smallest value an integer option takes (1 for sizes, 0 for counts).
    """

    name: str
    type: type  # int, bool or str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: int | None = None

    @property
    def flag(self) -> str:
        """The command line's spelling of the option (``num_global`` -> ``--num-global``)."""
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` if it has this option's type, range and choices, else an error naming the option.

        ``TypeError`` for a wrong type (bools are not integers), ``ValueError`` for a value below
        ``minimum`` or outside ``choices``.
        """
        if self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.type is str:
            ok = isinstance(value, (str, os.PathLike)) or (value is None and self.default is None)
        else:
            ok = isinstance(value, self.type)
        if not ok:
            raise TypeError(f"pattern option {self.name} must be {self.type.__name__}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"pattern option {self.name} must be an integer >= {self.minimum}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"pattern option {self.name} must be one of {self.choices}, got {value!r}")
        return value


OPTIONS: dict[str, Option] = {option.name: option for option in (
    Option("n", int, 16, "tokens per sequence", minimum=1),
    Option("batch", int, 1, "sequences (a disjoint union)", minimum=1),
    Option("causal", bool, False, "keep only keys at or before their query"),
    Option("radius", int, 2, "window radius (window, dilated, global, bigbird)", minimum=0),
    Option("dilation", int, 2, "gap between keys (dilated, convolution)", minimum=1),
    Option("num_global", int, 1, "global tokens (global, bigbird)", minimum=0),
    Option("num_random", int, 2, "random keys per query (bigbird)", minimum=0),
    Option("seed", int, 0, "seed of the random keys (bigbird)", minimum=0),
    Option("block_size", int, 4, "tokens per block (block)", minimum=1),
    Option("stride", int, 4, "stride (strided)", minimum=1),
    Option("part", str, "both", "strided part", choices=("both", "local", "strided")),
    Option("kernel_size", int, 3, "kernel (convolution, grid-window)", minimum=1),
    Option("height", int, 4, "image rows (rows, columns, grid-window)", minimum=1),
    Option("width", int, 4, "image columns (rows, columns, grid-window)", minimum=1),
    Option("text_length", int, 0, "text tokens before the image", minimum=0),
    Option("file", str, None, "edge list 'u v' per line (edgelist)"),
    Option("directed", bool, False, "read the edge list as directed (edgelist)"),
)}

# the options that size each kind of input (the rest are the builder's own)
INPUTS = {"lengths": ("n", "batch"), "grids": ("height", "width", "batch"), "file": ("file",)}


@dataclass(frozen=True)
class PatternSpec:
    """A pattern of the registry.

    Attributes:
        name: its name on the command line and in the explorer.
        help: one line.
        input: ``"lengths"``, ``"grids"`` or ``"file"`` (see the module's table).
        build: the builder, called ``build(sizes, **options)`` with the options named in ``options``.
        options: the :data:`OPTIONS` the builder reads.
        layout: how a drawing places the nodes (``"line"``, ``"circle"``, ``"grid"``, ``"spring"``).
        node_lengths: nodes per sequence for given lengths when a pattern adds nodes (a star's relay).
    """

    name: str
    help: str
    input: str
    build: Callable[..., Tensor]
    options: tuple[str, ...] = ()
    layout: str = "line"
    node_lengths: Callable[[LengthsLike], Tensor] | None = None

    @property
    def used_options(self) -> tuple[str, ...]:
        """Which options this pattern reads (those that size its input, then the builder's own)."""
        return INPUTS[self.input] + self.options

    def edges(self, sizes, **options) -> Tensor:
        """The edge set on ``sizes`` (lengths, grids or a file) with ``options``, defaults filled in."""
        values = pattern_options(self.name, **options)
        return self.build(sizes, **{name: values[name] for name in self.options})


def _complete(lengths: LengthsLike, causal: bool = False) -> Tensor:
    """The encoder's graph, or with ``causal`` the decoder's (the paper's two self-attention graphs)."""
    return causal_graph(lengths) if causal else complete_graph(lengths)


def _edge_list(file: str | os.PathLike | None, directed: bool = False) -> Tensor:
    """A graph read from an edge list ('u v' per line); node k is the k-th node met in the file."""
    import networkx as nx

    if file is None:
        raise ValueError("the edgelist pattern reads its graph from a file: give --file PATH (lines 'u v')")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"pattern option file: no file {os.fspath(file)!r} (an edge list, 'u v' per line)")
    graph = nx.read_edgelist(file, nodetype=int, create_using=nx.DiGraph if directed else nx.Graph)
    return from_networkx(graph, add_self_loops=True)


PATTERNS: dict[str, PatternSpec] = {spec.name: spec for spec in (
    PatternSpec("complete", "every token to every token (the encoder's graph)", "lengths", _complete, ("causal",)),
    PatternSpec("causal", "every earlier token and itself (the decoder's graph)", "lengths", causal_graph),
    PatternSpec("window", "sliding window of a radius (Longformer)", "lengths", sliding_window, ("radius", "causal")),
    PatternSpec("dilated", "dilated sliding window (Longformer)", "lengths", dilated_window,
                ("radius", "dilation", "causal")),
    PatternSpec("global", "window plus global tokens (Longformer)", "lengths", global_tokens,
                ("num_global", "radius", "causal")),
    PatternSpec("bigbird", "window, global and random keys (BigBird)", "lengths", bigbird,
                ("radius", "num_global", "num_random", "seed", "causal")),
    PatternSpec("block", "attention inside blocks of tokens", "lengths", block_local, ("block_size", "causal")),
    PatternSpec("strided", "Sparse Transformer's strided pattern", "lengths", strided, ("stride", "part", "causal")),
    PatternSpec("star", "Star-Transformer: a ring around one relay node per sequence", "lengths", star, ("causal",),
                layout="circle", node_lengths=star_lengths),
    PatternSpec("chain", "the recurrent layer's graph", "lengths", chain),
    PatternSpec("convolution", "a (dilated) convolution's kernel", "lengths", convolution,
                ("kernel_size", "dilation", "causal")),
    PatternSpec("rows", "DALL-E: the image token's row", "grids", grid_rows, ("text_length", "causal"), layout="grid"),
    PatternSpec("columns", "DALL-E: the image token's column", "grids", grid_columns, ("text_length", "causal"),
                layout="grid"),
    PatternSpec("grid-window", "DALL-E: a square neighbourhood in the image", "grids", grid_window,
                ("kernel_size", "text_length", "causal"), layout="grid"),
    PatternSpec("edgelist", "any graph, read from an edge list file", "file", _edge_list, ("directed",),
                layout="spring"),
)}


def pattern_spec(name: str) -> PatternSpec:
    """The registry's entry for ``name``."""
    if name not in PATTERNS:
        raise ValueError(f"unknown pattern {name!r}; choose from {', '.join(PATTERNS)}")
    return PATTERNS[name]


def pattern_options(name: str, **options) -> dict[str, Any]:
    """Every option's value for pattern ``name``: the defaults of :data:`OPTIONS` with ``options`` set.

    ``options`` use the Python names (``n=8``, ``radius=1``, ``text_length=2``); an unknown
    name raises ``TypeError``.  Only the options pattern ``name`` reads
    (:attr:`PatternSpec.used_options`) are checked: a value of the wrong type raises
    ``TypeError``, one below the option's minimum or outside its choices ``ValueError``; the
    others are passed through unread (``causal`` does not look at ``height``).
    """
    used = pattern_spec(name).used_options
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown pattern options {unknown}; known: {sorted(OPTIONS)}")
    return {key: (OPTIONS[key].check(options[key]) if key in used else options[key]) if key in options
            else option.default for key, option in OPTIONS.items()}


@dataclass
class Pattern:
    """A built pattern and what a drawing of it needs.

    Attributes:
        edge_index: (2, num_edges), source (key) j in row 0, target (query) i in row 1.
        num_nodes: nodes of the graph (tokens, plus a star's relays).
        layout: ``"line"``, ``"circle"``, ``"grid"`` or ``"spring"``.
        grid: (height, width) of the image of a grid pattern.
        text_length: text tokens before the image.
        center: nodes drawn in the middle of a circle (a star's relay).
    """

    edge_index: Tensor
    num_nodes: int
    layout: str = "line"
    grid: tuple[int, int] | None = None
    text_length: int = 0
    center: tuple[int, ...] = ()


def build_pattern(name: str, **options) -> Pattern:
    """Pattern ``name`` built as the command line builds it: ``n`` tokens x ``batch`` sequences,
    ``batch`` images of ``height`` x ``width`` after ``text_length`` text tokens, or the graph of
    ``file``; ``options`` as in :func:`pattern_options`."""
    spec = pattern_spec(name)
    values = pattern_options(name, **options)
    own = {key: values[key] for key in spec.options}
    if spec.input == "grids":
        grid = (values["height"], values["width"])
        grids = [grid] * values["batch"]
        num_nodes = int(grid_lengths(grids, values["text_length"]).sum())
        return Pattern(spec.build(grids, **own), num_nodes, "grid" if values["batch"] == 1 else "line", grid=grid,
                       text_length=values["text_length"])
    if spec.input == "file":
        edges = spec.build(values["file"], **own)
        return Pattern(edges, int(edges.max()) + 1 if edges.numel() else 0, spec.layout)  # every node has a self-loop
    lengths = [values["n"]] * values["batch"]
    num_nodes = sum(lengths) if spec.node_lengths is None else int(spec.node_lengths(lengths).sum())
    center = tuple(range(values["n"], num_nodes)) if values["batch"] == 1 else ()  # nodes beyond the tokens
    return Pattern(spec.build(lengths, **own), num_nodes, spec.layout, center=center)


class SequenceGraph:
    r"""The graph a model attends over, as one of its parts: ``graph(lengths) -> edge_index``.

    Called on the lengths of a ragged batch of sequences, it returns the edges of their
    disjoint union (source j in row 0, target i in row 1), one node per token.  ``causal``
    says whether no token receives an edge from a later one (``None``: not declared), which
    is what decoding one token at a time needs.

    Args:
        name: what the graph is called (``"complete"``, ``"causal"``, ``"window"``, ...).
        build: ``build(lengths, **options) -> edge_index``.
        options: keyword arguments of ``build``.
        causal: whether the graph is causal; ``None`` when not declared.

    Example::

        >>> SequenceGraph("causal", graphs.causal, {"window": 2}, causal=True)([3])
        tensor([[0, 0, 1, 1, 2],
                [0, 1, 1, 2, 2]])
    """

    def __init__(self, name: str, build: Callable[..., Tensor], options: Mapping[str, Any] | None = None,
                 causal: bool | None = None) -> None:
        if not callable(build):
            raise TypeError(f"build must be a function of the lengths, got {type(build).__name__}")
        self.name, self.build, self.options, self.causal = name, build, dict(options or {}), causal

    def __call__(self, lengths: LengthsLike) -> Tensor:
        return self.build(lengths, **self.options)

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options.items())
        return f"{self.name}({options})" if options else self.name


def sequence_graph(name: str, **options) -> SequenceGraph:
    """Pattern ``name`` of the registry as a model's graph part, with ``options`` (defaults of :data:`OPTIONS`).

    Only patterns on the tokens of sequences qualify (input ``lengths``, no added nodes).

    Example::

        >>> sequence_graph("window", radius=1, causal=True)([4]).shape
        torch.Size([2, 7])
    """
    spec = pattern_spec(name)
    if spec.input != "lengths" or spec.node_lengths is not None:
        raise ValueError(f"pattern {name!r} is not a graph on the tokens of sequences (it is built on {spec.input}"
                         f"{', with extra nodes' if spec.node_lengths is not None else ''}); a model's graph must be")
    foreign = sorted(set(options) - set(spec.options))
    if foreign:
        raise TypeError(f"pattern {name!r} takes the options {list(spec.options)}, not {foreign}")
    values = pattern_options(name, **options)
    own = {key: values[key] for key in spec.options}
    causal = True if name in ("causal", "chain") else own.get("causal", False)
    return SequenceGraph(name, spec.build, own, causal=causal)


_KNOWN_BUILDERS = {complete_graph: ("complete", False), causal_graph: ("causal", True)}


def as_sequence_graph(graph, name: str = "graph") -> SequenceGraph | None:
    """A model's graph part from what was given: a :class:`SequenceGraph`, a name of the registry
    (``"causal"``), a builder such as ``graphs.complete`` / ``graphs.causal`` (or a
    ``functools.partial`` of one), any function of the lengths, or ``None`` (no graph declared)."""
    if graph is None or isinstance(graph, SequenceGraph):
        return graph
    if isinstance(graph, str):
        return sequence_graph(graph)
    base = graph.func if isinstance(graph, functools.partial) and not graph.args else graph
    if base in _KNOWN_BUILDERS:
        known, causal = _KNOWN_BUILDERS[base]
        return SequenceGraph(known, base, getattr(graph, "keywords", None), causal=causal)
    if callable(graph):
        return SequenceGraph(getattr(base, "__name__", type(base).__name__), graph)
    raise TypeError(f"{name} must be a SequenceGraph, a pattern name, or a function of the lengths such as "
                    f"graphs.causal; got {type(graph).__name__}")
