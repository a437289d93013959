"""Training losses as small composable terms.

Each term is a callable ``term(batch, stems) -> scalar tensor``; the trainer sums them with weights
and logs each one separately, so the CLAP-space terms plug in beside MixIT.
"""

from __future__ import annotations

from dataclasses import dataclass

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


class MixITLoss:
    """Unsupervised MixIT: the best of all 2^M binary assignments of stems to (m1, m2).

    Loss = negative SI-SDR summed over the two mixtures, minimised over assignments, averaged over
    the batch. ``exact=True`` enumerates all 2^M assignments; ``False`` drops "everything to m2"
    as the official code does. SI-SDR is auraloss's (:mod:`macs_cli.evaluation.sisdr`), as in the
    official MixIT: a mixture left without stems scores -80 dB, so "every stem to one mixture"
    (which mixture consistency makes a constant, with no gradient) is never the minimum. Scores
    are computed in float64; the loss comes back in float32 (float64 for float64 stems).
    """

    name = "mixit"

    def __init__(self, num_sources: int, exact: bool = True):
        mats = grouping_matrices(num_sources, 2, include_empty=True)
        if not exact:
            mats = mats[mats[:, 0].sum(-1) > 0]
        self.assignments = mats

    def __call__(self, batch: MixtureBatch, stems: torch.Tensor) -> torch.Tensor:
        scores = assignment_sisdr(stems, batch.references, self.assignments)
        loss = -scores.sum(-1)                               # (B, K)
        return loss.min(dim=1).values.mean().to(torch.promote_types(stems.dtype, torch.float32))
