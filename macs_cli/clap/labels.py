"""Zero-shot labelling of stems with CLAP: vocabularies, prompts and scores.

A stem's CLAP audio embedding is compared with the text embeddings of one prompt per label
(``"The sound of <label>"``); the scores are a softmax over the vocabulary of the cosine
similarities scaled by 100 (CLAP's usual logit scale, ``exp(logit_scale)`` of the trained
models is about 100), reported with the raw cosines::

    from macs_cli.clap import load_clap
    from macs_cli.clap.labels import label_stems

    clap = load_clap()
    emb = clap.embed_waveforms(stems, 44_100)               # (N, 512)
    for row in label_stems(clap, emb, "fsd50k", top_k=3):
        print(", ".join(f"{s.label} {s.score:.2f}" for s in row))

Vocabularies (:func:`load_vocabulary`): ``fsd50k`` (200 classes) and ``audioset`` (527 classes)
are built in (see :mod:`macs_cli.clap.vocab`); a comma-separated string (``"dog barking, car
engine"``), a text file (one label per line) or a list of strings give a custom one.

:func:`zero_shot` needs no model: it scores given audio and text embeddings. :func:`label_stems`
embeds the prompts with ``encoder.embed_text`` in batches and keeps them in a cache keyed by the
encoder and the prompts, so labelling many stems or files against one vocabulary embeds it once.
"""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from . import vocab as _vocab

PROMPT_TEMPLATE = "The sound of {}"
LOGIT_SCALE = 100.0
DEFAULT_TOP_K = 3
DEFAULT_BATCH_SIZE = 64
PATH_SUFFIXES = (".txt", ".tsv", ".csv", ".list", ".labels")

BUILTIN_VOCABULARIES = tuple(_vocab.BUILTIN)


class LabelScore(NamedTuple):
    """One label of a stem: ``score`` is its softmax probability over the vocabulary (the scores
    of all labels of a vocabulary sum to 1), ``cosine`` the raw cosine similarity in [-1, 1]."""

    label: str
    score: float
    cosine: float


# -- vocabularies ---------------------------------------------------------------------------------
def _clean(labels: Iterable[str], source: str) -> list[str]:
    """Collapse whitespace, drop empty labels and duplicates (case-insensitive, first spelling kept)."""
    out: list[str] = []
    seen: set[str] = set()
    for item in labels:
        if not isinstance(item, str):
            raise ConfigError(f"{source}: labels must be strings, got {type(item).__name__} {item!r}")
        label = " ".join(item.split())
        key = label.casefold()
        if label and key not in seen:
            seen.add(key)
            out.append(label)
    if not out:
        raise ConfigError(f"{source} holds no labels: give a built-in vocabulary "
                          f"({', '.join(BUILTIN_VOCABULARIES)}), a comma-separated list or a "
                          "file with one label per line")
    return out


def _looks_like_path(text: str) -> bool:
    return (os.sep in text or "/" in text or "\\" in text or text.startswith(("~", "./", "../"))
            or text.lower().endswith(PATH_SUFFIXES))


