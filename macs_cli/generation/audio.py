"""Mixture audio -> stem embeddings: separate -> embed (-> rank), the project's own stages.

    from macs_cli.generation.audio import AudioEmbedder

    embedder = AudioEmbedder(separator="default", clap="default", device="cuda")
    stems = embedder.embed("mix.wav")          # StemEmbeddings: (M, 512) in stem order + mixture
    ranked = stems.ranked(top_k=3)             # (3, 512), most significant first

The stems stay in memory (:func:`~macs_cli.separation.api.separate_to_memory`: the stems
``macs separate`` would write, nothing written). Models are loaded on first use and kept for the
next file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..formats import STEM_ORDERS

PAD_MODES = ("zeros", "reflect")


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
            return self.stems[:k], {"order": list(range(self.stems.shape[0]))[:k], "ranked": False,
                                    "stem_order": "separator"}
        r = rank_embeddings(self.stems, self.mixture, top_k)
        return r.embeddings, {"order": r.order[: top_k or len(r.order)], "scores": r.scores,
                              "spearman_vs_separator_order": r.spearman, "ranked": True,
                              "stem_order": "significance"}

    def ordered(self, order: str, top_k: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """The stems in ``order``: ``separator`` (the separator's own output order, what the official
        adapters were trained on) or ``significance`` (cosine to the mixture, best first)."""
        if order not in STEM_ORDERS:
            raise ValueError(f"order must be one of {STEM_ORDERS}, got {order!r}")
        return self.ranked(top_k, rank=order == "significance")


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
                 device: str | torch.device = "cpu", allow_download: bool = False, batch_size: int = 8,
                 precision: str = "auto", window_pad: str | None = None):
        """``precision``: of the separator and of CLAP (``auto``, ``fp32``, ``bf16``, ``fp16``; see
        :mod:`macs_cli.precision`). ``window_pad``: ``None`` separates the clip as it is; ``zeros``
        or ``reflect`` first pads a clip shorter than the separator's window to one window (at the
        model's rate), as the official pipeline does, so the stems are whole windows."""
        from ..precision import check_precision

        if window_pad not in (None, *PAD_MODES):
            raise ValueError(f"window_pad must be None or one of {PAD_MODES}, got {window_pad!r}")
        self.separator_spec = separator or "default"
        self.clap_spec = clap or "default"
        self.device = device
        self.allow_download = allow_download
        self.batch_size = batch_size
        self.precision = check_precision(precision)
        self.window_pad = window_pad
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

    def precisions(self) -> dict[str, str]:
        """The precision each stage runs in on this device (``auto`` resolved)."""
        from ..precision import resolve_precision

        dev = next(self.separator.parameters()).device
        return {"separator": resolve_precision(self.precision, dev, "separator", self.separator.config.name),
                "clap": resolve_precision(self.precision, self.clap.device, "clap")}

    def cache_ids(self) -> dict[str, str]:
        """What the embeddings of a file depend on besides the file: the models and the settings."""
        p = self.precisions()
        return {**self.model_ids(),
                "settings": f"precision={p['separator']},{p['clap']};window_pad={self.window_pad}"}

    def describe(self) -> dict[str, Any]:
        return {"separator": getattr(self.separator, "source", self.separator_spec),
                "separator_sources": self.separator.config.num_sources,
                "clap": getattr(self.clap, "source", self.clap_spec),
                **{f"{k}_sha256": v for k, v in self.model_ids().items()},
                "precision": self.precisions(), "window_pad": self.window_pad}

    def embed(self, path: str | Path) -> StemEmbeddings:
        from ..clap.api import embed_clips, read_clip
        from ..precision import autocast
        from ..separation.api import SeparateOptions, separate_to_memory, separate_waveform

        path = Path(path)
        opts = SeparateOptions(precision=self.precision)
        padded = self._padded(path)
        if padded is None:
            stems = separate_to_memory(self.separator, path, opts)
            mixture = read_clip(path)
        else:
            mixture = (padded[0], self.separator.config.sample_rate)
            stems = separate_waveform(self.separator, *mixture, opts)
        with autocast(self.precisions()["clap"], self.clap.device):
            res = embed_clips(self.clap, [(x, stems.sample_rate) for x in stems.audio], mixture,
                              batch_size=self.batch_size)
        info = {"audio": str(path), "duration_s": stems.manifest.get("duration_s"), "stems": len(stems)}
        if padded is not None:
            info.update(padded_from_s=padded[1], window_pad=self.window_pad)
        return StemEmbeddings(res.embeddings.astype(np.float32), res.mixture.astype(np.float32), info)

    def _padded(self, path: Path) -> tuple[np.ndarray, float] | None:
        """With ``window_pad`` set and the clip shorter than one window: the clip read at the
        model's rate (mono, soxr HQ: what librosa.load gives the official loaders) and padded to
        one window, with its original duration; else None (the file is separated as it is)."""
        if self.window_pad is None:
            return None
        from ..audio.io import probe, read_audio

        cfg = self.separator.config
        if probe(path).duration >= cfg.window_seconds:
            return None
        x, _ = read_audio(path, cfg.sample_rate)
        if x.size >= cfg.window_samples:
            return None
        mode = "constant" if self.window_pad == "zeros" or x.size == 0 else "reflect"
        return np.pad(x, (0, cfg.window_samples - x.size), mode=mode).astype(np.float32), x.size / cfg.sample_rate
