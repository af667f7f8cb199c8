r"""The paper's model, section 3 of "Attention Is All You Need" (arXiv:1706.03762), as message passing.

In the order of the paper:

* :mod:`~gnn_transformer.core.embedding` -- token embeddings scaled by :math:`\sqrt{d_\text{model}}`
  and sinusoidal positional encodings (3.4, 3.5);
* :mod:`~gnn_transformer.core.functional` -- scaled dot-product attention on a graph (3.2.1);
* :mod:`~gnn_transformer.core.attention` -- multi-head attention, a PyG ``MessagePassing`` (3.2.2), with
  :mod:`~gnn_transformer.core.attention_parts` (virtual sources, key/value cache, hook records);
* :mod:`~gnn_transformer.core.layers` -- encoder and decoder layers: attention, add & norm,
  position-wise feed-forward (3.1, 3.3); :mod:`~gnn_transformer.core.norms` -- the norms;
* :mod:`~gnn_transformer.core.stacks` -- the encoder and decoder stacks and the
  encoder-decoder Transformer (3.1), mirroring ``torch.nn.Transformer*``;
* :mod:`~gnn_transformer.core.model` -- the models with embeddings and the output layer (3.4):
  the encoder-decoder, and one single-stack model assembled from its parts (encoder-only and
  decoder-only are that model on the complete and on the causal graph).

Around them: :mod:`~gnn_transformer.core.dense` (torch's padded tensors and masks to graphs
and back), :mod:`~gnn_transformer.core.calls` (the two calls of every module, graphs prepared
once) and :mod:`~gnn_transformer.core.conversion` (``from_torch`` / ``to_torch``).
The core imports only :mod:`gnn_transformer.graphs` and :mod:`gnn_transformer.backends`.
"""
from .attention import AttentionTensors, GraphMultiheadAttention, KeyValueCache
from .embedding import SinusoidalPositionalEncoding, TokenEmbedding, sinusoidal_encoding
from .functional import graph_attention
from .layers import GraphTransformerDecoderLayer, GraphTransformerEncoderLayer
from .model import GraphDecoderModel, GraphEncoderModel, GraphSequenceModel, GraphTransformerModel
from .norms import RMSNorm
from .stacks import GraphTransformer, GraphTransformerDecoder, GraphTransformerEncoder

__all__ = ["TokenEmbedding", "SinusoidalPositionalEncoding", "sinusoidal_encoding", "graph_attention",
           "GraphMultiheadAttention", "KeyValueCache", "GraphTransformerEncoderLayer", "GraphTransformerDecoderLayer",
           "RMSNorm", "GraphTransformerEncoder", "GraphTransformerDecoder", "GraphTransformer",
           "GraphTransformerModel", "GraphSequenceModel", "GraphEncoderModel", "GraphDecoderModel",
           "AttentionTensors"]
