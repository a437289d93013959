"""Differentiable ranks and Spearman correlation for the CLAP ranking loss.

:func:`soft_rank` returns *ascending* ranks ``1..M`` along the last dimension of a ``(B, M)``
tensor (the largest value gets rank ``M``), the convention of ``torchsort.soft_rank``.

Two implementations with the same semantics:

- ``torchsort`` (used when it is importable and supports the tensor's device): the projection of
  ``x / strength`` onto the permutahedron with L2 regularisation (Blondel et al. 2020). It returns
  exact hard ranks as soon as neighbouring sorted values differ by at least ``strength``, and is
  piecewise affine in ``x`` otherwise.
- ``pairwise`` (our fallback, pure torch): ``rank_i = 1 + sum_{j != i} sigmoid((x_i - x_j) / strength)``.
  As ``strength -> 0`` each sigmoid becomes a step, so the ranks become hard ranks, ties counting
  one half each (= average ranks, scipy's convention). Its error against hard ranks is at most
  ``(M - 1) * sigmoid(-gap / strength)`` per element, where ``gap`` is the smallest distance between
  two values. Like torchsort's, its ranks always sum to ``M (M + 1) / 2`` and preserve the order of
  ``x``. It costs O(M^2) per row, which is nothing for the M = 6 stems of MACS.

At the same ``regularization_strength`` the two are *not* equal (each smooths differently); both
converge to the hard ranks as the strength goes to 0 (see ``tests/test_clap_losses.py``).
"""

from __future__ import annotations

import warnings

import torch

try:  # torchsort is optional: its compiled extension may be missing, or built without CUDA
    import torchsort as _torchsort
except Exception:  # ImportError, or an OSError/undefined symbol from a mismatched build
    _torchsort = None

BACKENDS = ("auto", "torchsort", "pairwise")
_warned: set[str] = set()


def torchsort_available() -> bool:
    return _torchsort is not None


def pairwise_soft_rank(x: torch.Tensor, regularization_strength: float = 1.0) -> torch.Tensor:
    """Ascending soft ranks ``1 + sum_{j != i} sigmoid((x_i - x_j) / strength)`` of ``(B, M)`` values."""
    if regularization_strength <= 0:
        raise ValueError("regularization_strength must be > 0")
    diff = (x.unsqueeze(-1) - x.unsqueeze(-2)) / regularization_strength   # (B, M, M): x_i - x_j
    # the diagonal contributes sigmoid(0) = 1/2: rank_i = 1/2 + sum_j sigmoid(...)
    return 0.5 + torch.sigmoid(diff).sum(-1)


def soft_rank(x: torch.Tensor, regularization_strength: float = 1.0, backend: str = "auto") -> torch.Tensor:
    """Differentiable ascending ranks (1..M) of each row of ``x`` (B, M).

    ``backend``: ``auto`` (torchsort when it is installed and supports the device, else the
    pairwise fallback, with a one-time warning), ``torchsort`` or ``pairwise``.
    """
    if x.dim() != 2:
        raise ValueError(f"soft_rank expects a (B, M) tensor, got {tuple(x.shape)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "pairwise":
        return pairwise_soft_rank(x, regularization_strength)
    if _torchsort is None:
        if backend == "torchsort":
            raise ImportError("torchsort is not installed")
        _warn_once("torchsort is not installed: using the pairwise-sigmoid soft rank")
        return pairwise_soft_rank(x, regularization_strength)
    try:
        return _torchsort.soft_rank(x, regularization_strength=float(regularization_strength))
    except ImportError:  # the CPU-only build raises this for CUDA tensors
        if backend == "torchsort":
            raise
        _warn_once(f"torchsort has no {x.device.type} extension: using the pairwise-sigmoid soft rank")
        return pairwise_soft_rank(x, regularization_strength)


def hard_rank(x: torch.Tensor) -> torch.Tensor:
    """Ascending average ranks (ties share the mean of their ranks), as ``scipy.stats.rankdata``."""
    greater = (x.unsqueeze(-1) > x.unsqueeze(-2)).sum(-1)
    equal = (x.unsqueeze(-1) == x.unsqueeze(-2)).sum(-1)
    return (greater + 0.5 * (equal - 1) + 1).to(x.dtype if x.is_floating_point() else torch.float32)


def spearman(pred_ranks: torch.Tensor, target_ranks: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-row Pearson correlation of two rank tensors (B, M) -> (B,), i.e. Spearman's rho.

    Each row is centred and L2-normalised; a constant row has correlation 0 (``eps``).
    """
    p = pred_ranks - pred_ranks.mean(-1, keepdim=True)
    t = target_ranks.to(p) - target_ranks.to(p).mean(-1, keepdim=True)
    return (p * t).sum(-1) / (p.norm(dim=-1) * t.norm(dim=-1)).clamp_min(eps)


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


__all__ = ["BACKENDS", "hard_rank", "pairwise_soft_rank", "soft_rank", "spearman", "torchsort_available"]
