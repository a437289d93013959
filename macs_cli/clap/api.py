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

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio.io import AUDIO_SUFFIXES, read_audio
from ..errors import AudioError, MacsError
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
        from ..formats import read_stem_manifest

        m = read_stem_manifest(manifest)
        try:
            files = [_stem_file(folder, s["file"], manifest) for s in m["stems"]]
        except (ValueError, KeyError, TypeError) as exc:   # no stems, a NUL in a file name...
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


def read_clip(path: Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
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
    read = [read_clip(Path(f)) for f in files]
    mix = None
    if isinstance(mixture, list):
        rate = read[0][1]
        parts = [read_clip(Path(f), rate)[0] for f in mixture]
        mix_wave = np.zeros(max(len(p) for p in parts), np.float32)
        for p in parts:
            mix_wave[: len(p)] += p
        mix, mixture = (mix_wave, rate), f"sum of {len(parts)} stems"
    elif mixture is not None:
        mix = read_clip(Path(mixture))
    return embed_clips(encoder, read, mix, [str(f) for f in files], None if mixture is None else str(mixture),
                       batch_size, vocabulary, top_labels)


def embed_clips(encoder, clips: list[tuple[np.ndarray, int]], mixture: tuple[np.ndarray, int] | None = None,
                names: list[str] | None = None, mixture_name: str | None = None, batch_size: int = 8,
                vocabulary: list[str] | None = None, top_labels: int = 3) -> Embedded:
    """:func:`embed_stems` for clips held in memory: ``(mono float32 samples, rate)`` each, and the
    mixture's; the same CLAP input as the files would give."""
    if not clips:
        raise AudioError("no stems to embed")
    emb = encoder.embed_waveforms([x for x, _ in clips], [rate for _, rate in clips], batch_size=batch_size,
                                  normalize=True)
    mix = None
    if mixture is not None:
        mix = encoder.embed_waveforms([mixture[0]], mixture[1], batch_size=batch_size, normalize=True)[0].numpy()
    labels = None
    if vocabulary:
        from .labels import label_stems

        labels = [[{"label": lab, "score": float(s), "cosine": float(c)} for lab, s, c in row]
                  for row in _as_triples(label_stems(encoder, emb, vocabulary, top_labels, batch_size))]
    return Embedded(emb.numpy().astype(np.float32), names or [f"stem {i}" for i in range(len(clips))],
                    None if mix is None else mix.astype(np.float32), mixture_name, labels)


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


def _folder_name(folder: Path) -> str:
    """A folder's own name, also when it is given as ``.`` or ``..`` (whose output would else be the
    hidden ``..npy``)."""
    name = folder.name if folder.name not in ("", ".", "..") else folder.resolve().name
    return name or "stems"


def find_stem_sets(inputs: list[Path]) -> tuple[list[tuple[str, list[Path], Path | None]], list[str]]:
    """Inputs -> [(name, stem files, mixture)]: a folder with manifest.json is one set; a folder
    without one is searched for such folders (recursively), or else taken as a set of audio files;
    loose audio files together form one set."""
    sets, problems, loose = [], [], []
    for item in inputs:
        if item.is_file():
            loose.append(item)
        elif item.is_dir():
            if (item / "manifest.json").exists():
                found = [item]
            else:
                found = sorted(p.parent for p in item.rglob("manifest.json")
                               if not any(part.startswith(".") for part in p.relative_to(item).parts))
            if found:
                for folder in found:
                    try:
                        files, mix = stems_of(folder)
                    except MacsError as exc:
                        problems.append(str(exc))
                        continue
                    rel = folder.relative_to(item) if folder != item else Path(_folder_name(folder))
                    sets.append((str(rel), files, mix))
            elif any(p.suffix.lower() in AUDIO_SUFFIXES for p in item.iterdir() if p.is_file()):
                files, mix = stems_of(item)
                sets.append((_folder_name(item), files, mix))
            else:
                problems.append(f"{item}: holds no stems (no manifest.json and no audio files)")
        elif os.path.lexists(item):
            try:
                require_regular_file(item, "stem file")
            except MacsError as exc:
                problems.append(str(exc))
        else:
            problems.append(f"{item}: no such file or folder")
    if loose:
        sets.append((_folder_name(loose[0].parent), loose, None))
    return sets, problems


def sidecar_of(result: Embedded, encoder, precision: str, seconds: float, model: str | None = None) -> dict:
    """What ``macs embed`` records beside the array (format macs-embeddings-v1)."""
    from ..fsutil import file_sha256

    side = {"stems": result.files, "model": getattr(encoder, "source", str(model or "default")),
            "backend": type(encoder).__name__, "sample_rate": encoder.sample_rate,
            "shape": list(result.embeddings.shape), "normalized": True,
            "stem_sha256": [file_sha256(Path(f)) for f in result.files],
            "mixture": result.mixture_file,
            "mixture_embedding": None if result.mixture is None else [float(v) for v in result.mixture],
            "precision": precision, "seconds": round(seconds, 3)}
    if result.labels is not None:
        side["labels"] = result.labels
    return side


# moved: ranking to macs_cli.ranking, the .npy + sidecar files to macs_cli.formats
from ..formats import read_npy_with_sidecar, write_npy_with_sidecar  # noqa: E402,F401
from ..ranking import Ranked, rank_embeddings, spearman  # noqa: E402,F401
