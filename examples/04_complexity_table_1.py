"""Table 1 of "Attention Is All You Need", measured on the graphs
==============================================================

"Motivating our use of self-attention we consider three desiderata. One is the total
computational complexity per layer. Another is the amount of computation that can be
parallelized, as measured by the minimum number of sequential operations required. The third is
the path length between long-range dependencies in the network." (Vaswani et al., 2017,
section 4).

Each layer type of Table 1 is a graph on the n tokens: the complete graph (self-attention), a
window (restricted self-attention), a chain (recurrent), a kernel (convolution), a stack of
dilated kernels. Counting edges, dependent rounds and path lengths on these graphs turns the
table's O(.) entries into numbers. Run it with
``python examples/04_complexity_table_1.py [OUT_DIR]`` (default ``out/``).
"""

# %%
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from gnn_transformer import graphs, patterns, viz  # noqa: E402
from gnn_transformer.analysis import complexity_table, format_complexity_table, max_path_length, plot_complexity  # noqa: E402,E501

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out")

# %%
# The maximum path length is a graph property
# -------------------------------------------
# ``max_path_length(edge_index, n)`` is the number of stacked layers after which every token has
# heard every token it can reach: the longest shortest path of the graph.
# "self-attention could be restricted to considering only a neighborhood of size r in the input
# sequence centered around the respective output position. This would increase the maximum path
# length to O(n/r)."

# %%
n, r = 100, 7
print("complete :", max_path_length(graphs.complete([n]), n))
print("causal   :", max_path_length(graphs.causal([n]), n))
print("chain    :", max_path_length(patterns.chain([n]), n), "= n - 1")
print("window r :", max_path_length(patterns.sliding_window([n], r), n), "= ceil((n - 1) / r) =",
      math.ceil((n - 1) / r))
dilated = [patterns.convolution([n], 3, dilation=3 ** level) for level in range(5)]  # one graph per layer
print("dilated convolutions k=3:", max_path_length(dilated, n), "= ceil(log_3 n) =", math.ceil(math.log(n, 3)))

# %%
# The whole table, over a range of n
# ----------------------------------
# Operations per layer count a message per edge (d for attention, d^2 for the matrix of a
# recurrent or convolutional step) plus n d^2 for attention's projections; sequential operations
# count the dependent rounds inside a layer (the recurrent chain must run step by step).
# The fitted exponents of edges and path length against n are the O(.) of the table.

# %%
rows = complexity_table([16, 32, 64, 128, 256, 512], d_model=64, radius=4, kernel_size=3, progress=True)
print(format_complexity_table(rows, 64))
print("wrote", viz.save(plot_complexity(rows), OUT / "complexity.png", dpi=80))
