"""A Hugging Face model saved on disk (``save_pretrained``), its tokenizer, and text as token ids.

The tools (``explain``, ``explore``) take a directory written by ``save_pretrained``: nothing is
downloaded.  :func:`load_saved` reads its ``config.json``, builds the original class the config
names (one of :data:`~gnn_transformer.convert.hf.SUPPORTED`) and imports it as a graph model; a
tokenizer saved beside it labels the tokens, else tokens are their ids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

__all__ = ["load_saved", "text_ids", "id_labels", "TOKENIZER_FILES"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model", "vocab.txt")


def load_saved(path: str | Path, flag: str = "--hf"):
    """(graph model in eval mode, tokenizer or ``None``) of the ``save_pretrained`` directory ``path``.

    Raises ``FileNotFoundError`` for a missing directory or one without ``config.json``, and
    ``ValueError`` when the config names no supported architecture.
    """
    import transformers

    from . import SUPPORTED, from_hf

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{flag} {path}: no such directory (give a folder written by save_pretrained)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{flag} {path}: the directory has no config.json; give a folder written by "
                                f"save_pretrained")
    config = transformers.AutoConfig.from_pretrained(path)
    names = [name for name in (config.architectures or []) if name in SUPPORTED]
    if not names:
        raise ValueError(f"{flag} {path}: the config names {config.architectures}; supported: {sorted(SUPPORTED)}")
    original = getattr(transformers, names[0]).from_pretrained(path).eval()
    tokenizer = None
    if any((path / name).is_file() for name in TOKENIZER_FILES):
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    return from_hf(original).eval(), tokenizer


def text_ids(text, tokenizer, what: str) -> list[int]:
    """Token ids of ``text``: tokenized without special tokens by ``tokenizer``; without one, ids separated by
    spaces; a list of ids as it is; ``None`` -> ``[]``."""
    if text is None:
        return []
    if not isinstance(text, str):
        return [int(t) for t in text]
    if tokenizer is not None:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    try:
        return [int(word) for word in text.split()]
    except ValueError:
        raise ValueError(f"{what} {text!r}: without a tokenizer saved beside the model, give token ids separated by "
                         f"spaces, e.g. '5 17 3'") from None


def id_labels(ids: Sequence[int], tokenizer) -> list[str]:
    """The token of every id (the tokenizer's pieces, else the ids as text)."""
    if tokenizer is None:
        return [str(i) for i in ids]
    return [str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))]
