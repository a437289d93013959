"""The public Python API: the MACS pipeline in memory, by the same model names the CLI takes.

    import macs_cli as macs

    sep = macs.load_separator("default")
    stems = macs.separate(waveform, 16000, sep)            # Stems: (K, T) arrays + activity, grouping
    clap = macs.load_clap("default")
    emb = macs.embed(stems, clap)                          # EmbeddingSet in separator order
    ranked = macs.rank(emb, top_k=3)                       # most significant first
    gen = macs.load_generator("runs/landscape")
    images = macs.generate(ranked, gen, seed=0)            # PIL images

Everything here is also reachable from the submodules; this module only gathers it. The verbs
(``macs separate`` ...) call the same code on files.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def load_separator(name: str | os.PathLike = "default", device: str = "cpu", allow_download: bool = False):
    """A separator by ``macs separate --model`` name: ``default``, ``official``, a file or a folder."""
    from .weights.separator import load_separator as _load

    return _load(name, device=device, allow_download=allow_download)


def load_clap(name: str | os.PathLike | None = "default", device: str = "cpu", allow_download: bool = False):
    """A CLAP encoder by ``macs embed --clap`` name: ``default``, ``hf``, ``hf:<repo>``, a file or folder."""
    from .clap.loading import load_clap as _load

    return _load(name, device=device, allow_download=allow_download)


def load_generator(adapter: str | os.PathLike, sd_model: str | None = None, device: str = "cpu",
                   dtype: str = "auto", allow_download: bool = False):
    """Stable Diffusion with a MACS adapter (as ``macs generate --adapter/--sd-model``)."""
    from .generation.pipeline import MacsGenerator

    return MacsGenerator.load(sd_model, adapter=adapter, device=device, dtype=dtype, allow_download=allow_download)


def separate(waveform: np.ndarray, sample_rate: int, model: Any = "default", *, num_sources: int | str | None = None,
             drop_silent: bool = False, overlap: float = 0.25, batch_size: int = 1,
             output_rate: int | str = "model", precision: str = "auto", stem_mode: str = "auto",
             device: str = "cpu"):
    """Separate a mixture held in memory (``(T,)``, or ``(channels, T)``, averaged to mono) into
    :class:`~macs_cli.separation.api.Stems`, the same stems ``macs separate`` writes for it.
    ``model``: a loaded separator or a name for :func:`load_separator`."""
    from .separation.api import SeparateOptions, separate_waveform

    if not hasattr(model, "config"):
        model = load_separator(model, device=device)
    opts = SeparateOptions(overlap=overlap, batch_size=batch_size, sample_rate=output_rate,
                           num_sources=num_sources, drop_silent=drop_silent, precision=precision,
                           stem_mode=stem_mode)
    return separate_waveform(model, waveform, sample_rate, opts)


def embed(stems: Any, clap: Any = "default", *, sample_rate: int | None = None, mixture: np.ndarray | None = None,
          batch_size: int = 8, device: str = "cpu"):
    """CLAP-embed stems: :class:`~macs_cli.separation.api.Stems` (their sum is the mixture), or a
    sequence of 1-D arrays with ``sample_rate`` (and the ``mixture``, if ranking should follow).
    Returns an :class:`~macs_cli.formats.EmbeddingSet` (L2-normalised rows, separator order)
    whose ``mixture`` is the mixture's embedding."""
    from .formats import EmbeddingSet

    if not hasattr(clap, "embed_waveforms"):
        clap = load_clap(clap, device=device)
    if hasattr(stems, "audio") and hasattr(stems, "sample_rate"):
        rate, waves = stems.sample_rate, list(stems.audio)
        mixture = stems.mixture if mixture is None else mixture
    else:
        if sample_rate is None:
            raise TypeError("embed: give sample_rate with plain arrays")
        rate, waves = sample_rate, [np.asarray(w, dtype=np.float32) for w in stems]
    emb = clap.embed_waveforms(waves, rate, batch_size=batch_size, normalize=True).cpu().numpy()
    meta: dict[str, Any] = {"stems": [f"stem {i}" for i in range(len(waves))], "normalized": True,
                            "model": getattr(clap, "source", None), "backend": type(clap).__name__}
    if mixture is not None:
        mix = clap.embed_waveforms([np.asarray(mixture, dtype=np.float32)], rate, batch_size=1, normalize=True)
        meta["mixture_embedding"] = [float(v) for v in mix[0].cpu().numpy()]
    return EmbeddingSet(emb, meta)


def rank(embeddings: Any, top_k: int | None = None):
    """Most significant stems first (cosine to the mixture), the first ``top_k`` kept: the set
    ``macs rank`` writes (its ``meta`` holds ``order``, ``scores``, the Spearman agreement)."""
    from .ranking import rank_set

    return rank_set(embeddings, top_k)[0]


def generate(embeddings: Any, generator: Any, *, seed: int = 0, steps: int = 20, guidance: float = 7.5,
             num_images: int = 1, height: int = 512, width: int = 512, audio_scale: float = 1.0,
             prompt: str = "", top_k: int | None = None, order: str | None = None) -> list:
    """Images (PIL) from an embedding set (or an (M, 512) / (N, M, 512) array), in the stem order
    the adapter was trained on unless ``order`` says otherwise."""
    from .formats import STEM_ORDERS, EmbeddingSet
    from .generation.pipeline import GenerationSettings
    from .ranking import order_set

    if isinstance(embeddings, EmbeddingSet):
        want = order or (generator.source.stem_order if generator.source is not None
                         and generator.source.stem_order in STEM_ORDERS else "significance")
        embeddings = order_set(embeddings, want)[0].array
    settings = GenerationSettings(steps=steps, guidance=guidance, prompt=prompt, height=height, width=width,
                                  audio_scale=audio_scale, seed=seed, num_images=num_images, top_k=top_k).validate()
    return [item.image for item in generator.generate(embeddings, settings)]


def evaluate_separation(estimates: np.ndarray, references: np.ndarray, mixture: np.ndarray | None = None) -> dict:
    """SI-SDR improvement (dB) of estimated stems (K, T) against reference sources (S, T):
    ``grouped`` (the best grouping of the stems into S sources), ``one_to_one`` (the best choice
    of S stems, K >= S) and ``matched`` (as ``macs eval``: every reference gets one estimate), each
    minus the mixture's own SI-SDR (the mixture defaults to the sum of the references)."""
    import torch

    from .evaluation.sisdr import best_grouped_sisdr, best_one_to_one_sisdr, matched_sisdr, mixture_sisdr

    est = torch.as_tensor(np.asarray(estimates, dtype=np.float64))
    refs = torch.as_tensor(np.asarray(references, dtype=np.float64))
    n = min(est.shape[-1], refs.shape[-1])
    est, refs = est[:, :n], refs[:, :n]
    mix = refs.sum(0) if mixture is None else torch.as_tensor(np.asarray(mixture, dtype=np.float64))[:n]
    base = float(mixture_sisdr(mix[None], refs[None])[0])
    out = {"mixture_sisdr": base, "grouped": float(best_grouped_sisdr(est[None], refs[None])[0][0]) - base,
           "matched": matched_sisdr(est, refs) - base}
    out["one_to_one"] = float(best_one_to_one_sisdr(est[None], refs[None])[0][0]) - base \
        if est.shape[0] >= refs.shape[0] else None
    return out


__all__ = ["load_separator", "load_clap", "load_generator", "separate", "embed", "rank", "generate",
           "evaluate_separation"]

