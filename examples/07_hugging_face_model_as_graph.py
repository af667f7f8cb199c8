"""A Hugging Face model as a graph
================================

"We use a Transformer (Vaswani et al., 2017) based architecture for our LMs. The model largely
follows the details of the OpenAI GPT model [...] with a few modifications. Layer normalization
(Ba et al., 2016) was moved to the input of each sub-block" (Radford et al., 2019, "Language
Models are Unsupervised Multitask Learners", section 2.3).

GPT-2 is the decoder-only Transformer: masked self-attention on the causal graph of each
sequence, pre-norm layers, learned positions. Here a small GPT-2 with random weights is built
from a ``transformers`` configuration, saved with ``save_pretrained`` and loaded back as any
checkpoint folder is (nothing is downloaded), then imported with
:func:`gnn_transformer.convert.from_hf`: every tensor mapped and checked. The graph model gives
the original's logits and attention weights, and decodes the original's tokens. The same works
for BERT, BART and T5 (:doc:`/howto/import-hf`). Needs the ``hf`` extra
(``pip install -e ".[hf,viz]"``); run it with
``python examples/07_hugging_face_model_as_graph.py [OUT_DIR]`` (default ``out/``).
"""

# %%
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel  # noqa: E402

from gnn_transformer import graphs, viz  # noqa: E402
from gnn_transformer.analysis.recording import record  # noqa: E402
from gnn_transformer.convert import from_hf  # noqa: E402
from gnn_transformer.generation import generate  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out")
torch.manual_seed(0)
torch.set_num_threads(1)  # tiny tensors: a second thread only waits on a busy machine

# %%
# A checkpoint on disk
# --------------------
# Two layers of width 32 with 4 heads, a vocabulary of 100 token ids (there is no tokenizer:
# the inputs are ids). The ``transformers`` initialisation draws weights with standard
# deviation 0.02, which makes every position's output almost the same; the weights are
# scaled up so that attention has something to show. ``eager`` attention returns its
# weights when asked.

# %%
config = GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
original = GPT2LMHeadModel(config)
with torch.no_grad():
    for parameter in original.parameters():
        if parameter.dim() > 1:
            parameter.mul_(8.0)
folder = OUT / "tiny-gpt2"
original.save_pretrained(folder)
print("saved:", sorted(path.name for path in folder.iterdir()))
hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float64).eval()
print(type(hf).__name__, f"{sum(p.numel() for p in hf.parameters()):,} parameters, {next(hf.parameters()).dtype}")

# %%
# The import
# ----------
# ``from_hf`` builds the graph model for the original's class and copies every tensor through
# a weight map that is checked both ways: each tensor of the original is read, each tensor of
# the graph model written, with matching shapes. GPT-2's ``Conv1D`` matrices are transposed into
# ``torch.nn.MultiheadAttention``'s layout.

# %%
graph = from_hf(hf)
print(type(graph).__name__)
print(graph.decoder.layers[0])

# %%
# The same logits
# ---------------
# A padded batch of three sequences of 9, 5 and 1 tokens (right padding, attention mask 0 on
# the padding). The graph model builds one causal graph per sequence over its real tokens
# only; Hugging Face computes the padded batch. At every real token the logits agree to
# float64 precision.

# %%
generator = torch.Generator().manual_seed(1)
input_ids = torch.randint(100, (3, 9), generator=generator)
attention_mask = (torch.arange(9) < torch.tensor([[9], [5], [1]])).long()  # (B, L): 1 = a real token
with torch.no_grad():
    theirs = hf(input_ids=input_ids, attention_mask=attention_mask).logits  # (3, 9, 100)
    ours = graph(input_ids=input_ids, attention_mask=attention_mask).logits  # (3, 9, 100)
real = attention_mask.bool()
error = ((ours - theirs)[real].abs().max() / theirs[real].abs().max()).item()
print(f"logits at the {int(real.sum())} real tokens: max |graph - hf| / max |hf| = {error:.1e}")
assert error < 1e-12

# %%
# Attention as message passing
# ----------------------------
# Inside :func:`~gnn_transformer.analysis.recording.record`, every attention keeps its edges and its
# weights per edge and per head. Laid out as (heads, query, key) matrices, they are Hugging
# Face's ``output_attentions``; the graph has no entry at all for a pair that is not an edge.

# %%
sentence = input_ids[:1]  # (1, 9): the first sequence
with torch.no_grad(), record(graph) as recording:
    graph(input_ids=sentence)
    their_attentions = hf(input_ids=sentence, output_attentions=True).attentions  # per layer (1, H, 9, 9)
for layer, attention in enumerate(recording.attention):
    matrix = torch.stack([viz.attention_matrix(attention.edge_index, attention.weights[:, h], 9, 9)
                          for h in range(attention.num_heads)])  # (H, 9, 9)
    print(f"layer {layer} ({attention.kind}): {attention.edge_index.size(1)} edges = 9 * 10 / 2, "
          f"weights {tuple(attention.weights.shape)}; max |graph - hf| = "
          f"{(matrix - their_attentions[layer][0]).abs().max().item():.1e}")

# %%
# The token graph
# ---------------
# The causal graph of the 9 tokens with the first layer's attention (mean of the heads) as edge
# widths, and the four heads side by side.

# %%
first = recording.attention[0]
labels = [str(t) for t in sentence[0].tolist()]
figure, ax = plt.subplots(figsize=(6, 4.2))
viz.draw_token_graph(first.edge_index, 9, first.weights, labels=labels, ax=ax, min_weight=0.1,
                     title="GPT-2 layer 1: causal graph, attention as edge width")
print("wrote", viz.save(figure, OUT / "gpt2_token_graph.png", dpi=80))
heads = viz.plot_attention_heads(first.edge_index, first.weights, 9, source_labels=labels, target_labels=labels,
                                 title="layer 1, per head (query rows, key columns)")
print("wrote", viz.save(heads, OUT / "gpt2_attention_heads.png", dpi=80))
print("causal edges of 9 tokens:", graphs.causal([9]).size(1))

# %%
# Decoding: the original's tokens
# -------------------------------
# Greedy decoding grows the causal graph by one node per step (its keys and values cached per
# layer); Hugging Face's ``generate`` recomputes with its own cache. Same tokens.

# %%
prompt = input_ids[0, :5]
ours = generate(graph, [prompt], strategy="greedy", max_new_tokens=8)[0].tokens
with torch.no_grad():
    theirs = hf.generate(prompt[None], attention_mask=torch.ones(1, 5, dtype=torch.long), do_sample=False,
                         max_new_tokens=8, pad_token_id=0, eos_token_id=None)[0, 5:]
print("graph model:", ours.tolist())
print("hf generate:", theirs.tolist())
assert torch.equal(ours, theirs)
