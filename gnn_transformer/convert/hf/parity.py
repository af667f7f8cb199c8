r"""Parity of the imported graph models with the ``transformers`` originals: logits, gradients, layers.

For each architecture a model is built from a small configuration with random weights (nothing
is downloaded), both models run on the same padded batch (ragged lengths, padding on the
right or on the left) and are compared:

* logits: :math:`\max |z_\text{graph} - z_\text{hf}| / \max |z_\text{hf}|` over the real
  (non-padded) output positions;
* gradients: the same random upstream gradient on the real logits is backpropagated through
  both; per parameter :math:`\max|g_\text{graph} - g_\text{hf}| / \max(1, \max|g_\text{hf}|)`
  (the library's per-tensor convention: a gradient that is exactly zero in exact arithmetic,
  such as that of a key bias, is rounding noise in both), worst parameter reported;
* per layer (if asked): the output of every layer at the real positions, relative to its
  largest entry, and the worst gradient among that layer's parameters.

The original runs inside :func:`~gnn_transformer.testing.torch_reference_mode` (torch's exact
MATH attention path).  Tolerance: 1e-5 in float32, 1e-10 in float64.

The printed parity table (``gnn-transformer check --arch``, ``comparisons/parity_<arch>.py``)
is :mod:`gnn_transformer.cli.parity`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ...testing import default_tolerance, relative_difference, torch_reference_mode

ARCHITECTURES = ("gpt2", "bert", "bart", "t5")


def small_config(arch: str, variant: str = "", d_model: int = 64, num_layers: int = 2, num_heads: int = 4,
                 vocab_size: int = 128, max_positions: int = 32):
    """A ``transformers`` configuration of ``arch`` at a small size (``variant="v1_1"`` for T5 v1.1)."""
    import transformers as hf

    ff = 2 * d_model
    if arch == "gpt2":
        return hf.GPT2Config(vocab_size=vocab_size, n_positions=max_positions, n_embd=d_model, n_layer=num_layers,
                             n_head=num_heads, n_inner=ff, bos_token_id=0, eos_token_id=0)
    if arch == "bert":
        return hf.BertConfig(vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=num_layers,
                             num_attention_heads=num_heads, intermediate_size=ff, max_position_embeddings=max_positions)
    if arch == "bart":
        return hf.BartConfig(vocab_size=vocab_size, d_model=d_model, encoder_layers=num_layers,
                             decoder_layers=num_layers, encoder_attention_heads=num_heads,
                             decoder_attention_heads=num_heads, encoder_ffn_dim=ff, decoder_ffn_dim=ff,
                             max_position_embeddings=max_positions)
    if arch == "t5":
        v1_1 = variant == "v1_1"  # gated GELU, untied output layer, num_heads * d_kv != d_model
        return hf.T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=d_model // num_heads + (4 if v1_1 else 0),
                           d_ff=ff, num_layers=num_layers, num_heads=num_heads, relative_attention_num_buckets=8,
                           relative_attention_max_distance=12, feed_forward_proj="gated-gelu" if v1_1 else "relu",
                           tie_word_embeddings=not v1_1, decoder_start_token_id=0)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")


def variants(arch: str) -> tuple[str, ...]:
    """The configurations the parity table covers for ``arch``."""
    return ("", "v1_1") if arch == "t5" else ("",)


def small_model(arch: str, variant: str = "", seed: int = 0, attn_implementation: str = "sdpa", **sizes) -> nn.Module:
    """The original with random weights (the library's own initialisation, seeded), in eval mode."""
    import transformers as hf

    classes = {"gpt2": hf.GPT2LMHeadModel, "bert": hf.BertForMaskedLM, "bart": hf.BartForConditionalGeneration,
               "t5": hf.T5ForConditionalGeneration}
    config = small_config(arch, variant, **sizes)
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = classes[arch](config).eval()
    if arch == "t5" and variant == "v1_1" and model.lm_head.weight is model.shared.weight:
        model.lm_head.weight = nn.Parameter(model.shared.weight.detach().clone().normal_())  # v1.1: untied
    return model


def _mask(lengths: list[int], length: int, padding: str) -> Tensor:
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]  # right padding
    return (mask.flip(1) if padding == "left" else mask).long()  # (B, L) 1 = token


