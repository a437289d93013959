"""Training losses as small composable terms.

Each term is a callable ``term(batch, stems) -> scalar tensor``; the trainer sums them with weights
and logs each one separately, so the CLAP-space terms plug in beside MixIT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..evaluation.sisdr import assignment_sisdr, grouping_matrices


@dataclass
class MixtureBatch:
    """One batch of mixtures of mixtures.

    ``sources`` (B, S, L): every placed source; ``groups`` (B, S): 0 for m1, 1 for m2, -1 absent.
    ``m1``, ``m2`` (B, L) and ``mix = m1 + m2``; ``labels``: per item, per group, a list of labels.
    """

    sources: torch.Tensor
    groups: torch.Tensor
    m1: torch.Tensor
    m2: torch.Tensor
    labels: list | None = None

    @property
    def mix(self) -> torch.Tensor:
        return self.m1 + self.m2

    @property
    def references(self) -> torch.Tensor:
        return torch.stack([self.m1, self.m2], dim=1)

    def to(self, device: torch.device | str) -> "MixtureBatch":
        return MixtureBatch(self.sources.to(device), self.groups.to(device), self.m1.to(device),
                            self.m2.to(device), self.labels)


def _always_one(epoch: int, epochs: int) -> float:
    return 1.0


@dataclass
class LossTerm:
    """A named loss with a weight that may depend on the training progress (epoch)."""

    name: str
    fn: Callable[[MixtureBatch, torch.Tensor], torch.Tensor]
    weight: Callable[[int, int], float] = _always_one


class MixITLoss:
    """Unsupervised MixIT: the best of all 2^M binary assignments of stems to (m1, m2).

    Loss = negative SI-SDR summed over the two mixtures, minimised over assignments, averaged over
    the batch. ``exact=True`` enumerates all 2^M assignments; ``False`` drops "everything to m2"
    as the official code does. SI-SDR is auraloss's (:mod:`macs_cli.evaluation.sisdr`), as in the
    official MixIT: a mixture left without stems scores -80 dB, so "every stem to one mixture"
    (which mixture consistency makes a constant, with no gradient) is never the minimum. Scores
    are computed in float64; the loss comes back in float32 (float64 for float64 stems).

    With ``empty_refs=True`` (training with ``mix.total_sources`` from 1, where m2 may hold no
    source) a silent reference is handled as "no source here": assignments that give it stems are
    excluded and it adds nothing to the others' score. For such an item the loss is then SI-SDR of
    all stems against m1, a constant under mixture consistency: one-source items teach only through
    other terms (the sparsity penalty), as in sparse MixIT.
    """

    name = "mixit"

    def __init__(self, num_sources: int, exact: bool = True, empty_refs: bool = False):
        mats = grouping_matrices(num_sources, 2, include_empty=True)
        if not exact:
            mats = mats[mats[:, 0].sum(-1) > 0]
        self.assignments = mats
        self.empty_refs = empty_refs

    def __call__(self, batch: MixtureBatch, stems: torch.Tensor) -> torch.Tensor:
        refs = batch.references
        scores = assignment_sisdr(stems, refs, self.assignments)
        out_dtype = torch.promote_types(stems.dtype, torch.float32)
        if not self.empty_refs:
            loss = -scores.sum(-1)                           # (B, K)
            return loss.min(dim=1).values.mean().to(out_dtype)
        centred = refs.double() - refs.double().mean(-1, keepdim=True)
        empty = centred.square().sum(-1) <= 1e-12            # (B, S)
        has = (self.assignments.to(stems.device).sum(-1) > 0)  # (K, S)
        loss = -torch.where(empty[:, None, :], torch.zeros_like(scores), scores).sum(-1)
        excluded = (empty[:, None, :] & has[None]).any(-1)   # (B, K)
        loss = loss.masked_fill(excluded, float("inf"))
        best = loss.min(dim=1).values
        best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))  # (both silent: nothing)
        return best.mean().to(out_dtype)


SPARSITY_KINDS = ("l1_l2", "l1")


class StemSparsity:
    """Activity penalty so that a source lands on few stems (sparse MixIT).

    Per item, r_m is the RMS of stem m (B, M); ``l1_l2`` (default) is sum_m r_m / sqrt(sum_m r_m^2),
    which is 1 when one stem carries everything and sqrt(M) when all are equal, scale-free (the
    L1/L2 ratio of Wisdom et al. 2021, "Sparse, efficient, and semantic mixture invariant
    training"); ``l1`` is sum_m r_m / RMS(mixture), >= 1 for mixture-consistent stems of
    uncorrelated content. Averaged over the batch; computed in float32.
    """

    name = "sparsity"

    def __init__(self, kind: str = "l1_l2", eps: float = 1e-8):
        if kind not in SPARSITY_KINDS:
            raise ValueError(f"sparsity kind must be one of {', '.join(SPARSITY_KINDS)} (got {kind!r})")
        self.kind, self.eps = kind, eps

    def __call__(self, batch: MixtureBatch, stems: torch.Tensor) -> torch.Tensor:
        x = stems.float()
        rms = (x.square().mean(-1) + self.eps).sqrt()        # (B, M)
        if self.kind == "l1_l2":
            pen = rms.sum(-1) / rms.square().sum(-1).sqrt()
        else:
            mix = batch.mix.float()
            pen = rms.sum(-1) / (mix.square().mean(-1) + self.eps).sqrt()
        return pen.mean()