def read_label_file(path: str | os.PathLike) -> list[str]:
    """Labels from a UTF-8 text file, one per line; blank lines and lines starting with ``#`` are
    skipped, a line is one label even if it holds commas. Stripped and de-duplicated."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"label file {str(path)!r} does not exist")
    if not p.is_file():
        raise ConfigError(f"label file {str(path)!r} is not a file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"label file {str(path)!r} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read label file {str(path)!r} ({exc.strerror or type(exc).__name__})") from None
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return _clean(lines, f"label file {str(path)!r}")


def load_vocabulary(name_or_list: str | os.PathLike | Sequence[str]) -> list[str]:
    """A list of labels, stripped, de-duplicated (case-insensitively, first spelling kept), in order.

    - ``"fsd50k"`` / ``"audioset"`` (any case, ``-``/``_`` ignored): a built-in vocabulary, its
      display names in the dataset's index order (200 / 527 labels).
    - a path (``os.PathLike``, or a string naming an existing file): one label per line, see
      :func:`read_label_file`. A string that looks like a path (holds ``/``, starts with ``~`` or
      ``.``, or ends in ``.txt``...) but names no file is an error, not a label.
    - any other string: labels separated by commas, ``"dog barking, car engine"`` (a single
      label without a comma is a one-label vocabulary). Labels that themselves hold commas, like
      AudioSet's ``"Male speech, man speaking"``, need a file or a list.
    - a list or tuple of strings: taken as labels.

    Raises :class:`~macs_cli.errors.ConfigError` (one line) when nothing is left.
    """
    if isinstance(name_or_list, os.PathLike):
        return read_label_file(name_or_list)
    if isinstance(name_or_list, str):
        text = name_or_list.strip()
        if not text:
            raise ConfigError("the label vocabulary is empty: give a built-in vocabulary "
                              f"({', '.join(BUILTIN_VOCABULARIES)}), a comma-separated list or a "
                              "file with one label per line")
        builtin = _vocab.canonical_name(text)
        if builtin is not None:
            return _vocab.read_names(builtin)
        if Path(text).expanduser().is_file():
            return read_label_file(text)
        if "," not in text and _looks_like_path(text):
            return read_label_file(text)  # raises: no such file
        return _clean(text.split(","), f"label list {text!r}")
    if isinstance(name_or_list, (list, tuple)):
        return _clean(name_or_list, "the label list")
    raise ConfigError(f"a label vocabulary must be a name, a path, a comma-separated string or a list "
                      f"of strings, got {type(name_or_list).__name__}")


def prompt(label: str, template: str = PROMPT_TEMPLATE) -> str:
    """The text CLAP embeds for ``label``: ``"The sound of <label>"``.

    The label is used as given (not lower-cased: RoBERTa's tokenizer is cased, and the built-in
    names are capitalised as in their datasets, ``"The sound of Acoustic guitar"``).
    """
    return template.format(label)


def prompts(labels: Sequence[str], template: str = PROMPT_TEMPLATE) -> list[str]:
    return [prompt(label, template) for label in labels]


# -- scoring --------------------------------------------------------------------------------------
def _as_matrix(x: Any, what: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.to(device="cpu", dtype=torch.float32)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise ValueError(f"{what} must be (rows, dim), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} holds non-finite values (NaN or inf)")
    return t


def zero_shot_scores(audio_emb: Any, text_emb: Any,
                     logit_scale: float = LOGIT_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probs, cosines)``, both float32 ``(N, K)`` on the CPU.

    ``cosines[n, k]`` is the cosine similarity of audio row ``n`` and text row ``k`` (both are
    L2-normalised here, so raw encoder outputs are fine); ``probs = softmax(logit_scale * cosines)``
    over the ``K`` labels, so each row sums to 1. A 1-D audio embedding counts as one row.
    """
    a = _as_matrix(audio_emb, "audio embeddings")
    t = _as_matrix(text_emb, "text embeddings")
    if a.shape[1] != t.shape[1]:
        raise ValueError(f"audio embeddings are {a.shape[1]}-d but text embeddings are {t.shape[1]}-d")
    if t.shape[0] == 0:
        raise ValueError("no text embeddings: the vocabulary is empty")
    cos = F.normalize(a, dim=-1) @ F.normalize(t, dim=-1).T
    return torch.softmax(float(logit_scale) * cos, dim=-1), cos


def zero_shot(audio_emb: Any, text_emb: Any, labels: Sequence[str], top_k: int = DEFAULT_TOP_K,
              logit_scale: float = LOGIT_SCALE) -> list[list[LabelScore]]:
    """The ``top_k`` labels of each audio row, best first.

    ``audio_emb``: ``(N, D)`` (or ``(D,)``) audio embeddings; ``text_emb``: ``(K, D)`` embeddings of
    the prompts of ``labels`` (``K == len(labels)``); torch tensors or numpy arrays, normalised or
    not. Each row gives ``min(top_k, K)`` :class:`LabelScore` s: the label, its probability
    (softmax over all ``K`` labels of the cosines times ``logit_scale``) and the raw cosine. Ties
    keep vocabulary order.
    """
    labels = list(labels)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    probs, cos = zero_shot_scores(audio_emb, text_emb, logit_scale)
    if probs.shape[1] != len(labels):
        raise ValueError(f"{probs.shape[1]} text embeddings for {len(labels)} labels")
    k = min(int(top_k), len(labels))
    # a stable sort on the cosines (monotone with the probabilities, which can tie at 0 or 1 in
    # float32 where the cosines do not)
    order = torch.sort(cos, dim=-1, descending=True, stable=True).indices[:, :k]
    out: list[list[LabelScore]] = []
    for row, idx in enumerate(order.tolist()):
        out.append([LabelScore(labels[i], float(probs[row, i]), float(cos[row, i])) for i in idx])
    return out


def format_scores(row: Sequence[LabelScore], digits: int = 2) -> str:
    """``"Dog 0.91, Bark 0.05"``: one stem's labels on one line."""
    return ", ".join(f"{s.label} {s.score:.{digits}f}" for s in row)


