"""A character-level text corpus present in every Python installation: the help topics of
``pydoc_data.topics`` (the text of the Python language reference that ``help()`` shows), for character RNNs
and transformers.

The topics are joined in key order; characters other than printable ASCII (codes 32..126) and newline become
``REPLACEMENT``. The vocabulary is the sorted set of characters of the whole normalised corpus, so it does not
depend on ``max_chars`` (it may differ between Python versions, whose documentation differs). The corpus is
cut into non-overlapping chunks of ``seq_len`` characters; the first 90% of the chunks (by position) are the
train split and the last 10% the test split.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from dulab.data._util import positional_range, readonly, require, tensor
from dulab.data.base import DataSpec, TensorDataset
from dulab.errors import UserError

__all__ = ["text", "encode", "decode", "corpus", "corpus_vocab", "REPLACEMENT", "DEFAULT_MAX_CHARS",
           "TEST_FRACTION"]

REPLACEMENT = "?"
DEFAULT_MAX_CHARS = 300_000
TEST_FRACTION = 0.1
_KEEP = np.zeros(128, dtype=bool)
_KEEP[32:127] = True
_KEEP[ord("\n")] = True


def _normalise(s: str) -> str:
    """Replace every character outside printable ASCII and newline by ``REPLACEMENT``."""
    return "".join(c if ord(c) < 128 and _KEEP[ord(c)] else REPLACEMENT for c in s)


@functools.lru_cache(maxsize=1)
def corpus() -> str:
    """The whole normalised corpus: ``pydoc_data.topics.topics`` values joined in key order."""
    from pydoc_data.topics import topics

    return _normalise("".join(topics[k] for k in sorted(topics)))


@functools.lru_cache(maxsize=1)
def corpus_vocab() -> str:
    """The vocabulary of ``text``: sorted unique characters of the whole corpus."""
    return "".join(sorted(set(corpus())))


def encode(s: str, vocab: str) -> torch.Tensor:
    """Characters to their indices in ``vocab``.

    Characters outside printable ASCII and newline become ``REPLACEMENT`` first, as in the corpus.

    Args:
        s: text of length T.
        vocab: the vocabulary (``ds.info["vocab"]``).
    Returns:
        ``(T,)`` int64 in ``[0, len(vocab))``.
    """
    index = {c: i for i, c in enumerate(vocab)}
    s = _normalise(s)
    missing = sorted(set(s) - index.keys())
    if missing:
        raise UserError(f"characters {''.join(missing)!r} are not in the vocabulary of {len(vocab)}")
    return torch.tensor([index[c] for c in s], dtype=torch.long)


def decode(codes, vocab: str) -> str:
    """Indices to text: the inverse of ``encode``.

    Args:
        codes: ``(T,)`` integer tensor (or sequence) with values in ``[0, len(vocab))``.
        vocab: the vocabulary (``ds.info["vocab"]``).
    Returns:
        A string of length T.
    """
    codes = torch.as_tensor(codes)
    if codes.ndim != 1:
        raise UserError(f"decode takes one sequence (T,), got shape {tuple(codes.shape)}; decode each row")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= len(vocab)):
        raise UserError(f"codes must lie in [0, {len(vocab)}) for this vocabulary")
    return "".join(vocab[i] for i in codes.tolist())


@functools.lru_cache(maxsize=8)
def _chunks(seq_len: int, max_chars: int) -> np.ndarray:
    """The first ``max_chars`` characters as ``(N, seq_len)`` int64 codes (cached)."""
    vocab = corpus_vocab()
    table = np.zeros(128, dtype=np.int64)  # ASCII code -> index in vocab
    table[[ord(c) for c in vocab]] = np.arange(len(vocab))
    raw = np.frombuffer(corpus()[:max_chars].encode("ascii"), dtype=np.uint8)
    n = len(raw) // seq_len
    return readonly(table[raw[: n * seq_len]].reshape(n, seq_len))[0]  # (N, T)


def text(split: str = "train", root: str | None = None, *, seq_len: int = 64,
         max_chars: int | None = None) -> TensorDataset:
    """Chunks of the Python help topics as character codes.

    Args:
        split: ``"train"`` (the first 90% of the chunks) or ``"test"`` (the last 10%).
        root: unused (embedded data).
        seq_len: characters per example, T.
        max_chars: use the first this many characters of the corpus; ``None`` means ``DEFAULT_MAX_CHARS``
            (300,000; the corpus has about 465,000 with Python 3.11).
    Returns:
        ``(N, T)`` int64 in ``[0, len(vocab))``; ``info["vocab"]`` is the vocabulary string
        (``decode``/``encode``).
    """
    require(seq_len >= 1, f"text: seq_len must be >= 1, got {seq_len}")
    max_chars = DEFAULT_MAX_CHARS if max_chars is None else max_chars
    require(max_chars >= 1, f"text: max_chars must be >= 1, got {max_chars}")
    chunks = _chunks(seq_len, min(max_chars, len(corpus())))
    require(len(chunks) >= 2, f"text: max_chars={max_chars} gives {len(chunks)} chunks of seq_len={seq_len};"
                              f" need at least 2 (raise max_chars or lower seq_len)")
    vocab = corpus_vocab()
    part = positional_range(len(chunks), split, TEST_FRACTION, "text")
    spec = DataSpec((seq_len,), "discrete", len(vocab), None)
    return TensorDataset(tensor(chunks, part), None, spec, name="text", info={"vocab": vocab})
