"""Attention is message passing
============================

"An attention function can be described as mapping a query and a set of key-value pairs to an
output, where the query, keys, values, and output are all vectors. The output is computed as a
weighted sum of the values" (Vaswani et al., 2017, section 3.2).

Read as a graph: every token is a node, "i may look at j" is an edge j -> i, and the weighted
sum is what node i receives from its neighbours. This script walks through the three
attentions of the paper, checks each against dense torch, and converts a whole
``torch.nn.Transformer``. Run it with ``python examples/01_attention_is_message_passing.py``.
"""

# %%
import torch
import torch.nn.functional as F

import gnn_transformer as gt
from gnn_transformer import graphs
from gnn_transformer.testing import relative_difference

torch.manual_seed(0)

# %%
# Three graphs
# ------------
# A batch of two sentences, of 3 and 2 tokens, is one graph with 5 nodes (no padding).
# The encoder's self-attention runs on the complete graph of each sentence, the decoder's masked
# self-attention on causal edges, the encoder-decoder attention on bipartite edges.

# %%
lengths = torch.tensor([3, 2])
print("complete :", graphs.complete(lengths).tolist())
print("causal   :", graphs.causal(lengths).tolist())
print("bipartite:", graphs.bipartite(lengths, torch.tensor([1, 2])).tolist())

# %%
# Scaled dot-product attention, one edge at a time
# ------------------------------------------------
# ``Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V`` (eq. 1). On the graph: a score per edge,
# a softmax over the edges entering each node, a weighted sum of the values along those edges.

# %%
heads, head_dim = 2, 4
q, k, v = (torch.randn(5, heads, head_dim, dtype=torch.float64) for _ in range(3))
edge_index = graphs.causal(lengths)
out, weights = gt.graph_attention(q, k, v, edge_index, return_attention_weights=True)
print("weights per edge and head:", tuple(weights.shape))

# The same computation, dense: a (5 x 5) mask that allows exactly the graph's edges.
blocked = graphs.edges_to_mask(edge_index, 5, 5)  # True = no edge
dense = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                       attn_mask=~blocked).transpose(0, 1)
print("graph vs dense attention, max relative difference:", relative_difference(out, dense))

# %%
# The whole model
# ---------------
# ``torch.nn.Transformer``'s weights load 1:1 into the graph model; its padded call builds the
# graphs from the masks, its graph-native call takes them explicitly.

# %%
torch_model = torch.nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                                   dim_feedforward=64, dropout=0.0, batch_first=True, dtype=torch.float64)
model = gt.GraphTransformer.from_torch(torch_model)
src, tgt = torch.randn(2, 3, 32, dtype=torch.float64), torch.randn(2, 2, 32, dtype=torch.float64)
src_padding = graphs.padding_mask(lengths)  # sentence 2 has 2 real tokens
causal = torch_model.generate_square_subsequent_mask(2, dtype=torch.float64)
expected = torch_model(src, tgt, tgt_mask=causal, src_key_padding_mask=src_padding,
                       memory_key_padding_mask=src_padding)
nodes = model(graphs.to_nodes(src, lengths), tgt.reshape(4, 32), graphs.complete(lengths),
              graphs.causal([2, 2]), graphs.bipartite(lengths, [2, 2]))
print("graph model vs torch.nn.Transformer:", relative_difference(nodes, expected.reshape(4, 32)))
