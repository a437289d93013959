"""Embedding stems and ranking them: the importable API behind ``macs embed`` and ``macs rank``.

    from macs_cli.clap import load_clap
    from macs_cli.clap.api import embed_stems, rank_embeddings, stems_of

    clap = load_clap("default")
    files, mixture = stems_of("separated/mix")          # a folder written by `macs separate`
    result = embed_stems(clap, files, mixture)          # (M, 512) + the mixture's embedding
    ranked = rank_embeddings(result.embeddings, result.mixture, top_k=3)

Embeddings are L2-normalised CLAP audio embeddings (clips longer than 10 s: the normalised mean
of their 10 s chunks), float32, in stem order.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio.io import AUDIO_SUFFIXES, read_audio
from ..errors import AudioError, ConfigError, MacsError
from ..fsutil import require_regular_file
from .preprocess import CLAP_SAMPLE_RATE


@dataclass
class Embedded:
    embeddings: np.ndarray                  # (M, 512) float32
    files: list[str]
    mixture: np.ndarray | None = None       # (512,) float32
    mixture_file: str | None = None
    labels: list[list[dict]] | None = None  # per stem: [{"label", "score", "cosine"}...]
    info: dict = field(default_factory=dict)


class MissingMixtureWarning(UserWarning):
    """A manifest names a mixture file that is no longer there."""


def stems_of(folder: Path) -> tuple[list[Path], Path | list[Path] | None]:
    """The stem files of a folder in stem order, and the mixture its manifest names (if any).

    When the named mixture file has moved, the mixture is the list of stem files (their sum is
    the mixture: ``macs separate`` writes stems that add up to it) and a
    :class:`MissingMixtureWarning` says so."""
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if manifest.exists():
        try:
            require_regular_file(manifest, "manifest")
            m = json.loads(manifest.read_text())
            files = [_stem_file(folder, s["file"], manifest) for s in m["stems"]]
        except (ValueError, KeyError, TypeError) as exc:   # JSON, UTF-8, a NUL in a file name...
            raise MacsError(f"{manifest}: not a macs separate manifest ({exc})") from None
        source = Path(m["source"]) if m.get("source") else None
        if source is not None and not source.exists():
            import warnings

            dropped = " (without the stems dropped as silent)" if m.get("dropped") else ""
            warnings.warn(MissingMixtureWarning(
                f"{manifest}: the mixture it names ({source}) is missing; using the sum of the stems"
                f"{dropped} as the mixture"))
            return files, list(files)
        return files, source
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise AudioError(f"{folder}: holds no manifest.json and no audio files")
    return files, None


def _stem_file(folder: Path, name: object, manifest: Path) -> Path:
    """A stem named by a manifest: a plain relative name that stays inside the stems folder (a
    manifest can never make ``embed`` read some other file on the disk)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a stem's file is {name!r}")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not (folder / rel).resolve().is_relative_to(folder.resolve()):
        raise MacsError(f"{manifest}: stem file {name!r} lies outside its folder; stems must be inside "
                        f"{folder}")
    return folder / rel


MAX_RATIO_TERM = 1000   # torchaudio's sinc kernel has (48000 / g) x ~(rate / g) taps, g = gcd(rate, 48000)


