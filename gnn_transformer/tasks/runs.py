"""End-to-end runs of the tasks: build the model, train, decode the held-out data, report.

Used by ``gnn-transformer train``; every number the command prints comes from here (the runs
hand their report to a ``log`` function as text; the command line passes ``print``).
"""
from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..core.model import GraphDecoderModel, GraphTransformerModel
from ..generation import generate
from ..graphs import causal, sequence_data
from ..training import (LanguageModelExamples, Process, Seq2SeqExamples, TrainConfig, Trainer, evaluate_loss,
                        init_from_env)
from ..training.checkpoint import latest_checkpoint, load_checkpoint, read_config
from ..training.distributed import barrier, shutdown
from . import CharCorpus, get_task, python_help_text
from .base import Seq2SeqTask, Vocabulary

__all__ = ["PRESETS", "MODEL_KEYS", "build_model", "TrainedRun", "load_run", "exact_match", "run_seq2seq",
           "run_charlm", "format_seq2seq"]

MODEL_KEYS = ("d_model", "nhead", "num_layers", "dim_feedforward", "dropout")
UNIVERSAL_KEYS = ("num_steps", "act_threshold", "ponder_penalty")
ARCHITECTURES = ("transformer", "universal")
_DIGITS = dict(d_model=64, nhead=4, num_layers=2, dim_feedforward=128, dropout=0.1, steps=2400, batch_size=128,
               warmup=400, lr_factor=1.0, cooldown=1 / 3, label_smoothing=0.1, num_train=20_000, num_test=500,
               architecture="transformer", num_steps=4, act_threshold=0.99, ponder_penalty=0.01)
# The Universal Transformer's preset (``train TASK --architecture universal``): one encoder and one decoder
# layer over num_steps steps with ACT per node; these keys override the task's preset, the command line both.
UNIVERSAL_PRESET = dict(num_steps=4, dropout=0.0)
PRESETS = {
    "copy": _DIGITS,
    "reverse": _DIGITS,
    "sort": _DIGITS,
    "addition": _DIGITS,
    "translate": {**_DIGITS, "steps": 1500, "cooldown": 0.0, "num_train": 30_000},
    "charlm": dict(d_model=128, nhead=4, num_layers=3, dim_feedforward=256, dropout=0.1, steps=1500, batch_size=8,
                   warmup=200, lr_factor=1.0, cooldown=0.0, label_smoothing=0.0, sequence_length=128, attention_window=32),
}


def build_model(kind: str, vocab_sizes: tuple[int, ...], hp: dict):
    """A ``GraphTransformerModel`` (``kind="seq2seq"``, vocab sizes (source, target); with
    ``hp["architecture"] == "universal"`` a ``GraphUniversalTransformer``) or a ``GraphDecoderModel``
    (``kind="decoder"``, one vocab size) with the hyper-parameters ``hp``."""
    common = dict(d_model=hp["d_model"], nhead=hp["nhead"], dim_feedforward=hp["dim_feedforward"],
                  dropout=hp["dropout"])
    architecture = hp.get("architecture", "transformer")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    if kind == "seq2seq" and architecture == "universal":
        from ..variants.universal import GraphUniversalTransformer

        src, tgt = vocab_sizes
        return GraphUniversalTransformer(src, tgt, num_steps=hp["num_steps"], act_threshold=hp["act_threshold"],
                                         ponder_penalty=hp["ponder_penalty"],
                                         tie_weights="all" if src == tgt else "output", **common)
    if kind == "seq2seq":
        src, tgt = vocab_sizes
        return GraphTransformerModel(src, tgt, num_encoder_layers=hp["num_layers"], num_decoder_layers=hp["num_layers"],
                                     tie_weights="all" if src == tgt else "output", **common)
    if kind == "decoder":
        return GraphDecoderModel(vocab_sizes[0], num_layers=hp["num_layers"], tie_weights=True, **common)
    raise ValueError(f"kind must be 'seq2seq' or 'decoder', got {kind!r}")



