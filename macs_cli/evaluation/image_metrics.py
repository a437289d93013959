"""FID, KID and CLIP-FID from features, with clean-fid's own statistics functions.

``cleanfid.fid.compute_fid(pred, gt)`` is ``frechet_distance`` of the two folders' feature means
and covariances (``np.mean``/``np.cov`` of clean-fid's features); ``compute_kid(pred, gt)`` is
``kernel_distance(pred_feats, gt_feats)`` (100 random subsets of up to 1000 features, drawn from
numpy's global random state). These functions take the features once computed, so each image is
embedded once for FID, KID and the folds. KID is made reproducible by seeding numpy's global
generator around the call (the previous state is restored afterwards); with the same seed set
before ``compute_kid`` the numbers are identical.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from ..errors import MacsError

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


class SingularCovarianceWarning(UserWarning):
    """clean-fid added eps to the covariance diagonals (fewer images than feature dimensions)."""


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) exactly as clean-fid computes them."""
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Fréchet distance of two feature sets (clean-fid's ``frechet_distance``); order-free."""
    from cleanfid.fid import frechet_distance

    _need(feats1, feats2, "FID")
    mu1, s1 = feature_stats(feats1)
    mu2, s2 = feature_stats(feats2)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):  # clean-fid prints its singular-product notice
        value = frechet_distance(mu1, s1, mu2, s2)
    if captured.getvalue().strip():
        warnings.warn(captured.getvalue().strip(), SingularCovarianceWarning, stacklevel=2)
    return float(np.real(value))


def kid_from_features(pred_feats: np.ndarray, gt_feats: np.ndarray, seed: int | None = 0,
                      num_subsets: int = KID_SUBSETS, max_subset_size: int = KID_SUBSET_SIZE) -> float:
    """KID as ``compute_kid(fdir1=pred, fdir2=gt)``: ``kernel_distance(pred_feats, gt_feats)``.

    ``seed`` seeds numpy's global generator for the call (``None``: leave it as it is, like
    clean-fid); the caller's random state is restored afterwards.
    """
    from cleanfid.fid import kernel_distance

    _need(pred_feats, gt_feats, "KID")
    if seed is None:
        return float(kernel_distance(pred_feats, gt_feats, num_subsets, max_subset_size))
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return float(kernel_distance(pred_feats, gt_feats, num_subsets, max_subset_size))
    finally:
        np.random.set_state(state)


def _need(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise MacsError(f"{what}: feature sets must be (N, D) with the same D, "
                         f"got {a.shape} and {b.shape}")
    if min(a.shape[0], b.shape[0]) < 2:
        raise MacsError(f"{what} needs at least 2 images in each set "
                         f"(got {a.shape[0]} generated, {b.shape[0]} ground-truth)")