def _read(path: Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """A file as mono float32 at its own rate (or ``sample_rate``): the CLAP encoder resamples it
    to 48 kHz itself, with the same function as training (torchaudio's sinc resampler). A rate
    whose ratio to 48 kHz does not reduce to small terms (e.g. 44101 Hz) would need a huge sinc
    kernel: such files are read at 48 kHz through soxr instead."""
    if sample_rate is None:
        from ..audio.io import probe

        rate = probe(path).sample_rate
        g = math.gcd(rate, CLAP_SAMPLE_RATE)
        if max(rate // g, CLAP_SAMPLE_RATE // g) > MAX_RATIO_TERM:
            sample_rate = CLAP_SAMPLE_RATE
    return read_audio(path, sample_rate)


def embed_stems(encoder, files: list[Path], mixture: Path | list[Path] | None = None, batch_size: int = 8,
                vocabulary: list[str] | None = None, top_labels: int = 3) -> Embedded:
    """CLAP-embed stem files (and the mixture, when given: a file, or a list of files whose sum is
    the mixture); optionally tag each stem with labels.

    Every clip goes to CLAP through one function, the training path's: read at its own rate,
    resampled to 48 kHz by ``torchaudio.functional.resample`` (default sinc settings, as the
    official ``torchaudio.transforms.Resample(16000, 48000)``), repeat-padded to 10 s
    (:func:`macs_cli.clap.chunk_10s`)."""
    if not files:
        raise AudioError("no stems to embed")
    read = [_read(Path(f)) for f in files]
    emb = encoder.embed_waveforms([x for x, _ in read], [rate for _, rate in read], batch_size=batch_size,
                                  normalize=True)
    mix = None
    if mixture is not None:
        if isinstance(mixture, list):
            rate = read[0][1]
            parts = [_read(Path(f), rate)[0] for f in mixture]
            mix_wave = np.zeros(max(len(p) for p in parts), np.float32)
            for p in parts:
                mix_wave[: len(p)] += p
            mixture = f"sum of {len(parts)} stems"
        else:
            mix_wave, rate = _read(Path(mixture))
        mix = encoder.embed_waveforms([mix_wave], rate, batch_size=batch_size, normalize=True)[0].numpy()
    labels = None
    if vocabulary:
        from .labels import label_stems

        labels = [[{"label": lab, "score": float(s), "cosine": float(c)} for lab, s, c in row]
                  for row in _as_triples(label_stems(encoder, emb, vocabulary, top_labels, batch_size))]
    return Embedded(emb.numpy().astype(np.float32), [str(f) for f in files],
                    None if mix is None else mix.astype(np.float32),
                    None if mixture is None else str(mixture), labels)


def _as_triples(rows) -> list[list[tuple[str, float, float]]]:
    """Normalise what labels.label_stems returns into (label, score, cosine) triples."""
    out = []
    for row in rows:
        items = []
        for item in row:
            if isinstance(item, dict):
                items.append((item["label"], item["score"], item.get("cosine", float("nan"))))
            else:
                lab, score, *rest = item
                items.append((lab, score, rest[0] if rest else float("nan")))
        out.append(items)
    return out


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


# -- files -----------------------------------------------------------------------------------------
def write_npy_with_sidecar(out: Path, array: np.ndarray, sidecar: dict, kind: str = "embeddings",
                           force: bool = False) -> list[Path]:
    """``out`` (.npy) and its ``.json`` sidecar, written together: both are complete under
    temporary names before either is placed, the sidecar first, so no ``.npy`` ever stands
    without its sidecar. ``kind`` (``embeddings`` or ``ranked``) sets the format tag and what
    ``force`` may replace: only a previous output of the same kind."""
    from ..formats import (EMBED_SIDECAR, EMBEDDINGS, EMBEDDINGS_FORMAT, RANK_SIDECAR, RANKED,
                           RANKED_FORMAT)
    from ..fsutil import OutputSet

    kinds = {"embeddings": (EMBEDDINGS, EMBED_SIDECAR, EMBEDDINGS_FORMAT),
             "ranked": (RANKED, RANK_SIDECAR, RANKED_FORMAT)}
    npy_kind, side_kind, fmt = kinds[kind]
    out = Path(out)
    with OutputSet(force) as outputs:
        side_tmp = outputs.path(out.with_suffix(".json"), side_kind)
        npy_tmp = outputs.path(out, npy_kind)
        side_tmp.write_text(json.dumps({"format": fmt, **sidecar}, indent=2) + "\n")
        with open(npy_tmp, "wb") as f:
            np.save(f, np.asarray(array, dtype=np.float32))
    return [out, out.with_suffix(".json")]


def read_npy_with_sidecar(path: Path) -> tuple[np.ndarray, dict]:
    path = Path(path)
    require_regular_file(path, "file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise MacsError(f"{path}: not a .npy array ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    if not isinstance(arr, np.ndarray):   # np.load opens a .npz archive too
        arr.close()
        raise MacsError(f"{path}: not a .npy array (a .npz archive; save one array with numpy.save)")
    side = path.with_suffix(".json")
    meta = {}
    if os.path.lexists(side):
        require_regular_file(side, "sidecar")
        try:
            meta = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MacsError(f"{side}: not JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise MacsError(f"{side}: not a sidecar (a JSON object is expected, found {type(meta).__name__})")
    return arr, meta
