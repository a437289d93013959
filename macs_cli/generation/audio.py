"""Mixture audio -> ranked stem embeddings: separate -> embed -> rank, the project's own stages.

    from macs_cli.generation.audio import AudioEmbedder

    embedder = AudioEmbedder(separator="default", clap="default", device="cuda")
    stems = embedder.embed("mix.wav")          # StemEmbeddings: (M, 512) in stem order + mixture
    ranked = stems.ranked(top_k=3)             # (3, 512), most significant first

Stems are written by :func:`~macs_cli.separation.api.separate_file` into a temporary folder that is
removed afterwards. Models are loaded on first use and kept for the next file.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class StemEmbeddings:
    stems: np.ndarray            # (M, 512) float32, the separator's stem order
    mixture: np.ndarray          # (512,) float32
    info: dict[str, Any] = field(default_factory=dict)

    def ranked(self, top_k: int | None = None, rank: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
        """Stems most significant first (cosine to the mixture), the first ``top_k`` kept; with
        ``rank=False`` the separator's order is kept (the official code's behaviour)."""
        from ..clap.api import rank_embeddings

        if not rank:
            k = top_k or self.stems.shape[0]
            return self.stems[:k], {"order": list(range(self.stems.shape[0]))[:k], "ranked": False}
        r = rank_embeddings(self.stems, self.mixture, top_k)
        return r.embeddings, {"order": r.order[: top_k or len(r.order)], "scores": r.scores,
                              "spearman_vs_separator_order": r.spearman, "ranked": True}


def tensor_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over a model's state dict (names and float32 bytes): a content id for cache keys."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        t = v.detach().to("cpu")
        t = t.float() if t.is_floating_point() else t
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


class AudioEmbedder:
    """Separator + CLAP, loaded lazily; :meth:`embed` turns a mixture file into stem embeddings."""

    def __init__(self, separator: str | None = "default", clap: str | None = "default",
                 device: str | torch.device = "cpu", allow_download: bool = False, batch_size: int = 8):
        self.separator_spec = separator or "default"
        self.clap_spec = clap or "default"
        self.device = device
        self.allow_download = allow_download
        self.batch_size = batch_size
        self._separator = None
        self._clap = None
        self._ids: dict[str, str] = {}

    @property
    def separator(self):
        if self._separator is None:
            from ..weights.separator import load_separator

            self._separator = load_separator(self.separator_spec, device=self.device)
        return self._separator

    @property
    def clap(self):
        if self._clap is None:
            from ..clap import load_clap

            self._clap = load_clap(self.clap_spec, device=self.device, allow_download=self.allow_download)
        return self._clap

    def model_ids(self) -> dict[str, str]:
        """Content fingerprints of the two models (computed once)."""
        if not self._ids:
            self._ids = {"separator": tensor_fingerprint(self.separator),
                         "clap": tensor_fingerprint(self.clap.model if hasattr(self.clap, "model") else self.clap)}
        return self._ids

    def describe(self) -> dict[str, Any]:
        return {"separator": getattr(self.separator, "source", self.separator_spec),
                "separator_sources": self.separator.config.num_sources,
                "clap": getattr(self.clap, "source", self.clap_spec),
                **{f"{k}_sha256": v for k, v in self.model_ids().items()}}

    def embed(self, path: str | Path) -> StemEmbeddings:
        from ..clap.api import embed_stems
        from ..separation.api import SeparateOptions, separate_file

        path = Path(path)
        work = Path(tempfile.mkdtemp(prefix="macs-stems-"))
        try:
            manifest = separate_file(self.separator, path, work, SeparateOptions(), name="stems")
            files = [work / "stems" / s["file"] for s in manifest["stems"]]
            res = embed_stems(self.clap, files, path, batch_size=self.batch_size)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        info = {"audio": str(path), "duration_s": manifest.get("duration_s"), "stems": len(files)}
        return StemEmbeddings(res.embeddings.astype(np.float32), res.mixture.astype(np.float32), info)
