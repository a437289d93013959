"""MACS stage-1 CLAP-space losses: semantic matching (contrastive) and contextual significance (rank).

Both compare the separator's stems with a frozen CLAP model (see ``docs/method.md``):

- Texts. Per batch item, the labels of the clips in m1 and in m2 each give up to
  ``clap.labels_per_mixture`` texts ``"The sound of <label>"`` (the official FSD50K recipe: 5, so
  10 texts per item), or, when that is null, ``ceil(M/2)`` (m1) and ``floor(M/2)`` (m2) (repeated
  labels once, in order; more are cut), each mixture's list padded with ``"Noise"``. A clip
  without labels contributes nothing, so an unlabelled mixture gives only ``"Noise"`` texts.
- Audio. Stems (B, M, L) at the model rate are resampled to 48 kHz and repeat-padded to 10 s
  (:func:`macs_cli.clap.to_clap_input`), embedded by the frozen encoder with gradients flowing
  through it into the stems, and L2-normalised: ``a`` (B, M, D). The mixture ``m = m1 + m2`` is
  embedded the same way without gradients (it does not depend on the separator).
- Contrastive loss (:func:`align_loss`): ``w = softmax(tau1 a t^T)`` over the M texts,
  ``t' = normalise(w t)``, ``logits = exp(tau2) a t'^T`` (B, M, M), the mean of the cross-entropies
  of rows and of columns against the identity. ``tau1 = 100`` is fixed, ``tau2`` is learnable
  (:class:`AlignLoss` holds it as a parameter, init ``log(1/0.07)``).
- Rank loss (:func:`rank_loss`): ``S_i = cos(a_i, CLAP(m))``; ``1 - spearman(soft_rank(S), r*)``
  with ``r* = (M, M-1, ..., 1)``, averaged over the batch: stem 0 should be the one most similar
  to the mixture. (The official code normalises the ranks over the whole batch at once, which
  weights rows by the spread of their soft ranks; here each row is one Spearman correlation.)
- Curriculum (:func:`clap_alpha`): ``L = (1 - alpha) MixIT + alpha (align + rank)``,
  ``alpha = epoch / (epochs - 1)``; with a single epoch, that epoch is the last and ``alpha = 1``.

Text embeddings are cached per unique text (CLAP is frozen, so they never change). The stems'
and mixture's embeddings are computed once per (batch, stems) pair and shared by both terms.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..clap import normalize, to_clap_input
from .losses import LossTerm, MixtureBatch
from .softrank import soft_rank, spearman

if TYPE_CHECKING:
    from .config import ClapConfig

TEMPLATE = "The sound of {}"
FILLER = "Noise"
TAU1 = 100.0
TAU2_INIT = math.log(1 / 0.07)  # 2.6593


# -- texts ----------------------------------------------------------------------------------------
def texts_per_mixture(num_texts: int, groups: int = 2) -> list[int]:
    """How many texts each source mixture gets: M split as evenly as possible, m1 first."""
    return [num_texts // groups + (1 if g < num_texts % groups else 0) for g in range(groups)]


def label_texts(labels: Sequence[Sequence[str]] | None, num_texts: int, template: str = TEMPLATE,
                filler: str = FILLER, lowercase: bool = True, per_mixture: int | None = None) -> list[str]:
    """One batch item's texts: ``labels`` is ``[labels of m1's clips, labels of m2's clips]``.

    Each mixture's labels (underscores to spaces, stripped, lower-cased if ``lowercase``, repeats
    dropped) are cut to its share of the texts, formatted with ``template`` and padded with
    ``filler``. The share: ``per_mixture`` texts each when given (the official FSD50K recipe: 5 per
    clip, 10 per mixture of mixtures), else ``num_texts`` split evenly (:func:`texts_per_mixture`).
    """
    groups = list(labels) if labels else [[], []]
    shares = [int(per_mixture)] * len(groups) if per_mixture else texts_per_mixture(num_texts, len(groups))
    out: list[str] = []
    for labs, k in zip(groups, shares):
        seen: list[str] = []
        for lab in labs or []:
            lab = str(lab).replace("_", " ").strip()
            lab = lab.lower() if lowercase else lab
            if lab and lab not in seen:
                seen.append(lab)
        texts = [template.format(lab) for lab in seen[:k]]
        out += texts + [filler] * (k - len(texts))
    return out


# -- the two losses as functions ------------------------------------------------------------------
def align_loss(audio: torch.Tensor, text: torch.Tensor, tau2: torch.Tensor | float,
               tau1: float = TAU1) -> torch.Tensor:
    """Semantic-matching loss of audio (B, M, D) against texts (B, K, D) (both normalised here).

    ``w = softmax(tau1 a t^T)``; ``t' = normalise(w t)``; ``logits = exp(tau2) a t'^T``;
    ``(CE(logits, I) + CE(logits^T, I)) / 2``, each cross-entropy averaged over B and M.
    """
    a, t = normalize(audio), normalize(text)
    w = torch.softmax(tau1 * a @ t.transpose(1, 2), dim=-1)            # (B, M, K)
    t2 = normalize(w @ t)                                               # (B, M, D)
    scale = tau2.exp() if torch.is_tensor(tau2) else math.exp(tau2)
    logits = scale * a @ t2.transpose(1, 2)                             # (B, M, M)
    b, m, _ = logits.shape
    target = torch.arange(m, device=logits.device).repeat(b)
    rows = F.cross_entropy(logits.reshape(b * m, m), target)
    cols = F.cross_entropy(logits.transpose(1, 2).reshape(b * m, m), target)
    return 0.5 * (rows + cols)


def rank_target(num: int, batch: int = 1, device=None) -> torch.Tensor:
    """``r* = (M, M-1, ..., 1)``: output channel 0 is the most significant stem."""
    return torch.arange(num, 0, -1, device=device, dtype=torch.float32).expand(batch, num)


def rank_loss(audio: torch.Tensor, mixture: torch.Tensor, regularization_strength: float = 1.0,
              backend: str = "auto") -> torch.Tensor:
    """Contextual-significance loss: stems (B, M, D) against their mixture (B, D).

    ``S_i = cos(a_i, m)``; mean over the batch of ``1 - spearman(soft_rank(S), (M, ..., 1))``.
    """
    sim = F.cosine_similarity(audio, mixture.unsqueeze(1).to(audio), dim=-1)   # (B, M)
    ranks = soft_rank(sim, regularization_strength, backend)
    target = rank_target(sim.shape[1], sim.shape[0], sim.device).to(ranks.dtype)
    return (1.0 - spearman(ranks, target)).mean()


def clap_alpha(epoch: int, epochs: int) -> float:
    """Curriculum weight of the CLAP terms: ``epoch / (epochs - 1)`` in [0, 1]; 1 for one epoch."""
    if epochs <= 1:
        return 1.0
    return min(1.0, max(0.0, epoch / (epochs - 1)))


def mixit_weight(epoch: int, epochs: int) -> float:
    return 1.0 - clap_alpha(epoch, epochs)


# -- the frozen encoder, shared by both terms -----------------------------------------------------
class ClapSpace:
    """Embeds stems, mixtures and label texts with a frozen CLAP encoder.

    ``batch_chunk``: embed at most this many waveforms per encoder call, each call under
    activation checkpointing (recomputed in the backward pass), so that CLAP's activation memory
    grows with the chunk rather than with B x M. ``None``: all at once, no recomputation.
    """

    def __init__(self, encoder: Any, sample_rate: int, num_sources: int, batch_chunk: int | None = None,
                 template: str = TEMPLATE, filler: str = FILLER, lowercase: bool = True,
                 labels_per_mixture: int | None = None):
        self.encoder, self.sample_rate, self.num_sources = encoder, int(sample_rate), int(num_sources)
        self.batch_chunk = batch_chunk
        self.template, self.filler, self.lowercase = template, filler, lowercase
        self.labels_per_mixture = labels_per_mixture
        self._text_cache: dict[str, torch.Tensor] = {}
        self._key: tuple[Any, Any] | None = None
        self._value: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    # texts
    def texts(self, labels: list | None, batch_size: int) -> list[list[str]]:
        rows = labels if labels is not None else [None] * batch_size
        return [label_texts(r, self.num_sources, self.template, self.filler, self.lowercase, self.labels_per_mixture)
                for r in rows]

    def embed_texts(self, texts: Sequence[Sequence[str]]) -> torch.Tensor:
        """Texts (B lists of K) -> normalised (B, K, D); every unique text is embedded once, ever."""
        missing = sorted({t for row in texts for t in row if t not in self._text_cache})
        if missing:
            with torch.no_grad():
                emb = normalize(self.encoder.embed_text(missing).float())
            self._text_cache.update({t: e for t, e in zip(missing, emb)})
        return torch.stack([torch.stack([self._text_cache[t] for t in row]) for row in texts])

    def text_embeddings(self, batch: MixtureBatch) -> torch.Tensor:
        return self.embed_texts(self.texts(batch.labels, batch.m1.shape[0]))

    # audio
    def _embed(self, wav: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed_audio(to_clap_input(wav, self.sample_rate)).float()

    def embed_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveforms (N, T) at the model rate -> normalised (N, D), differentiable w.r.t. ``wav``."""
        wav = wav.to(self.device)
        n, chunk = wav.shape[0], self.batch_chunk
        if not chunk or chunk >= n or not (torch.is_grad_enabled() and wav.requires_grad):
            if chunk and chunk < n:  # no gradients needed: chunk only to bound memory
                return normalize(torch.cat([self._embed(wav[i: i + chunk]) for i in range(0, n, chunk)]))
            return normalize(self._embed(wav))
        from torch.utils.checkpoint import checkpoint

        parts = [checkpoint(self._embed, wav[i: i + chunk], use_reentrant=False) for i in range(0, n, chunk)]
        return normalize(torch.cat(parts))

    def embeddings(self, batch: MixtureBatch, stems: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stems' embeddings (B, M, D) with gradients, mixture embeddings (B, D) without).

        Computed once per (batch, stems) pair: the align and rank terms of one step share them.
        """
        if self._key is not None and self._key[0] is batch and self._key[1] is stems:
            return self._value
        b, m, length = stems.shape
        a = self.embed_audio(stems.reshape(b * m, length)).reshape(b, m, -1)
        with torch.no_grad():
            mix = self.embed_audio(batch.mix.detach())
        self._key, self._value = (batch, stems), (a, mix)
        return a, mix

    def clear(self) -> None:
        self._key = self._value = None


# -- the loss terms -------------------------------------------------------------------------------
class AlignLoss(nn.Module):
    """The contrastive term as a module: ``tau2`` is a learnable parameter (trained and checkpointed
    with the separator, but not part of its weights)."""

    def __init__(self, space: ClapSpace, tau1: float = TAU1, tau2_init: float = TAU2_INIT):
        super().__init__()
        self.space, self.tau1 = space, float(tau1)
        self.tau2 = nn.Parameter(torch.tensor(float(tau2_init)))

    def forward(self, batch: MixtureBatch, stems: torch.Tensor) -> torch.Tensor:
        a, _ = self.space.embeddings(batch, stems)
        t = self.space.text_embeddings(batch).to(a)
        return align_loss(a, t, self.tau2, self.tau1)


class RankLoss:
    def __init__(self, space: ClapSpace, regularization_strength: float = 1.0, backend: str = "auto"):
        self.space, self.strength, self.backend = space, float(regularization_strength), backend

    def __call__(self, batch: MixtureBatch, stems: torch.Tensor) -> torch.Tensor:
        a, mix = self.space.embeddings(batch, stems)
        return rank_loss(a, mix, self.strength, self.backend)


def build_clap_terms(clap: "ClapConfig", encoder: Any, sample_rate: int, num_sources: int):
    """The ``align`` and ``rank`` loss terms (weights ``alpha``) from a config's ``clap`` section.

    Returns ``(terms, space)``; the caller sets MixIT's weight to :func:`mixit_weight`.
    """
    space = ClapSpace(encoder, sample_rate, num_sources, clap.batch_chunk, clap.text_template, clap.filler,
                      clap.lowercase, clap.labels_per_mixture)
    align = AlignLoss(space, clap.tau1, clap.tau2_init)
    rank = RankLoss(space, clap.rank_regularization, clap.soft_rank)
    return [LossTerm("align", align, clap_alpha), LossTerm("rank", rank, clap_alpha)], space


__all__ = ["AlignLoss", "ClapSpace", "FILLER", "RankLoss", "TAU1", "TAU2_INIT", "TEMPLATE", "align_loss",
           "build_clap_terms", "clap_alpha", "label_texts", "mixit_weight", "rank_loss", "rank_target",
           "texts_per_mixture"]
