"""The one on-disk cache of arrays by content hash, behind both embedding caches (``macs eval``'s
image and audio features, ``train-gen``'s stem embeddings).

``<root>/[<namespace>/]<digest[:2]>/<digest><suffix>``: one ``.npy`` (an array) or ``.npz`` (named
arrays) per entry, written atomically; a damaged entry reads as a miss and is recomputed.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from .fsutil import atomic_path


class ArrayCache:
    """Arrays by digest below ``root`` (None: nothing is kept); ``hits``/``misses`` are counted by callers."""

    suffix = ".npy"

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    def path(self, digest: str, namespace: str | None = None) -> Path:
        base = self.root if namespace is None else self.root / re.sub(r"[^A-Za-z0-9._-]+", "_", namespace)
        return base / digest[:2] / f"{digest}{self.suffix}"

    def load(self, digest: str, namespace: str | None = None):
        """The entry (an array, or a dict of arrays for ``.npz``), or None."""
        if self.root is None:
            return None
        p = self.path(digest, namespace)
        if not p.is_file():
            return None
        try:
            with open(p, "rb") as f:
                got = np.load(f, allow_pickle=False)
                return got if isinstance(got, np.ndarray) else {k: got[k] for k in got.files}
        except (OSError, ValueError, KeyError, EOFError):
            return None

    def save(self, digest: str, value, namespace: str | None = None) -> None:
        if self.root is None:
            return
        buf = io.BytesIO()
        if isinstance(value, dict):
            np.savez(buf, **value)
        else:
            np.save(buf, np.asarray(value), allow_pickle=False)
        with atomic_path(self.path(digest, namespace), overwrite=True) as tmp:   # ours, same content
            tmp.write_bytes(buf.getvalue())


__all__ = ["ArrayCache"]