def padded_batch(arch: str, model: nn.Module, padding: str = "right", batch_size: int = 3, max_len: int = 9,
                 seed: int = 0) -> tuple[dict, Tensor]:
    """The original's keyword arguments for a ragged padded batch, and the (B, L) real output positions."""
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size

    def lengths(longest: int) -> list[int]:
        out = torch.randint(1, longest + 1, (batch_size,), generator=generator).tolist()
        out[0], out[-1] = longest, 1  # the longest and a one-token sequence
        return out

    def tokens(length: int) -> Tensor:
        return torch.randint(vocab, (batch_size, length), generator=generator)

    inputs = {"input_ids": tokens(max_len), "attention_mask": _mask(lengths(max_len), max_len, padding)}
    if arch == "bert":
        inputs["token_type_ids"] = torch.randint(model.config.type_vocab_size, (batch_size, max_len),
                                                 generator=generator)
    if arch in ("bart", "t5"):
        tgt_len = max(2, max_len - 2)
        inputs["decoder_input_ids"] = tokens(tgt_len)
        inputs["decoder_attention_mask"] = _mask(lengths(tgt_len)[::-1], tgt_len, padding)
        return inputs, inputs["decoder_attention_mask"].bool()
    return inputs, inputs["attention_mask"].bool()


def layer_groups(arch: str, hf_model: nn.Module, graph_model: nn.Module) -> list[tuple[str, list, list, str]]:
    """(name, original's layers, graph layers, mask of their real positions) per stack."""
    if arch == "gpt2":
        return [("layer", list(hf_model.transformer.h), list(graph_model.decoder.layers), "attention_mask")]
    if arch == "bert":
        return [("layer", list(hf_model.bert.encoder.layer), list(graph_model.encoder.layers), "attention_mask")]
    stacks = (hf_model.model.encoder.layers, hf_model.model.decoder.layers) if arch == "bart" else \
        (hf_model.encoder.block, hf_model.decoder.block)
    return [("encoder layer", list(stacks[0]), list(graph_model.encoder.layers), "attention_mask"),
            ("decoder layer", list(stacks[1]), list(graph_model.decoder.layers), "decoder_attention_mask")]


@contextmanager
def recorded(groups: list[tuple], side: str):
    """Record every layer's output on one ``side`` (``"hf"``: the original's layers, ``"graph"``: the graph
    layers) with forward hooks.  Yields one list per group."""
    outputs, undo = [[] for _ in groups], []

    def keep(store: list, out) -> None:
        store.append(out[0] if isinstance(out, tuple) else out)

    for store, (_, hf_layers, graph_layers, _) in zip(outputs, groups):
        for layer in hf_layers if side == "hf" else graph_layers:
            undo.append(layer.register_forward_hook(lambda module, args, out, store=store: keep(store, out)).remove)
    try:
        yield outputs
    finally:
        for step in undo:
            step()


@dataclass
class Parity:
    """Worst differences of one comparison (see the module docstring for the definitions)."""

    logits: float
    gradient: float
    worst_gradient: str
    tolerance: float
    layers: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.logits <= self.tolerance and self.gradient <= self.tolerance


def largest_relative(actual: Tensor, expected: Tensor) -> float:
    """max|actual - expected| / max|expected| (NaN anywhere gives inf)."""
    diff = (actual.detach().double() - expected.detach().double()).abs()
    if bool(torch.isnan(diff).any()):
        return float("inf")
    return float(diff.max()) / max(float(expected.detach().double().abs().max()), torch.finfo(torch.float64).tiny)