@dataclass
class TrainedRun:
    """A model trained by ``gnn-transformer train`` (eval mode), its run configuration and where it was saved.

    ``model`` is a ``GraphTransformerModel`` for the seq2seq tasks (``task`` gives their
    vocabularies) and a ``GraphDecoderModel`` for ``charlm`` (``vocabulary``, and
    ``attention_window``: its sliding-window causal graph).
    """

    model: nn.Module
    config: dict
    folder: Path
    step: int | str

    @property
    def is_seq2seq(self) -> bool:
        return self.config["kind"] == "seq2seq"

    @property
    def task(self) -> Seq2SeqTask:
        if not self.is_seq2seq:
            raise ValueError(f"{self.folder} is a decoder-only run ({self.config.get('task')}): it has no seq2seq task")
        return get_task(self.config["task"])

    @property
    def vocabulary(self) -> Vocabulary:
        """The decoder-only model's vocabulary (for seq2seq runs, ``task.src_vocab`` and ``task.tgt_vocab``)."""
        if self.is_seq2seq:
            raise ValueError(f"{self.folder} is a seq2seq run: use its task's src_vocab and tgt_vocab")
        return Vocabulary(self.config["vocabulary"][2:])  # the saved symbols start with <s>, </s>

    @property
    def attention_window(self) -> int:
        return self.config["attention_window"]

    def language_model_data(self, text: str):
        """``text`` (characters of the vocabulary) as the ``Data`` the decoder-only model reads: the
        sliding-window causal graph it was trained on."""
        if not text:
            raise ValueError("the text is empty: give at least one character")
        unknown = sorted(set(text) - set(self.vocabulary.index))
        if unknown:
            raise ValueError(f"characters not in the model's vocabulary: {unknown}")
        data = sequence_data(torch.tensor(self.vocabulary.encode(list(text))), "causal")
        data.edge_index = causal([len(text)], self.attention_window)
        return data

    def held_out_example(self, length: int = 40):
        """A held-out input: seq2seq, the source ids of the longest of 20 held-out pairs;
        ``charlm``, ``length`` characters of the held-out text, from the first line of prose."""
        if self.is_seq2seq:
            _, held_out = self.task.splits(0, 20, seed=0)
            return max(held_out, key=lambda pair: len(pair[0]))[0]
        corpus = CharCorpus(python_help_text())
        text = corpus.decode(corpus.test)
        sentence = re.search(r"\n[A-Z][a-z]+ [a-z]", text)  # a line of prose, not a table or code
        start = sentence.start() + 1 if sentence else 0
        return "".join(c for c in text[start:] if c in self.vocabulary.index)[:length]


def load_run(directory: str | Path) -> TrainedRun:
    """Load the model of a run of ``gnn-transformer train``: a run folder (its ``--out``), its
    ``checkpoints`` folder (the ``latest`` one) or one ``step-*`` folder.

    Raises ``FileNotFoundError`` when there is no checkpoint there.
    """
    path = Path(directory)
    hint = "train one with: gnn-transformer train translate --out DIR"
    if not path.is_dir():
        raise FileNotFoundError(f"{directory} holds no checkpoint (there is no such folder); {hint}")
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    folder = latest_checkpoint(path) or path
    if not (folder / "model.safetensors").exists() or not (folder / "config.json").exists():
        raise FileNotFoundError(f"{directory} holds no checkpoint (model.safetensors and config.json); {hint}")
    config = read_config(folder)
    if config.get("kind") not in ("seq2seq", "decoder"):
        raise ValueError(f"{folder}/config.json names no model kind ('seq2seq' or 'decoder'): not a run of train")
    if config["kind"] == "decoder" and "attention_window" not in config:
        raise ValueError(f"{folder} was saved without its attention window (an older run of train charlm): "
                         "train it again to show it")
    model = build_model(config["kind"], tuple(config["vocab_sizes"]), config["model"])
    load_checkpoint(folder, model=model, restore_rng=False)
    try:
        step = json.loads((folder / "state.json").read_text())["step"]
    except (OSError, KeyError, ValueError):
        step = "?"
    return TrainedRun(model.eval(), config, folder, step)


