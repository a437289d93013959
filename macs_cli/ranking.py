"""Ranking stems by contextual significance (cosine of each stem's CLAP embedding to the
mixture's), and putting an embedding set into the stem order an adapter takes.

Two orders exist (the fidelity issue): ``separator``, the separator's own output order, which the
official adapters were trained on, and ``significance``, most significant first, as the paper
describes. :func:`ensure_order` turns what ``macs embed`` or ``macs rank`` wrote into either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError
from .formats import STEM_ORDERS


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation of two vectors (average ranks for ties); None where it is
    undefined (fewer than two values, or all of one vector equal)."""
    from scipy.stats import spearmanr

    if len(a) < 2 or np.all(np.asarray(a) == np.asarray(a)[0]):
        return None
    r = spearmanr(a, b).statistic
    return float(r) if np.isfinite(r) else None


@dataclass
class Ranked:
    order: list[int]           # stem indices, most significant first
    scores: list[float]        # cosine to the mixture, per original stem index
    spearman: float | None     # agreement of the scores with the separator's output order (None: undefined)
    embeddings: np.ndarray     # (K, 512) in ranked order, top_k kept


def rank_embeddings(embeddings: np.ndarray, mixture: np.ndarray, top_k: int | None = None,
                    device: str = "cpu") -> Ranked:
    """Order stems by the cosine similarity of their embedding to the mixture's (contextual
    significance); ``spearman`` compares those scores with the order M..1 the separator is trained
    to produce (1: the separator's order is exactly the significance order). The similarities are
    computed in float64 on ``device``."""
    import torch

    try:
        e = np.asarray(embeddings, dtype=np.float64)
        m = np.asarray(mixture, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError("the embeddings or the mixture embedding are not arrays of numbers") from None
    if e.ndim != 2 or e.shape[1] != m.shape[0]:
        raise ConfigError(f"embeddings of shape {e.shape} do not match a mixture embedding of size {m.shape[0]}")
    if e.shape[0] == 0:
        raise ConfigError("no stem embeddings to rank (shape (0, D))")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(m))):
        raise ConfigError("the embeddings or the mixture embedding hold NaN or infinite values")
    if not np.any(m):
        raise ConfigError("the mixture embedding is all zeros: nothing to rank against")
    if top_k is not None and not 1 <= top_k <= e.shape[0]:
        raise ConfigError(f"--top-k must be in 1..{e.shape[0]} (got {top_k})")
    et = torch.as_tensor(e, device=device)
    mt = torch.as_tensor(m, device=device)
    scores = torch.nn.functional.cosine_similarity(et, mt[None], dim=1, eps=1e-12).cpu().numpy()
    order = [int(i) for i in np.argsort(-scores, kind="stable")]
    keep = order[: top_k or len(order)]
    rho = spearman(scores, np.arange(e.shape[0], 0, -1))
    return Ranked(order, [float(s) for s in scores], rho, np.asarray(embeddings, dtype=np.float32)[keep])


def ensure_order(arr: np.ndarray, meta: dict, order: str = "significance",
                 where: str = "embeddings") -> tuple[np.ndarray, list[int] | None, dict[str, Any]]:
    """An (M, D) embedding set in ``order``: returns (array, permutation applied or None, record).

    ``macs embed`` output (its sidecar has ``mixture_embedding`` but no ``order``) is in separator
    order: ranked here for ``significance``. ``macs rank`` output (its sidecar has ``order``) is in
    significance order: put back into separator order for ``separator``, which needs every stem.
    Anything else (no sidecar, or another shape) is taken as given."""
    if order not in STEM_ORDERS:
        raise ConfigError(f"stem order must be separator or significance (got {order!r})")
    record: dict[str, Any] = {}
    perm = None
    if arr.ndim == 2 and "order" not in meta and meta.get("mixture_embedding") is not None:
        if order == "significance":
            try:
                r = rank_embeddings(arr, meta["mixture_embedding"])
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            arr, perm = r.embeddings, r.order
            record.update(ranked_here=True, order=r.order)
        else:
            record.update(ranked_here=False, order=list(range(arr.shape[0])))
        record["stem_order"] = order
    elif arr.ndim == 2 and isinstance(meta.get("order"), list):
        kept = meta.get("kept", meta["order"])
        record["ranked_here"] = False
        if order == "separator":
            m = len(meta["order"])
            if not (isinstance(kept, list) and sorted(kept) == list(range(m)) and len(kept) == arr.shape[0]):
                raise ConfigError(f"{where}: holds {arr.shape[0]} of {m} ranked stems; the adapter takes stems in "
                                  "the separator's order, which needs them all (give the `macs embed` output, "
                                  "or pass --order significance)")
            perm = [kept.index(i) for i in range(m)]
            arr = arr[perm]
            record.update(order=list(range(m)), restored_separator_order=True)
        else:
            record["order"] = kept
        record["stem_order"] = order
    else:
        record.update(ranked_here=False, stem_order="as given")
    return arr, perm, record



def order_set(found, order: str = "significance"):
    """An :class:`~macs_cli.formats.EmbeddingSet` in ``order`` (the rules of :func:`ensure_order`),
    labels following their stems -> (the set, a record of what was done)."""
    from .formats import EmbeddingSet

    arr, perm, record = ensure_order(found.array, found.meta, order, str(found.path or "embeddings"))
    meta = found.meta
    if perm is not None and found.labels is not None:
        meta = {**meta, "labels": [found.labels[i] for i in perm]}
    return EmbeddingSet(arr, meta, found.path), record


def rank_set(found, top_k: int | None = None, device: str = "cpu", source: str | None = None):
    """A ``macs embed`` set (:class:`~macs_cli.formats.EmbeddingSet` with its mixture embedding)
    -> the ranked set ``macs rank`` writes: the ``top_k`` most significant stems first, with the
    order, the scores and the Spearman agreement with the separator's order in its sidecar."""
    from .errors import MacsError
    from .formats import EmbeddingSet

    where = source or str(found.path or "embeddings")
    if found.array.ndim != 2:
        raise MacsError(f"{where}: expected an (M, D) array, got shape {found.array.shape}")
    mix = found.meta.get("mixture_embedding")
    if mix is None:
        raise MacsError(f"{where}: its sidecar holds no mixture embedding (embed a stems folder "
                        "whose manifest names the mixture)")
    try:
        r = rank_embeddings(found.array, mix, top_k)
    except ConfigError as exc:
        raise MacsError(f"{where}: {exc}") from None
    keep = r.order[: top_k or len(r.order)]
    stems = found.meta.get("stems")
    if not isinstance(stems, list) or len(stems) != len(found.array):
        stems = [f"stem {i}" for i in range(len(found.array))]
    side = {"source": where, "order": r.order, "kept": keep, "top_k": top_k, "scores": r.scores,
            "spearman_vs_separator_order": r.spearman, "stems": [stems[i] for i in keep],
            "model": found.meta.get("model"), "mixture": found.meta.get("mixture"), "mixture_embedding": mix}
    if found.labels is not None:
        side["labels"] = [found.labels[i] for i in keep]
    return EmbeddingSet(r.embeddings, side), r


__all__ = ["STEM_ORDERS", "Ranked", "rank_embeddings", "spearman", "ensure_order", "order_set", "rank_set"]
