"""Attention as a networkx graph: rollout and flow
===============================================

"In the Transformer model, 'self-attention' combines information from attended embeddings into
the representation of the focal embedding in the next layer. Thus, across layers of the
Transformer, information originating from different tokens gets increasingly mixed."
(Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers").

The library returns attention per edge and per head from every layer. Here a small encoder
learns to reverse a sequence; its attention becomes a ``networkx.DiGraph`` (weights as edge
attributes, tokens as node labels), the layers become one layered graph, and attention
rollout and attention flow say how much of each input token reaches each output token.
Run it with ``python examples/03_attention_flow_networkx.py [OUT_DIR]`` (default ``out/``).
"""

# %%
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch_geometric.data import Data  # noqa: E402

from gnn_transformer import GraphEncoderModel, graphs, viz  # noqa: E402
from gnn_transformer.analysis import attention_flow, attention_rollout, layered_graph, to_networkx  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out")
torch.manual_seed(0)
# A model this small gains nothing from a second thread, and on a busy machine the threads wait
# for each other: one thread trains it several times faster on 2 shared cores.
torch.set_num_threads(1)

# %%
# A task whose attention we can predict
# -------------------------------------
# Output position i must name the token at position L - 1 - i: each query has to find its mirror.

# %%
VOCAB, LENGTH, BATCH = 12, 8, 32
model = GraphEncoderModel(VOCAB, d_model=32, nhead=4, num_layers=2, dim_feedforward=64, dropout=0.0)
optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
lengths = [LENGTH] * BATCH
edge_index = graphs.complete(lengths)


def batch():
    tokens = torch.randint(VOCAB, (BATCH, LENGTH))
    return Data(x=tokens.flatten(), position=graphs.positions(lengths), edge_index=edge_index), tokens.flip(1)


for step in range(200):
    data, target = batch()
    loss = F.cross_entropy(model(data), target.flatten())
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
model.eval()
data, target = batch()
with torch.no_grad():
    accuracy = (model(data).argmax(-1) == target.flatten()).double().mean()
print(f"reversal: loss {loss.item():.3f}, accuracy {accuracy:.1%} on a fresh batch")

# %%
# One sentence, its attention per layer, as networkx graphs
# ---------------------------------------------------------

# %%
words = "the cat sat on a warm mat today".split()
tokens = torch.tensor([3, 5, 7, 9, 2, 4, 6, 8])
one = Data(x=tokens, position=torch.arange(LENGTH), edge_index=graphs.complete([LENGTH]))
with torch.no_grad():
    _, weights = model.hidden(one, return_attention_weights=True)  # one (64 edges, 4 heads) per layer
last = to_networkx(one.edge_index, LENGTH, weights[-1], labels=words)
query = 0
strongest = max(last.in_edges(query, data="weight"), key=lambda edge: edge[2])
print(f"last layer: {last.number_of_nodes()} nodes, {last.number_of_edges()} edges; query "
      f"'{last.nodes[query]['label']}' attends most to '{last.nodes[strongest[0]]['label']}' "
      f"(weight {strongest[2]:.2f}, per head {tuple(round(w, 2) for w in last.edges[strongest[0], query]['heads'])})")
stack = layered_graph(one.edge_index, weights, LENGTH, labels=words)
print(f"layered graph of the stack: {stack.number_of_nodes()} nodes (3 layers x 8 tokens), "
      f"{stack.number_of_edges()} edges")

# %%
# Rollout and flow
# ----------------
# Rollout multiplies the layers' attention matrices, each mixed with the identity for the
# residual connection: (A + I) / 2, rows renormalised, heads averaged. Flow treats the same
# numbers as capacities of the layered graph and solves a maximum-flow problem per
# (input, output) pair with networkx.

# %%
rollout = attention_rollout(one.edge_index, weights, LENGTH)
flow = attention_flow(one.edge_index, weights, LENGTH)
mirror = torch.arange(LENGTH - 1, -1, -1)
print("rollout share of the mirror token per output:", [round(v, 2) for v in rollout[torch.arange(LENGTH), mirror]
                                                        .tolist()])
print("flow from the mirror token per output:      ", [round(v, 2) for v in flow[torch.arange(LENGTH), mirror]
                                                        .tolist()])

figure, axes = plt.subplots(1, 4, figsize=(22, 4.6), gridspec_kw={"width_ratios": [1.7, 1, 1, 1]})
viz.draw_token_graph(one.edge_index, LENGTH, weights[-1], labels=words, ax=axes[0], min_weight=0.15,
                     title="layer 2 attention (head mean), key -> query")
viz.plot_attention_heatmap(viz.attention_matrix(one.edge_index, weights[-1].mean(1), LENGTH, LENGTH), words, words,
                           ax=axes[1], title="layer 2 attention")
viz.plot_attention_heatmap(rollout, words, words, ax=axes[2], title="attention rollout")
viz.plot_attention_heatmap(flow, words, words, ax=axes[3], title="attention flow")
figure.tight_layout()
print("wrote", viz.save(figure, OUT / "attention_flow.png", dpi=80))
heads = viz.plot_attention_heads(one.edge_index, weights[0], LENGTH, source_labels=words, target_labels=words,
                                 title="layer 1, per head")
print("wrote", viz.save(heads, OUT / "attention_heads.png", dpi=80))
