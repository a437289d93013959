"""Scale-invariant SDR and its assignment searches, shared by the MixIT loss and the evaluation.

Everything is computed from inner products, so every assignment of M stems to S references is
scored without materialising the summed estimates:

    <A_j s, r_j> = sum_m A_jm <s_m, r_j>         ||A_j s||^2 = A_j G A_j^T,  G = s s^T

* grouped: each stem goes to exactly one reference (S^M assignments; MixIT uses this with S = 2)
* one-to-one: S distinct stems, one per reference, the other stems dropped

The definition is auraloss's ``SISDRLoss`` (negated), which the official MACS MixIT uses: with
zero-mean signals, ``a = <e, r> / (||r||^2 + eps)``, ``t = a r``,

    SI-SDR = 10 log10(||t||^2 / (||e - t||^2 + eps) + eps),     eps = 1e-8

so an all-zero estimate (an empty group of stems) scores 10 log10(eps) = -80 dB: an assignment that
leaves a mixture without stems never wins MixIT's minimum. The inner products are taken in float64
whatever the input dtype: ``||e - t||^2 = ||e||^2 - 2 a <e, r> + a^2 ||r||^2`` cancels, and in float32
that costs about 0.5 dB at 50 dB SI-SDR.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import torch

EPS = 1e-8


def _zero_mean(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=-1, keepdim=True)


def si_sdr(est: torch.Tensor, ref: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """SI-SDR in dB over the last axis (zero-mean signals)."""
    est, ref = _zero_mean(est.double()), _zero_mean(ref.double())
    dot = (est * ref).sum(-1)
    rr = (ref * ref).sum(-1)
    ee = (est * est).sum(-1)
    return _sisdr_from_stats(dot, ee, rr, eps)


def _sisdr_from_stats(dot: torch.Tensor, ee: torch.Tensor, rr: torch.Tensor, eps: float) -> torch.Tensor:
    """auraloss's SI-SDR from <e, r>, ||e||^2 and ||r||^2 (see the module doc)."""
    alpha = dot / (rr + eps)
    target = alpha.square() * rr
    noise = (ee - 2.0 * alpha * dot + target).clamp_min(0.0)
    return 10.0 * torch.log10(target / (noise + eps) + eps)


@lru_cache(maxsize=32)
def grouping_matrices(num_stems: int, num_refs: int, include_empty: bool = True) -> torch.Tensor:
    """All (K, S, M) binary matrices assigning each of M stems to one of S references."""
    rows = []
    for assign in itertools.product(range(num_refs), repeat=num_stems):
        if not include_empty and len(set(assign)) < num_refs:
            continue
        a = torch.zeros(num_refs, num_stems)
        a[list(assign), list(range(num_stems))] = 1.0
        rows.append(a)
    return torch.stack(rows)


@lru_cache(maxsize=32)
def one_to_one_matrices(num_stems: int, num_refs: int) -> torch.Tensor:
    """All (K, S, M) matrices picking S distinct stems, one per reference."""
    rows = []
    for pick in itertools.permutations(range(num_stems), num_refs):
        a = torch.zeros(num_refs, num_stems)
        a[list(range(num_refs)), list(pick)] = 1.0
        rows.append(a)
    return torch.stack(rows)


def assignment_sisdr(stems: torch.Tensor, refs: torch.Tensor, assignments: torch.Tensor,
                     eps: float = EPS) -> torch.Tensor:
    """SI-SDR of every assignment: stems (B, M, T), refs (B, S, T), assignments (K, S, M).

    Returns (B, K, S) in dB, float64 (the inner products are taken in float64; gradients flow back
    into ``stems`` in their own dtype).
    """
    stems, refs = _zero_mean(stems.double()), _zero_mean(refs.double())
    a = assignments.to(device=stems.device, dtype=stems.dtype)
    gram = stems @ stems.transpose(1, 2)                 # (B, M, M)
    cross = stems @ refs.transpose(1, 2)                 # (B, M, S)
    rr = refs.square().sum(-1)                           # (B, S)
    dot = torch.einsum("ksm,bms->bks", a, cross)         # (B, K, S)
    ee = torch.einsum("ksm,bmn,ksn->bks", a, gram, a)    # (B, K, S)
    return _sisdr_from_stats(dot, ee, rr[:, None, :], eps)


def best_grouped_sisdr(stems: torch.Tensor, refs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SI-SDR over references under the best grouping of stems; returns (B,) dB, (B, S, M)."""
    mats = grouping_matrices(stems.shape[1], refs.shape[1], include_empty=False)
    scores = assignment_sisdr(stems.double(), refs.double(), mats).mean(-1)
    best = scores.argmax(dim=1)
    return scores.gather(1, best[:, None]).squeeze(1), mats[best.cpu()]


def best_one_to_one_sisdr(stems: torch.Tensor, refs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SI-SDR over references under the best one-to-one stem choice; (B,) dB, (B, S, M)."""
    if stems.shape[1] < refs.shape[1]:
        raise ValueError("one-to-one assignment needs at least as many stems as references")
    mats = one_to_one_matrices(stems.shape[1], refs.shape[1])
    scores = assignment_sisdr(stems.double(), refs.double(), mats).mean(-1)
    best = scores.argmax(dim=1)
    return scores.gather(1, best[:, None]).squeeze(1), mats[best.cpu()]


def mixture_sisdr(mix: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Mean SI-SDR of the unprocessed mixture against each reference: (B,) dB."""
    return si_sdr(mix[:, None, :].expand_as(refs), refs).mean(-1)


def matched_sisdr(est: torch.Tensor, refs: torch.Tensor) -> float:
    """Mean SI-SDR (dB) over the S references of one item's K estimates (K, T), each reference
    matched to one estimate: with K >= S the best one-to-one choice (the other estimates dropped);
    with K < S every estimate serves at least one reference and a reference may share an estimate
    with others (it is scored against the estimate that carries it, other sources included)."""
    k, s = est.shape[0], refs.shape[0]
    if k == 0:
        raise ValueError("no estimates")
    table = si_sdr(est.double()[:, None, :].expand(k, s, -1), refs.double()[None].expand(k, s, -1))  # (K, S)
    if k >= s:
        mats = one_to_one_matrices(k, s)                       # (P, S, K)
        return float((mats.double() * table.T[None]).sum(-1).sum(-1).max() / s)
    best = -float("inf")
    for assign in itertools.product(range(k), repeat=s):       # reference -> estimate, onto
        if len(set(assign)) == k:
            best = max(best, float(sum(table[a, j] for j, a in enumerate(assign))) / s)
    return best