def exact_match(model, pairs, *, strategy: str, bos: int, eos: int, max_new_tokens: int, beam_size: int = 4,
                batch_size: int = 250) -> dict:
    """Share of held-out pairs whose decoded target equals the reference exactly, overall and per
    source length.  Returns ``{"accuracy": float, "by_length": {length: (correct, total)}}``."""
    correct, by_length = 0, defaultdict(lambda: [0, 0])
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        sources = [torch.tensor(source) for source, _ in chunk]
        outputs = generate(model, sources, strategy=strategy, bos=bos, eos=eos, max_new_tokens=max_new_tokens,
                           beam_size=beam_size)
        for (source, target), hypothesis in zip(chunk, outputs):
            hit = hypothesis.tokens.tolist() == [*target, eos]
            correct += hit
            by_length[len(source)][0] += hit
            by_length[len(source)][1] += 1
    return {"accuracy": correct / len(pairs), "by_length": {k: tuple(v) for k, v in sorted(by_length.items())}}


def _setup(args) -> tuple[Process, dict]:
    context = dict(context_parallel=getattr(args, "context_parallel", 1),
                   strategy=getattr(args, "context_strategy", "halo"))
    process = init_from_env(args.device, **context) if args.distributed else Process(device=args.device)
    given = {k: v for k, v in vars(args).items() if k in PRESETS[args.task] and v is not None}
    universal = UNIVERSAL_PRESET if given.get("architecture") == "universal" else {}
    hp = {**PRESETS[args.task], **universal, **given}
    torch.manual_seed(args.seed)  # the same initial weights in every process
    return process, hp


def _train_config(args, hp: dict, eval_every: int) -> TrainConfig:
    cooldown = round(hp["cooldown"] * hp["steps"])  # the preset's and --cooldown's share of the steps
    return TrainConfig(steps=hp["steps"], batch_size=hp["batch_size"], warmup=hp["warmup"], lr_factor=hp["lr_factor"],
                       cooldown=cooldown, label_smoothing=hp["label_smoothing"], eval_every=eval_every,
                       checkpoint_every=args.checkpoint_every, seed=args.seed, progress=not args.no_progress)


def _silent(line: str) -> None:
    """The default ``log``: the library reports through its return values; the command line prints."""


def _trainer(args, model, hp, process, run_config, eval_every: int, log: Callable[[str], None]) -> Trainer:
    out = Path(args.out)
    trainer = Trainer(model, _train_config(args, hp, eval_every), process=process,
                      checkpoint_dir=out / "checkpoints", run_config=run_config)
    if args.resume and trainer.resume():  # restores the random state too
        if process.is_main:
            log(f"resumed from step {trainer.step}")
    else:
        torch.manual_seed(args.seed * 7919 + process.rank)  # dropout streams differ per process
    return trainer


