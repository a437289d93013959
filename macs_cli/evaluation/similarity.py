"""AIS / IIS and their z-scores from embeddings computed once.

For query embeddings q_i (Wav2CLIP of the audio for AIS, CLIP of the ground-truth frame for IIS)
and CLIP embeddings g of the generated images, with s(x, y) the cosine similarity:

* score_i = s(q_i, g_{m(i)}) where m(i) is row i's own generated image;
* z_i = (score_i - mean_{j in C_i} s(q_i, g_j)) / std_{j in C_i} s(q_i, g_j), where the
  calibration set C_i holds the *other* generated images: those of other clips (the official
  scripts drop every image whose name contains the query's clip id). With one row per clip this
  is simply j != i. ``std`` is the population standard deviation (numpy's default, as there).
* AIS / IIS = mean of score_i, AIS-z / IIS-z = mean of z_i: over rows (IIS, as the official
  ``iis.py``: one row per ground-truth frame), or, with ``per_clip`` (AIS, as the official
  ``ais.py``: one row per audio clip), over clips, each clip the mean of its rows, so a clip with
  four frames weighs as much as a clip with one.

The official per-query scripts embed the N - 1 other images again for every query (N^2 image
forward passes in all); here the whole (N, U) similarity matrix comes from one matrix product of
embeddings computed once, and the calibration statistics from masked row sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MacsError


@dataclass
class SimilarityResult:
    score: float              # AIS or IIS
    z: float                  # AIS-z or IIS-z
    scores: np.ndarray        # (N,) per row
    zs: np.ndarray            # (N,) per row


def normalize(x: np.ndarray) -> np.ndarray:
    """Unit rows in float64 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def similarity_scores(query: np.ndarray, gen: np.ndarray, gen_index: np.ndarray | None = None,
                      row_clips: np.ndarray | None = None,
                      gen_clips: np.ndarray | None = None, per_clip: bool = False) -> SimilarityResult:
    """AIS/IIS-style matched similarity and z-score.

    ``query`` (N, D) and ``gen`` (U, D) embeddings; ``gen_index[i]`` is row i's own generated image
    (default: i, with U == N); ``row_clips`` (N,) and ``gen_clips`` (U,) are clip ids (default:
    all different), and row i is calibrated against the generated images of the other clips.
    ``per_clip``: the two averages are taken over clips (each the mean of its rows), not rows.
    """
    q, g = normalize(query), normalize(gen)
    n, u = q.shape[0], g.shape[0]
    if n == 0:
        raise MacsError("similarity: no rows to score")
    gen_index = np.arange(n) if gen_index is None else np.asarray(gen_index)
    if gen_index.shape != (n,) or gen_index.max(initial=0) >= u:
        raise MacsError("similarity: gen_index must give one generated image per row")
    if row_clips is None or gen_clips is None:
        if u != n:
            raise MacsError("similarity: clip ids are needed when rows and images differ")
        row_clips = np.arange(n)
        gen_clips = np.arange(u)
    sim = q @ g.T                                           # (N, U)
    scores = sim[np.arange(n), gen_index]
    others = np.asarray(gen_clips)[None, :] != np.asarray(row_clips)[:, None]
    count = others.sum(1)
    if (count < 2).any():
        raise MacsError("z-scores need generated images of at least 2 other clips per row "
                        f"(smallest calibration set: {int(count.min())})")
    mean = np.where(others, sim, 0.0).sum(1) / count
    var = np.where(others, (sim - mean[:, None]) ** 2, 0.0).sum(1) / count
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        zs = (scores - mean) / std
    if per_clip:
        return SimilarityResult(clip_mean(scores, row_clips), clip_mean(zs, row_clips), scores, zs)
    return SimilarityResult(float(scores.mean()), float(np.mean(zs)), scores, zs)


def clip_mean(values: np.ndarray, clips: np.ndarray) -> float:
    """The mean over clips of each clip's mean value (rows grouped by ``clips``)."""
    groups: dict = {}
    for v, c in zip(np.asarray(values, dtype=np.float64), np.asarray(clips, dtype=object)):
        groups.setdefault(c, []).append(v)
    return float(np.mean([np.mean(v) for v in groups.values()]))
