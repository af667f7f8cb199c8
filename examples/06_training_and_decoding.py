"""Training and decoding a small task
===================================

"We used beam search with a beam size of 4 and length penalty alpha = 0.6. [...] We set the
maximum output length during inference to input length + 50, but terminate early when
possible." (Vaswani et al., 2017, section 6.1).

A small encoder-decoder learns to reverse digit sequences: trained with the paper's schedule
and label smoothing by :class:`~gnn_transformer.training.Trainer`, then decoded on held-out
sources, greedily and by beam search, as graph growth (every step adds one target node with its
causal and cross-attention edges). The cross-attention of the decoded sequence is the
alignment the model learned: for reversal, the anti-diagonal. The last cell opens the run in
the explorer. The full-size run of the same task is ``gnn-transformer train reverse`` (see
:doc:`/training`). Run it with ``python examples/06_training_and_decoding.py [OUT_DIR]``
(default ``out/``).
"""

# %%
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from gnn_transformer import GraphTransformerModel, graphs, viz  # noqa: E402
from gnn_transformer.explorer import explore  # noqa: E402
from gnn_transformer.generation import generate  # noqa: E402
from gnn_transformer.tasks import DigitTask  # noqa: E402
from gnn_transformer.training import Seq2SeqExamples, TrainConfig, Trainer, evaluate_loss  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out")
torch.manual_seed(0)
# A model this small gains nothing from a second thread, and on a busy machine the threads wait
# for each other: one thread trains it several times faster on 2 shared cores.
torch.set_num_threads(1)

# %%
# The task and the model
# ----------------------
# Sources are 1 to 8 random digits, targets their reversal. Training never sees a source of
# length 6; the held-out sources (a hash of the source decides, so none is ever trained on)
# have every length. Token ids 0 and 1 are ``<s>`` and ``</s>``.

# %%
task = DigitTask("reverse", max_length=8, left_out_lengths=(6,))
train, test = task.splits(num_train=4000, num_test=200, seed=0)
vocab = task.tgt_vocab
print(f"{len(train)} training pairs, {len(test)} held-out pairs; vocabulary {vocab.symbols}")
print("one pair:", " ".join(vocab.decode(train[0][0])), "->", " ".join(vocab.decode(train[0][1])))

model = GraphTransformerModel(len(vocab), d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                              dim_feedforward=64, dropout=0.0, tie_weights="all")
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %%
# Training
# --------
# Adam with beta = (0.9, 0.98), the warm-up / inverse-square-root schedule, label smoothing 0.1
# and gradient clipping. A batch is one disjoint-union graph of its pairs (PyG's
# ``DataLoader``): no padding. Every 50 steps ``evaluate`` measures the held-out loss (no label
# smoothing); the trainer keeps these in its ``history``.

# %%
valid = Seq2SeqExamples(test, vocab.bos, vocab.eos)
config = TrainConfig(steps=500, batch_size=64, warmup=100, label_smoothing=0.1, eval_every=50,
                     progress=False)
trainer = Trainer(model, config)
start, cpu = time.perf_counter(), time.process_time()
history = trainer.fit(Seq2SeqExamples(train, vocab.bos, vocab.eos),
                      evaluate=lambda t: {"valid_loss": evaluate_loss(t.model, valid)})
print(f"{trainer.step} steps in {time.perf_counter() - start:.1f} s ({time.process_time() - cpu:.1f} s of CPU time)")

figure, ax = plt.subplots(figsize=(6, 3.4))
steps = [h["step"] for h in history]
ax.plot(steps, [h["train_loss"] for h in history], marker="o", label="training (label-smoothed, moving average)")
ax.plot(steps, [h["valid_loss"] for h in history], marker="o", label="held-out (cross-entropy)")
ax.set(xlabel="step", ylabel="loss per target token (nats)", yscale="log", title="reversing digits")
ax.legend()
figure.tight_layout()
print("wrote", viz.save(figure, OUT / "loss_curve.png", dpi=80))

# %%
# Decoding: greedy and beam search
# --------------------------------
# :func:`~gnn_transformer.generation.generate` grows the target graph one node per step;
# the keys and values of older nodes sit in a per-layer cache. A hypothesis is correct when it
# is exactly the reversed source followed by ``</s>``.

# %%
model.eval()
sources = [torch.tensor(source) for source, _ in test]
decode = dict(bos=vocab.bos, eos=vocab.eos, max_new_tokens=task.max_target_length + 2)
for strategy, options in (("greedy", {}), ("beam", {"beam_size": 4, "length_penalty": 0.6})):
    start = time.perf_counter()
    outputs = generate(model, sources, strategy=strategy, **decode, **options)
    hits = [out.tokens.tolist() == [*target, vocab.eos] for out, (_, target) in zip(outputs, test)]
    unseen = [hit for hit, (source, _) in zip(hits, test) if len(source) == 6]
    print(f"{strategy:6s}: exact match {sum(hits)}/{len(hits)} = {sum(hits) / len(hits):.1%} "
          f"(length 6, never trained on: {sum(unseen)}/{len(unseen)}) in {time.perf_counter() - start:.1f} s")

# %%
# The alignment it learned
# ------------------------
# Beam search with ``return_attention=True`` keeps, for every decoded node, its attention
# weights per layer and kind; ``matrix()`` lays the cross-attention out as (heads, target,
# source). Each target token is drawn on the row of the node that predicted it.

# %%
source = max((s for s, _ in test), key=len)
hypothesis = generate(model, [torch.tensor(source)], strategy="beam", beam_size=4, length_penalty=0.6,
                      return_attention=True, **decode)[0]
cross = hypothesis.attention[-1]["cross"].matrix().mean(0)  # (T, S): last decoder layer, mean of heads
source_words = vocab.decode(source)
target_words = vocab.decode(hypothesis.tokens, strip_end=False)
print(" ".join(source_words), "->", " ".join(target_words))
figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
viz.plot_attention_heatmap(cross, source_words, target_words, ax=left, title="cross-attention, last decoder layer")
viz.draw_bipartite_attention(cross, source_words, target_words, ax=right, title="the bipartite graph")
figure.tight_layout()
print("wrote", viz.save(figure, OUT / "reversal_alignment.png", dpi=80))

# %%
# The run in the explorer
# -----------------------
# :func:`~gnn_transformer.explorer.explore` runs the model once on a batch and returns a
# self-contained page: tokens as nodes, the attention of every kind, layer and head as edges
# (hover an edge, a token or a matrix cell for its score and weight). Here the decoder is fed
# the reference target (teacher forcing), as in training. ``save`` writes the page; as the
# last expression of a cell (in Jupyter, and here) it shows itself in an ``<iframe>``.

# %%
target = [*source][::-1]
batch = graphs.seq2seq_batch([torch.tensor(source)], [torch.tensor([vocab.bos, *target])])
page = explore(model, batch, vocabulary=vocab, title="reversing digits: the trained model")
print("wrote", page.save(OUT / "explorer.html"))
page