def run_seq2seq(args, log: Callable[[str], None] = _silent) -> dict | None:
    """Train ``args.task`` and report exact match with greedy and beam search on held-out pairs.

    Returns the results (on the main process); ``log`` receives the report's lines as text.
    """
    process, hp = _setup(args)
    task = get_task(args.task)
    train, test = task.splits(hp["num_train"], hp["num_test"], seed=args.seed)
    vocab = task.tgt_vocab
    model = build_model("seq2seq", (len(task.src_vocab), len(task.tgt_vocab)), hp)
    keys = MODEL_KEYS + (("architecture",) + UNIVERSAL_KEYS if hp["architecture"] == "universal" else ())
    run_config = {"task": args.task, "kind": "seq2seq", "vocab_sizes": [len(task.src_vocab), len(vocab)],
                  "model": {k: hp[k] for k in keys}}
    max_new = task.max_target_length + 2
    decode = dict(bos=vocab.bos, eos=vocab.eos, max_new_tokens=max_new, beam_size=args.beam_size)
    monitor = test[:200]
    valid = Seq2SeqExamples(test, vocab.bos, vocab.eos)

    def evaluate(trainer):
        return {"valid_loss": evaluate_loss(trainer.model, valid, device=process.device),
                "greedy_exact": exact_match(trainer.model, monitor, strategy="greedy", **decode)["accuracy"]}

    trainer = _trainer(args, model, hp, process, run_config, eval_every=max(1, hp["steps"] // 5), log=log)
    start = time.perf_counter()
    trainer.fit(Seq2SeqExamples(train, vocab.bos, vocab.eos), evaluate=evaluate)
    train_time = time.perf_counter() - start
    results = None
    if process.is_main:
        start = time.perf_counter()
        greedy_result = exact_match(model, test, strategy="greedy", **decode)
        beam_result = exact_match(model, test, strategy="beam", **decode)
        results = {"task": args.task, "steps": trainer.step, "train_seconds": round(train_time, 1),
                   "decode_seconds": round(time.perf_counter() - start, 1), "num_test": len(test),
                   "greedy": greedy_result, "beam": beam_result, "beam_size": args.beam_size,
                   "left_out_lengths": list(task.left_out_lengths), "hyperparameters": hp}
        longer = task.longer()
        if longer is not None:  # length generalisation: sources longer than any trained, greedy
            _, longer_test = longer.splits(0, hp["num_test"], seed=args.seed)
            results["longer"] = exact_match(model, longer_test, strategy="greedy", bos=vocab.bos, eos=vocab.eos,
                                            max_new_tokens=longer.max_target_length + 2)
        log(format_seq2seq(results, task))
        if args.task == "translate" and not args.no_plot:
            try:
                results["alignment"] = str(draw_alignment(model, task, test, Path(args.out) / "alignment.png"))
                log(f"alignment picture: {results['alignment']}")
            except ImportError:
                log("no alignment picture: it needs matplotlib (pip install 'gnn-transformer[viz]')")
        if callable(getattr(model, "ponder_steps", None)) and not args.no_plot:
            results["ponder_picture"] = _ponder_picture(model, task, test, Path(args.out) / "ponder.png", log)
        _write_results(args.out, results)
    barrier()
    shutdown()
    return results


def _ponder_picture(model, task, test, path: Path, log) -> str | None:
    """The ponder map of 8 held-out sources, of lengths spread over the task's (``tasks.ponder``)."""
    try:
        from .ponder import draw_ponder_map

        examples = sorted(test[:200], key=lambda pair: len(pair[0]))[::25][:8]
        drawn = draw_ponder_map(model, task, examples, path, title=f"{task.name}: ACT steps per token")
    except ImportError:
        log("no ponder picture: it needs matplotlib (pip install 'gnn-transformer[viz]')")
        return None
    log(f"ponder picture: {drawn}")
    return str(drawn)


def _left_out_accuracy(result: dict, lengths) -> tuple[int, int]:
    pairs = [result["by_length"][n] for n in lengths if n in result["by_length"]]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def format_seq2seq(results: dict, task) -> str:
    """The report of a seq2seq run: steps, time and exact match of greedy and beam decoding."""
    lines = [f"\n{results['task']}: {results['steps']} steps in {results['train_seconds']} s; "
             f"{results['num_test']} held-out pairs (never trained on) decoded in {results['decode_seconds']} s"]
    for name in ("greedy", "beam"):
        result = results[name]
        label = name if name == "greedy" else f"beam (size {results['beam_size']}, alpha 0.6)"
        line = f"  exact match, {label}: {100 * result['accuracy']:.1f}%"
        if task.left_out_lengths:
            hits, total = _left_out_accuracy(result, task.left_out_lengths)
            line += (f"   (lengths {', '.join(map(str, task.left_out_lengths))}, left out of training: "
                     f"{hits}/{total} = {100 * hits / max(total, 1):.1f}%)")
        lines.append(line)
    if "longer" in results:
        lengths = list(results["longer"]["by_length"])
        lines.append(f"  longer sources than any trained (lengths {min(lengths)} to {max(lengths)}), greedy: "
                     f"{100 * results['longer']['accuracy']:.1f}%")
    return "\n".join(lines)


def draw_alignment(model, task, test, path: Path, example: int = 0) -> Path:
    """Decode one held-out sentence with beam search and draw the last decoder layer's cross-attention
    (mean over heads) as a source x target heatmap and as the bipartite graph."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..analysis.viz import draw_bipartite_attention, plot_attention_heatmap, save

    candidates = sorted(test, key=lambda pair: -len(pair[0]))  # a long sentence shows the reordering best
    source, _ = candidates[example]
    vocab = task.tgt_vocab
    hypothesis = generate(model, [torch.tensor(source)], strategy="beam", bos=vocab.bos, eos=vocab.eos,
                          max_new_tokens=task.max_target_length + 2, return_attention=True)[0]
    matrix = hypothesis.attention[-1]["cross"].matrix().mean(0)  # (T, S)
    source_words = task.src_vocab.decode(source)
    target_words = vocab.decode(hypothesis.tokens, strip_end=False)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6), gridspec_kw={"width_ratios": [1.25, 1]})
    plot_attention_heatmap(matrix, source_words, target_words, ax=left,
                           title="cross-attention, last decoder layer (mean of heads)")
    left.set_ylabel("target token (the node that predicted it)")
    draw_bipartite_attention(matrix, source_words, target_words, ax=right, title="the bipartite graph, edge width = weight")
    figure.tight_layout()
    return save(figure, path, dpi=80)


def run_charlm(args, log: Callable[[str], None] = _silent) -> dict | None:
    """Train a decoder-only character model on Python's help texts; report held-out loss and a sample.

    The model reads sequences of ``sequence_length`` characters on the sliding-window causal graph
    (each character attends to the last ``attention_window`` ones): long positions at the cost
    of short contexts, and the sample grows the same graph.  ``log`` receives the report as text.
    """
    process, hp = _setup(args)
    corpus = CharCorpus(python_help_text())
    model = build_model("decoder", (len(corpus.vocab),), hp)
    run_config = {"task": "charlm", "kind": "decoder", "vocab_sizes": [len(corpus.vocab)],
                  "model": {k: hp[k] for k in MODEL_KEYS}, "vocabulary": corpus.vocab.symbols,
                  "attention_window": hp["attention_window"]}
    length, window = hp["sequence_length"], hp["attention_window"]
    valid = LanguageModelExamples(corpus.test, length, attention_window=window)
    trainer = _trainer(args, model, hp, process, run_config, eval_every=max(1, hp["steps"] // 5), log=log)
    start = time.perf_counter()
    trainer.fit(LanguageModelExamples(corpus.train, length, stride=length // 2, attention_window=window),
                evaluate=lambda t: {"valid_loss": evaluate_loss(t.model, valid, device=process.device)})
    train_time = time.perf_counter() - start
    results = None
    if process.is_main:
        loss = evaluate_loss(model, valid, device=process.device)
        generator = torch.Generator().manual_seed(args.seed)
        prompt = args.prompt
        sample_length = args.sample_length or length - len(prompt)  # the positions it was trained on
        hypothesis = generate(model, [corpus.encode(prompt).to(process.device)], strategy="sample",
                              max_new_tokens=sample_length, temperature=0.8, generator=generator,
                              attention_window=window)[0]
        sample = prompt + corpus.decode(hypothesis.tokens.tolist())
        results = {"task": "charlm", "steps": trainer.step, "train_seconds": round(train_time, 1),
                   "valid_loss_nats_per_char": round(loss, 4), "valid_bits_per_char": round(loss / 0.693147, 3),
                   "sample": sample, "hyperparameters": hp}
        log(f"\ncharlm: {trainer.step} steps in {results['train_seconds']} s; held-out loss "
            f"{loss:.3f} nats/char ({results['valid_bits_per_char']} bits/char)")
        log(f"sample (temperature 0.8, seed {args.seed}, prompt {prompt!r}):\n{sample}")
        _write_results(args.out, results)
    barrier()
    shutdown()
    return results


def _write_results(out, results: dict) -> None:
    path = Path(out) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__")
                               else str(o)) + "\n")
