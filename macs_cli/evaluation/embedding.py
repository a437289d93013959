"""Embed every file once: batched forward passes on the device, cached by file content.

The cache is a folder of ``<cache_key>/<sha[:2]>/<sha256 of the file>.npy`` (one feature vector per
file, in the network's own dtype), written atomically. A file whose bytes did not change is never
embedded again by the same encoder, whatever its name or folder; an edited file gets a new hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..cache import ArrayCache
from ..fsutil import file_sha256 as _file_sha256
from .encoders import AudioEncoder, ImageEncoder, ImageError, as_numpy

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as work advances (``done`` counts files)."""


def file_sha256(path: Path, chunk: int = 1 << 20, error: type[Exception] = ImageError) -> str:
    """Hex SHA-256 of a file's bytes; an unreadable file raises ``error`` naming it."""
    try:
        return _file_sha256(path, chunk)
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None


class EmbeddingCache(ArrayCache):
    """Feature vectors by (encoder cache key, file hash). ``root=None`` keeps nothing on disk."""

    def get(self, key: str, digest: str) -> np.ndarray | None:
        return self.load(digest, key)

    def put(self, key: str, digest: str, value: np.ndarray) -> None:
        self.save(digest, value, key)


class _LoadDataset(torch.utils.data.Dataset):
    """Loads images with ``encoder.load``; returns (index, tensor or None, error message)."""

    def __init__(self, files: Sequence[Path], encoder: ImageEncoder):
        self.files, self.encoder = list(files), encoder

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path = self.files[i]
        try:
            return i, self.encoder.load(path), ""
        except Exception as exc:  # noqa: BLE001 - reported with the file name, one line
            msg = str(exc).strip().splitlines()
            return i, None, f"{path}: cannot read image ({msg[0] if msg else type(exc).__name__})"


def _collate(items):
    return items


def embed_images(files: Sequence[Path], encoder: ImageEncoder, device: str, batch_size: int = 32,
                 cache: EmbeddingCache | None = None, num_workers: int = 0,
                 progress: Progress | None = None, stage: str = "images",
                 digests: dict[Path, str] | None = None) -> np.ndarray:
    """(N, D) features of ``files`` in order: cached ones are read, the others embedded in batches.

    A file that cannot be decoded raises :class:`ImageError` naming it (nothing partial returned).
    """
    cache = cache or EmbeddingCache(None)
    digests = digests if digests is not None else {}
    out: list[np.ndarray | None] = [None] * len(files)
    todo: list[int] = []
    if progress:
        progress(stage, 0, len(files))
    for i, f in enumerate(files):
        d = digests.get(f) or digests.setdefault(f, file_sha256(f))
        hit = cache.get(encoder.cache_key, d)
        if hit is None:
            todo.append(i)
        else:
            out[i] = hit
            cache.hits += 1
    done = len(files) - len(todo)
    if progress:
        progress(stage, done, len(files))
    if todo:
        loader = torch.utils.data.DataLoader(_LoadDataset([files[i] for i in todo], encoder),
                                             batch_size=max(1, batch_size), shuffle=False,
                                             num_workers=num_workers, collate_fn=_collate)
        for items in loader:
            bad = next((err for _, _, err in items if err), None)
            if bad:
                raise ImageError(bad)
            batch = torch.stack([t for _, t, _ in items]).to(device)
            with torch.no_grad():
                feats = as_numpy(encoder.forward(batch))
            if feats.shape[0] != len(items):
                raise ImageError(f"{encoder.cache_key}: encoder returned {feats.shape[0]} features "
                                 f"for {len(items)} images")
            for (j, _, _), feat in zip(items, feats):
                i = todo[j]
                out[i] = feat
                cache.put(encoder.cache_key, digests[files[i]], feat)
                cache.misses += 1
            done += len(items)
            if progress:
                progress(stage, done, len(files))
    return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)


def embed_audio(files: Sequence[Path], encoder: AudioEncoder, device: str,
                cache: EmbeddingCache | None = None, progress: Progress | None = None,
                stage: str = "audio", digests: dict[Path, str] | None = None) -> np.ndarray:
    """(N, D) audio features, one clip per forward pass, mono at ``encoder.sample_rate``.

    One clip at a time on purpose: Wav2CLIP standardises its log-spectrogram with the mean and std
    of the whole input tensor, so a batch of clips would change every clip's embedding (and clips
    differ in length). The official scripts also embed each clip alone.
    """
    from ..audio.io import read_audio
    from ..errors import AudioError

    cache = cache or EmbeddingCache(None)
    digests = digests if digests is not None else {}
    out = []
    for n, f in enumerate(files):
        d = digests.get(f) or digests.setdefault(f, file_sha256(f, error=AudioError))
        feat = cache.get(encoder.cache_key, d)
        if feat is None:
            wave, _ = read_audio(f, encoder.sample_rate)  # AudioError (one line) when unreadable
            with torch.no_grad():
                feat = as_numpy(encoder.forward(torch.from_numpy(wave)[None].to(device)))[0]
            cache.put(encoder.cache_key, d, feat)
            cache.misses += 1
        else:
            cache.hits += 1
        out.append(feat)
        if progress:
            progress(stage, n + 1, len(files))
    return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)