def compare(arch: str, hf_model: nn.Module, graph_model: nn.Module, inputs: dict, real: Tensor,
            per_layer: bool = False, seed: int = 0) -> Parity:
    """Run both models on ``inputs`` and compare logits and gradients at the ``real`` positions."""
    dtype = next(hf_model.parameters()).dtype
    groups = layer_groups(arch, hf_model, graph_model) if per_layer else []
    for model in (hf_model, graph_model):
        model.zero_grad(set_to_none=True)
    with torch_reference_mode(), recorded(groups, "hf") as hf_records:
        expected = hf_model(**inputs).logits[real]  # (N_real, vocab)
    with recorded(groups, "graph") as graph_records:
        actual = graph_model(**inputs).logits[real]
    upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch_reference_mode():
        (expected * upstream.to(dtype)).sum().backward()
    (actual * upstream.to(dtype)).sum().backward()
    theirs = dict(hf_model.named_parameters())
    mine = graph_model.hf_gradients()
    gradients = {name: relative_difference(mine[name], p.grad) for name, p in theirs.items() if p.grad is not None}
    worst = max(gradients, key=gradients.get)
    layers = []
    if per_layer:
        prefixes = {module: name + "." for name, module in hf_model.named_modules()}
        for (label, hf_layers, _, mask_key), hf_out, graph_out in zip(groups, hf_records, graph_records):
            mask = inputs.get(mask_key)
            mask = torch.ones(hf_out[0].shape[:2], dtype=torch.bool) if mask is None else mask.bool()
            for index, (module, h, g) in enumerate(zip(hf_layers, hf_out, graph_out)):
                prefix = prefixes[module]
                grad = max((v for k, v in gradients.items() if k.startswith(prefix)), default=0.0)
                layers.append((f"{label} {index}", largest_relative(g.view(h.shape)[mask], h[mask]), grad))
    return Parity(largest_relative(actual, expected), gradients[worst], worst, default_tolerance(dtype), layers)


@dataclass
class Row:
    arch: str
    variant: str
    dtype: str
    padding: str
    parity: Parity


def run(arch: str, dtypes=(torch.float32, torch.float64), paddings=("right", "left"), per_layer: bool = False,
        seed: int = 0, batch_size: int = 3, attn_implementation: str = "sdpa", progress: bool = False,
        **sizes) -> list[Row]:
    """Every (variant, dtype, padding) comparison of ``arch``; see the module docstring."""
    from tqdm.auto import tqdm

    from . import from_hf

    cases = [(v, d, p) for v in variants(arch) for d in dtypes for p in paddings]
    rows = []
    for variant, dtype, padding in tqdm(cases, desc=f"parity {arch}", disable=not progress, leave=False):
        hf_model = small_model(arch, variant, seed, attn_implementation, **sizes).to(dtype)
        graph_model = from_hf(hf_model)
        inputs, real = padded_batch(arch, hf_model, padding, batch_size, seed=seed)
        parity = compare(arch, hf_model, graph_model, inputs, real, per_layer, seed)
        rows.append(Row(arch, variant or "-", str(dtype).removeprefix("torch."), padding, parity))
    return rows


def format_table(rows: list[Row], per_layer: bool = False) -> str:
    """The parity table: one line per comparison (and one per layer if ``per_layer``)."""
    header = ("arch", "variant", "dtype", "padding", "logits rel diff", "grad rel diff", "worst gradient", "tol",
              "result")
    lines = []
    for row in rows:
        p = row.parity
        lines.append((row.arch, row.variant, row.dtype, row.padding, f"{p.logits:.2e}", f"{p.gradient:.2e}",
                      p.worst_gradient, f"{p.tolerance:.0e}", "pass" if p.passed else "FAIL"))
        if per_layer:
            lines += [("", "", "", f"  {name}", f"{out:.2e}", f"{grad:.2e}", "", "", "")
                      for name, out, grad in p.layers]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*line).rstrip() for line in lines)])
