"""Sparse attention patterns are graphs
====================================

"Transformers are powerful sequence models, but require time and memory that grows
quadratically with the sequence length. In this paper we introduce sparse factorizations of the
attention matrix which reduce this to O(n sqrt(n))." (Child et al., 2019, "Generating Long
Sequences with Sparse Transformers").

In the graph view a sparse pattern is just another edge set: the same attention, layers and
models run on it. This script builds the patterns of ``gnn_transformer.graphs.patterns``, counts their
edges and the layers information needs to cross a sequence, draws them, and runs a model whose
layers alternate the Sparse Transformer's two halves. Run it with
``python examples/02_sparse_attention_patterns.py [OUT_DIR]`` (default ``out/``).
"""

# %%
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch_geometric.data import Data  # noqa: E402

from gnn_transformer import GraphEncoderModel, graphs, patterns, viz  # noqa: E402
from gnn_transformer.analysis import max_path_length, reachable  # noqa: E402
from gnn_transformer.testing import relative_difference  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out")
torch.manual_seed(0)
warnings.filterwarnings("ignore", message="enable_nested_tensor")  # torch's note when converting back

# %%
# The patterns, counted
# ---------------------
# Every builder takes sequence lengths and returns ``edge_index`` (2, num_edges): row 0 the key j,
# row 1 the query i. We count edges and the maximum path length: the number of stacked layers
# after which every token has heard every token it can reach.

# %%
PATTERNS = {
    "complete": lambda l: graphs.complete(l),
    "causal": lambda l: graphs.causal(l),
    "window r=2": lambda l: patterns.sliding_window(l, 2),
    "dilated r=2 d=3": lambda l: patterns.dilated_window(l, 2, 3),
    "global (1) + window r=1": lambda l: patterns.global_tokens(l, 1, 1),
    "BigBird r=1 g=1 k=2": lambda l: patterns.bigbird(l, 1, 1, 2, seed=0),
    "block b=4": lambda l: patterns.block_local(l, 4),
    "strided l=4 (causal)": lambda l: patterns.strided(l, 4, causal=True),
}
print(f"{'pattern':26s} {'edges n=16':>10s} {'n=64':>6s} {'path n=16':>9s} {'n=64':>5s} {'pairs reached':>13s}")
for name, build in PATTERNS.items():
    e16, e64 = build([16]), build([64])
    reached = float(reachable(e64, 64).double().mean())  # share of (i, j) pairs that ever exchange information
    print(f"{name:26s} {e16.size(1):10d} {e64.size(1):6d} {max_path_length(e16, 16):9d} "
          f"{max_path_length(e64, 64):5d} {reached:13.0%}")
star = patterns.star([16])  # 16 satellites + 1 relay node, numbered last
print(f"{'star (16 + relay)':26s} {star.size(1):10d} {'':6s} {max_path_length(star, 17):9d}")

# %%
# The maximum path length counts only pairs that can exchange information at all: a block-local
# or a dilated pattern on its own never connects some pairs (the last column), however deep the
# stack -- which is why Longformer mixes dilated heads with plain ones.

# %%
# Pictures: the matrix of each pattern (query rows, key columns)
# --------------------------------------------------------------

# %%
figure, axes = plt.subplots(2, 5, figsize=(17, 7.5), layout="constrained")
for ax, (name, build) in zip(axes.flat, PATTERNS.items()):
    edges = build([16])
    viz.plot_adjacency(edges, 16, ax=ax, title=f"{name}\n{edges.size(1)} edges")
viz.plot_adjacency(star, 17, ax=axes.flat[8], title=f"star (relay = node 16)\n{star.size(1)} edges")
rows = patterns.grid_rows((4, 4), text_length=2, causal=True)
viz.plot_adjacency(rows, 18, ax=axes.flat[9], title=f"DALL-E rows, 2 text + 4x4 image\n{rows.size(1)} edges")
print("wrote", viz.save(figure, OUT / "patterns.png", dpi=80))

# %%
# ...and two of them as token graphs (an arrow from key to query), drawn through networkx.

# %%
figure, (left, right) = plt.subplots(1, 2, figsize=(15, 4.5), gridspec_kw={"width_ratios": [1.7, 1]})
viz.draw_token_graph(patterns.bigbird([16], 1, 1, 2), 16, ax=left, title="BigBird: window + global + random")
viz.draw_token_graph(star, 17, layout="circle", center=[16], ax=right, title="Star-Transformer: ring + relay (16)")
print("wrote", viz.save(figure, OUT / "pattern_graphs.png", dpi=80))

# %%
# A model whose layers alternate the two halves of the strided pattern
# --------------------------------------------------------------------
# "One head attend[s] to the previous l locations, and the other head attend[s] to every l-th
# location" -- here as alternating layers: a per-layer list of edge sets, for a ragged batch.
# The graph model equals torch's layers run with the matching boolean masks.

# %%
lengths = [12, 7]
layers = [patterns.strided(lengths, 4, part, causal=True) for part in ("local", "strided")] * 2
model = GraphEncoderModel(20, d_model=32, nhead=4, num_layers=4, dim_feedforward=64, dropout=0.0,
                          dtype=torch.float64)
tokens = torch.randint(20, (sum(lengths),))
data = Data(x=tokens, position=graphs.positions(lengths), edge_index=layers)
logits = model(data)

encoder = model.encoder.to_torch()
x = model.embed(tokens) + model.positional(data.position, dtype=torch.float64)
y = x.unsqueeze(1)
for layer, edges in zip(encoder.layers, layers):
    y = layer(y, src_mask=graphs.edges_to_mask(edges, sum(lengths), sum(lengths)))
dense = model.generator(encoder.norm(y.squeeze(1)))
print("layers on the factorised pattern vs dense masked torch layers:", relative_difference(logits, dense))
print("layers for every token to hear every earlier one:", max_path_length(layers, sum(lengths)))
