"""Paired audio/image data for ``train-gen``: listing pairs, cached stem embeddings, image batches.

Sources (``data.kind``):

- ``csv``: a manifest with an ``audio`` column and an ``image`` column (one row per pair; several
  rows may share a clip), optionally ``labels`` and ``embedding`` (a precomputed stem-embedding
  .npy, e.g. from ``macs embed``, used instead of separating the clip). Relative paths are taken
  from the manifest's folder.
- ``landscape`` / ``llp``: the layout of the official MACS loaders for the Landscape and LLP-multi
  data sets, ``<root>/<split>/audio/<id>.wav`` and ``<root>/<split>/image/<id>_frame_<k>.jpg``
  (several frames per clip, each frame one training pair). ``<root>`` may also be the split
  folder itself.
- ``auto``: ``csv`` for a .csv file, else the folder layout.

Stem embeddings: every distinct clip is separated and CLAP-embedded once
(:class:`~macs_cli.generation.audio.AudioEmbedder`) and stored in an on-disk cache keyed by the
audio file's SHA-256 and content fingerprints of the separator and CLAP weights; later epochs and
later runs read the cache. The stems are ranked by cosine to the mixture (``data.rank``) when the
batch is built, and the first ``top_k`` are kept.

Images: resized to cover ``resolution`` (height, width), centre-cropped, optionally flipped at
random, scaled to [-1, 1].
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ConfigError, MacsError
from ..cache import ArrayCache
from ..fsutil import file_sha256, require_regular_file
from .data import Clip, DataError, _split_labels, read_manifest_rows

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
AUDIO_SUFFIXES_LAYOUT = (".wav", ".flac", ".mp3", ".ogg")
# v2: CLAP input resampled with torchaudio's sinc (was soxr), key includes precision and padding
CACHE_VERSION = "macs-stem-cache-v2"


@dataclass
class ImagePair:
    """A training image and the clip it goes with (not :class:`macs_cli.evaluation.pairing.Pair`,
    an evaluated generated/ground-truth pair)."""

    image: str
    clip: int                 # index into PairedData.clips


@dataclass
class PairedData:
    clips: list[Clip]
    pairs: list[ImagePair]
    source: str

    def __len__(self) -> int:
        return len(self.pairs)


# -- listing --------------------------------------------------------------------------------------
def pairs_from_csv(path: Path) -> PairedData:
    path = Path(path)
    rows = read_manifest_rows(path)
    cols = rows[0].keys()
    a_col = next((c for c in ("audio", "audio_path", "wav") if c in cols), None)
    i_col = next((c for c in ("image", "image_path", "frame") if c in cols), None)
    if a_col is None or i_col is None:
        raise ConfigError(f"{path}: manifest needs 'audio' and 'image' columns (has {', '.join(cols)})")

    def resolve(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else path.parent / q)

    clips: list[Clip] = []
    index: dict[tuple[str, str | None], int] = {}
    pairs = []
    for n, row in enumerate(rows, start=2):        # line numbers as a spreadsheet shows them
        emb = (row.get("embedding") or "").strip() or None
        raw_audio = (row.get(a_col) or "").strip()
        if not raw_audio and not emb:
            raise DataError(f"{path}, line {n}: no audio file and no precomputed embedding")
        if not (row.get(i_col) or "").strip():
            raise DataError(f"{path}, line {n}: no image file")
        audio = resolve(raw_audio) if raw_audio else ""
        key = (audio, resolve(emb) if emb else None)   # one clip per (audio, embedding): rows with
        if key not in index:                           # their own embeddings stay apart
            index[key] = len(clips)
            clips.append(Clip(audio, _split_labels(row.get("labels") or row.get("label") or ""), key[1]))
        pairs.append(ImagePair(resolve(row[i_col]), index[key]))
    return PairedData(clips, pairs, str(path))


def pairs_from_layout(root: Path, split: str = "train") -> PairedData:
    """``<root>/<split>/{audio,image}`` (or ``<root>/{audio,image}``), frames ``<id>_frame_<k>.<ext>``."""
    root = Path(root)
    base = root / split if (root / split / "image").is_dir() else root
    image_dir, audio_dir = base / "image", base / "audio"
    if not image_dir.is_dir() or not audio_dir.is_dir():
        raise ConfigError(f"{root}: expected {root}/{split}/image and {root}/{split}/audio (the Landscape / "
                          "LLP-multi layout) or a CSV manifest")
    audio_by_id = {p.stem: p for p in sorted(audio_dir.iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES_LAYOUT}
    clips: list[Clip] = []
    index: dict[str, int] = {}
    pairs, orphans = [], 0
    for img in sorted(image_dir.iterdir()):
        if img.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        clip_id = img.stem.split("_frame_")[0]
        audio = audio_by_id.get(clip_id)
        if audio is None:
            orphans += 1
            continue
        if clip_id not in index:
            index[clip_id] = len(clips)
            clips.append(Clip(str(audio)))
        pairs.append(ImagePair(str(img), index[clip_id]))
    if not pairs:
        raise ConfigError(f"{base}: no image frame has its clip in {audio_dir} (frames are named "
                          f"<id>_frame_<k>.jpg, clips <id>.wav)" + (f"; {orphans} orphan frame(s)" if orphans else ""))
    return PairedData(clips, pairs, str(base))


def drop_unreadable_images(data: PairedData) -> tuple[PairedData, list[str]]:
    """Pairs whose image cannot be opened (missing, empty, not an image: PIL reads the header
    only, so this is quick) are dropped before training rather than stopping it at their batch;
    returns the data and one reason per dropped pair. Clips left without a pair are dropped too."""
    from PIL import Image, UnidentifiedImageError

    keep, dropped = [], []
    for p in data.pairs:
        try:
            try:
                require_regular_file(Path(p.image), "image")   # a FIFO would block PIL forever
            except MacsError as exc:
                dropped.append(str(exc))
                continue
            with Image.open(p.image) as im:
                if im.width < 1 or im.height < 1:
                    raise OSError("empty image")
            keep.append(p)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            dropped.append(f"{p.image}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    if not keep:
        raise DataError(f"{data.source}: no readable image among {len(data.pairs)} pairs "
                        f"(e.g. {dropped[0] if dropped else '?'})")
    if dropped:
        used = sorted({p.clip for p in keep})
        remap = {old: new for new, old in enumerate(used)}
        data = PairedData([data.clips[i] for i in used], [ImagePair(p.image, remap[p.clip]) for p in keep], data.source)
    return data, dropped


def list_pairs(spec: str | Path, kind: str = "auto", split: str = "train", max_items: int | None = None) -> PairedData:
    spec = Path(spec)
    if not spec.exists():
        raise DataError(f"{spec}: training data not found")
    if kind == "auto":
        kind = "csv" if spec.suffix.lower() == ".csv" else "landscape"
    if kind == "csv":
        data = pairs_from_csv(spec)
    elif kind in ("landscape", "llp"):
        data = pairs_from_layout(spec, split)
    else:
        raise ConfigError(f"data.kind must be auto, csv, landscape or llp (got {kind!r})")
    if max_items:
        data.pairs = data.pairs[:max_items]
        used = sorted({p.clip for p in data.pairs})
        remap = {old: new for new, old in enumerate(used)}
        data.clips = [data.clips[i] for i in used]
        data.pairs = [ImagePair(p.image, remap[p.clip]) for p in data.pairs]
    return data


# -- stem embeddings -------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    base = os.environ.get("MACS_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                        os.path.expanduser("~/.cache"), "macs")
    return Path(base) / "stem-embeddings"


class StemCache(ArrayCache):
    """``<dir>/<key[:2]>/<key>.npz`` holding ``stems`` (M, 512), ``mixture`` (512,) and ``info``;
    key = SHA-256 of (format version, audio SHA-256, separator and CLAP fingerprints, settings)."""

    suffix = ".npz"

    @property
    def folder(self) -> Path:
        return self.root

    @staticmethod
    def key(audio_sha: str, model_ids: dict[str, str]) -> str:
        """``model_ids``: the separator's and CLAP's fingerprints, and the ``settings`` the
        embeddings depend on (precision, padding; :meth:`AudioEmbedder.cache_ids`)."""
        text = "|".join([CACHE_VERSION, audio_sha, model_ids["separator"], model_ids["clap"],
                         model_ids.get("settings", "")])
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        z = self.load(key)
        if not isinstance(z, dict) or "stems" not in z or "mixture" not in z:
            return None  # missing, or a damaged entry: recomputed
        return z["stems"].astype(np.float32), z["mixture"].astype(np.float32)

    def put(self, key: str, stems: np.ndarray, mixture: np.ndarray, info: dict) -> None:
        self.save(key, {"stems": stems.astype(np.float32), "mixture": mixture.astype(np.float32),
                        "info": np.array(json.dumps(info))})




def _precomputed(clip: Clip) -> tuple[np.ndarray, np.ndarray | None, bool]:
    from ..clap.api import read_npy_with_sidecar

    arr, meta = read_npy_with_sidecar(Path(clip.embedding))
    if arr.ndim != 2:
        raise ConfigError(f"{clip.embedding}: expected an (M, 512) array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) and np.all(np.isfinite(arr))):
        raise ConfigError(f"{clip.embedding}: holds NaN, infinite or non-numeric values")
    mix = meta.get("mixture_embedding")
    already_ranked = "order" in meta
    return (arr.astype(np.float32), (None if mix is None or already_ranked else np.asarray(mix, np.float32)),
            already_ranked)


def clip_embeddings(data: PairedData, embedder_factory: Callable[[], Any] | None, cache: StemCache,
                    rank: bool = True, top_k: int | None = None, progress: Callable[[str], None] | None = None,
                    ) -> tuple[torch.Tensor, dict[str, int]]:
    """(clips, K, 512) float32 stem embeddings in rank order (first ``top_k`` kept), every clip
    separated and embedded at most once across runs. Returns the tensor and hit/miss counts, with
    ``stats["order"]`` the order of the stems: ``significance`` (all ranked), ``separator`` (none:
    ``rank=False``, or precomputed embeddings without a mixture embedding) or ``mixed``."""
    from ..clap.api import rank_embeddings

    embedder = None
    stats: dict[str, Any] = {"cached": 0, "computed": 0, "precomputed": 0}
    orders: set[str] = set()
    rows: list[np.ndarray] = []
    for clip in data.clips:
        ranked = False
        if clip.embedding:
            stems, mix, ranked = _precomputed(clip)
            stats["precomputed"] += 1
        else:
            if embedder is None:
                if embedder_factory is None:
                    raise ConfigError(f"{clip.audio}: no precomputed embedding and no separator/CLAP configured")
                embedder = embedder_factory()
            audio = Path(clip.audio)
            try:
                require_regular_file(audio, "audio file")
            except MacsError as exc:
                raise DataError(str(exc)) from None
            key = cache.key(file_sha256(audio), embedder.cache_ids())
            hit = cache.get(key)
            if hit is None:
                res = embedder.embed(audio)
                stems, mix = res.stems, res.mixture
                cache.put(key, stems, mix, {"audio": str(audio), **embedder.describe()})
                stats["computed"] += 1
            else:
                stems, mix = hit
                stats["cached"] += 1
        if rank and mix is not None:
            stems = rank_embeddings(stems, mix).embeddings
            ranked = True
        orders.add("significance" if ranked else "separator")
        rows.append(stems)
        if progress is not None:
            progress(clip.audio)
    sizes = {r.shape for r in rows}
    if len(sizes) != 1:
        raise ConfigError(f"stem embeddings of different shapes in the training data: {sorted(sizes)}")
    out = np.stack(rows)
    if top_k:
        if top_k > out.shape[1]:
            raise ConfigError(f"data.top_k={top_k} but the clips have {out.shape[1]} stems")
        out = out[:, :top_k]
    stats["order"] = orders.pop() if len(orders) == 1 else "mixed"
    return torch.from_numpy(np.ascontiguousarray(out)), stats


# -- images ----------------------------------------------------------------------------------------
def load_image(path: str | Path, size: tuple[int, int], flip: bool = False) -> torch.Tensor:
    """(3, H, W) float in [-1, 1]: resized to cover ``size`` (height, width), centre-cropped."""
    from PIL import Image, UnidentifiedImageError

    h, w = size
    require_regular_file(Path(path), "image")
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):   # 16/32-bit grey: scale to 8 bits, not clip
                grey = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I;16") or grey.max() > 255 else 255.0
                im = Image.fromarray(np.clip(grey / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
            im = im.convert("RGB")
            scale = max(h / im.height, w / im.width)
            nh, nw = max(h, round(im.height * scale)), max(w, round(im.width * scale))
            im = im.resize((nw, nh), Image.BICUBIC)
            top, left = (nh - h) // 2, (nw - w) // 2
            im = im.crop((left, top, left + w, top + h))
            arr = np.asarray(im, dtype=np.float32)
    except (OSError, UnidentifiedImageError) as exc:
        raise MacsError(f"{path}: cannot read image ({exc})") from None
    x = torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0
    return x.flip(-1) if flip else x


def sample_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of the ``n`` pairs in ``epoch`` (a function of seed and epoch only)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919) % (2 ** 62))
    return torch.randperm(n, generator=g)


def batch_indices(n: int, seed: int, start: int, count: int) -> list[int]:
    """Pairs ``start .. start + count - 1`` of the endless shuffled stream (epoch after epoch)."""
    out, orders = [], {}
    for pos in range(start, start + count):
        epoch, i = divmod(pos, n)
        if epoch not in orders:
            orders[epoch] = sample_order(n, seed, epoch)
        out.append(int(orders[epoch][i]))
    return out