# -- text embeddings with a cache -----------------------------------------------------------------
class TextEmbeddingCache:
    """Normalised prompt embeddings per encoder and vocabulary (float32, CPU).

    Entries are keyed by the encoder object (held weakly: an encoder that is garbage-collected
    drops its entries) and the tuple of prompts; each encoder keeps at most ``max_vocabularies``
    vocabularies, least recently used dropped first.
    """

    def __init__(self, max_vocabularies: int = 8):
        self.max_vocabularies = max_vocabularies
        self._by_encoder: "weakref.WeakKeyDictionary[Any, OrderedDict]" = weakref.WeakKeyDictionary()
        self._unweakable: dict[int, tuple[Any, OrderedDict]] = {}

    def _table(self, encoder: Any, create: bool) -> OrderedDict | None:
        try:
            table = self._by_encoder.get(encoder)
            if table is None and create:
                table = self._by_encoder[encoder] = OrderedDict()
            return table
        except TypeError:  # not weak-referenceable: keep a strong reference alongside
            entry = self._unweakable.get(id(encoder))
            if entry is None or entry[0] is not encoder:
                if not create:
                    return None
                entry = self._unweakable[id(encoder)] = (encoder, OrderedDict())
            return entry[1]

    def get(self, encoder: Any, key: tuple[str, ...]) -> torch.Tensor | None:
        table = self._table(encoder, create=False)
        if table is None or key not in table:
            return None
        table.move_to_end(key)
        return table[key]

    def put(self, encoder: Any, key: tuple[str, ...], value: torch.Tensor) -> None:
        table = self._table(encoder, create=True)
        table[key] = value
        table.move_to_end(key)
        while len(table) > max(self.max_vocabularies, 1):
            table.popitem(last=False)

    def clear(self) -> None:
        self._by_encoder.clear()
        self._unweakable.clear()

    def __len__(self) -> int:
        return sum(len(t) for t in self._by_encoder.values()) + sum(len(t) for _, t in self._unweakable.values())


TEXT_CACHE = TextEmbeddingCache()


def embed_labels(encoder: Any, labels: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
                 cache: bool | TextEmbeddingCache = True, template: str = PROMPT_TEMPLATE) -> torch.Tensor:
    """L2-normalised float32 ``(K, D)`` CPU embeddings of the prompts of ``labels``.

    The prompts go to ``encoder.embed_text`` ``batch_size`` at a time, without gradients.
    ``cache``: ``True`` uses the module's :data:`TEXT_CACHE`, ``False`` embeds every time, or a
    :class:`TextEmbeddingCache` of one's own.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    texts = prompts(labels, template)
    if not texts:
        raise ConfigError("the label vocabulary is empty")
    store = TEXT_CACHE if cache is True else (cache if isinstance(cache, TextEmbeddingCache) else None)
    key = tuple(texts)
    if store is not None:
        hit = store.get(encoder, key)
        if hit is not None:
            return hit
    parts: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, len(texts), int(batch_size)):
            batch = texts[start:start + int(batch_size)]
            emb = torch.as_tensor(encoder.embed_text(batch))
            if emb.dim() != 2 or emb.shape[0] != len(batch):
                raise ValueError(f"embed_text returned shape {tuple(emb.shape)} for {len(batch)} texts")
            parts.append(emb.detach().to(device="cpu", dtype=torch.float32))
    out = F.normalize(torch.cat(parts), dim=-1).clone()  # clone: a normal tensor, not an inference one
    if store is not None:
        store.put(encoder, key, out)
    return out


def label_stems(encoder: Any, audio_emb: Any, vocabulary: str | os.PathLike | Sequence[str] = "fsd50k",
                top_k: int = DEFAULT_TOP_K, batch_size: int = DEFAULT_BATCH_SIZE,
                cache: bool | TextEmbeddingCache = True,
                logit_scale: float = LOGIT_SCALE) -> list[list[LabelScore]]:
    """Zero-shot labels of stems: the ``top_k`` labels of each row of ``audio_emb`` ``(N, D)``.

    ``vocabulary``: anything :func:`load_vocabulary` takes. Its prompts are embedded by
    :func:`embed_labels` (batched, cached per encoder and vocabulary), then scored by
    :func:`zero_shot`.
    """
    labels = load_vocabulary(vocabulary)
    text = embed_labels(encoder, labels, batch_size=batch_size, cache=cache)
    return zero_shot(audio_emb, text, labels, top_k=top_k, logit_scale=logit_scale)


__all__ = [
    "BUILTIN_VOCABULARIES", "DEFAULT_BATCH_SIZE", "DEFAULT_TOP_K", "LOGIT_SCALE", "LabelScore",
    "PROMPT_TEMPLATE", "TEXT_CACHE", "TextEmbeddingCache", "embed_labels", "format_scores",
    "label_stems", "load_vocabulary", "prompt", "prompts", "read_label_file", "zero_shot",
    "zero_shot_scores",
]
