"""Pair generated images, ground-truth frames and audio by clip id, per data set naming.

Every file is keyed by its name without suffix (its folder does not matter). A ground-truth frame
``<id>_frame_<k>`` belongs to clip ``<id>``; the generated image for it is ``<id>_frame_<k>`` (one per
frame) or, failing that, ``<id>`` (one per clip, then shared by the clip's frames); its audio is
``<id>_frame_<k>`` or ``<id>``.

================  =====================================================================
``--dataset``     layout
================  =====================================================================
``landscape``     ``GT/<split>/image/<id>_frame_<k>.jpg`` and ``GT/<split>/audio/<id>.wav``
                  (MM-Diffusion's landscape layout); ``--audio`` defaults to ``--gt``
``llp-multi``     frames ``<id>_frame_<k>.<ext>`` anywhere below ``--gt``; ``--audio`` holds
                  ``<id>.wav``
``audioset-eval`` as ``llp-multi`` (``<id>`` or ``<id>_frame_<k>``)
``folder``        the same name in every folder; each name is its own clip
================  =====================================================================

Image suffixes are clean-fid's (bmp, jpg, jpeg, pgm, png, ppm, tif, tiff, webp); hidden files and
folders are skipped. Lists are sorted by path string, the order of clean-fid's folder scan.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..audio.io import AUDIO_SUFFIXES
from ..errors import ConfigError, MacsError

DATASETS = ("landscape", "llp-multi", "audioset-eval", "folder")
DATASET_LABELS = {"landscape": "Landscape", "llp-multi": "LLP-multi", "audioset-eval": "AudioSet-Eval",
                  "folder": "folder"}
IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
FRAME_RE = re.compile(r"^(?P<clip>.+)_frame_(?P<frame>\d+)$")


@dataclass(frozen=True)
class Pair:
    """One evaluated item: a ground-truth frame, its generated image, and its audio if any."""

    key: str
    clip: str
    pred: Path
    gt: Path
    audio: Path | None = None


@dataclass
class Pairing:
    dataset: str
    pairs: list[Pair]
    unpaired_pred: list[Path] = field(default_factory=list)
    unpaired_gt: list[Path] = field(default_factory=list)
    unpaired_audio: list[Path] = field(default_factory=list)
    without_audio: list[str] = field(default_factory=list)    # keys of pairs with no audio

    @property
    def clips(self) -> list[str]:
        return sorted({p.clip for p in self.pairs})

    def summary(self) -> dict:
        return {"pairs": len(self.pairs), "clips": len(self.clips),
                "generated_images": len({p.pred for p in self.pairs}),
                "ground_truth_images": len({p.gt for p in self.pairs}),
                "with_audio": sum(p.audio is not None for p in self.pairs),
                "unpaired_pred": [str(p) for p in self.unpaired_pred],
                "unpaired_gt": [str(p) for p in self.unpaired_gt],
                "unpaired_audio": [str(p) for p in self.unpaired_audio],
                "without_audio": list(self.without_audio)}


def check_dataset(name: str) -> str:
    d = name.strip().lower()
    if d not in DATASETS:
        raise ConfigError(f"--dataset {name}: expected one of {', '.join(DATASETS)}")
    return d


def clip_of(key: str, dataset: str) -> str:
    """Clip id of a file key: ``<id>`` for ``<id>_frame_<k>`` (all but ``folder``), else the key."""
    if dataset == "folder":
        return key
    m = FRAME_RE.match(key)
    return m.group("clip") if m else key


def _scan(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    files = [p for p in root.rglob("*")
             if p.is_file() and p.suffix.lower() in suffixes
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(files, key=str)


def _require_dir(path: Path | None, option: str) -> Path:
    if path is None:
        raise ConfigError(f"{option} is required")
    path = Path(path)
    if not path.exists():
        raise MacsError(f"{option} {path}: no such folder")
    if not path.is_dir():
        raise MacsError(f"{option} {path}: not a folder")
    return path


def list_images(root: Path, dataset: str, role: str) -> list[Path]:
    files = _scan(root, IMAGE_SUFFIXES)
    if dataset == "landscape" and role == "gt":
        in_image = [p for p in files if "image" in p.relative_to(root).parts[:-1]]
        files = in_image or files
    return files


def list_audio(root: Path, dataset: str) -> list[Path]:
    files = _scan(root, tuple(AUDIO_SUFFIXES))
    if dataset == "landscape":
        in_audio = [p for p in files if "audio" in p.relative_to(root).parts[:-1]]
        files = in_audio or files
    return files


def _by_key(files: list[Path], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise MacsError(f"{what}: two files named '{f.stem}' ({out[f.stem]} and {f}); "
                            "names must be unique")
        out[f.stem] = f
    return out


def pair_files(dataset: str, pred_root: Path, gt_root: Path, audio_root: Path | None = None,
               want_audio: bool = True) -> Pairing:
    """Pair the files of the three folders; raises a one-line MacsError when nothing pairs."""
    dataset = check_dataset(dataset)
    pred_root = _require_dir(pred_root, "--pred")
    gt_root = _require_dir(gt_root, "--gt")
    if audio_root is None and dataset == "landscape" and want_audio:
        audio_root = gt_root
    elif audio_root is not None:
        audio_root = _require_dir(audio_root, "--audio")
    pred_files = list_images(pred_root, dataset, "pred")
    gt_files = list_images(gt_root, dataset, "gt")
    if not pred_files:
        raise MacsError(f"--pred {pred_root}: no images found")
    if not gt_files:
        raise MacsError(f"--gt {gt_root}: no images found")
    pred = _by_key(pred_files, "--pred")
    _by_key(gt_files, "--gt")
    audio = _by_key(list_audio(audio_root, dataset), "--audio") if audio_root and want_audio else {}
    pairs, unpaired_gt, without_audio = [], [], []
    used_audio: set[Path] = set()
    for g in gt_files:
        key = g.stem
        clip = clip_of(key, dataset)
        p = pred.get(key) or (pred.get(clip) if clip != key else None)
        if p is None:
            unpaired_gt.append(g)
            continue
        a = audio.get(key) or audio.get(clip)
        if a is None:
            without_audio.append(key)
        else:
            used_audio.add(a)
        pairs.append(Pair(key, clip, p, g, a))
    used_pred = {p.pred for p in pairs}
    if not pairs:
        raise MacsError(f"no pairs: none of the {len(pred_files)} images in {pred_root} matches a "
                        f"{DATASET_LABELS[dataset]} frame name among the {len(gt_files)} in {gt_root} "
                        f"(e.g. {gt_files[0].stem} vs {pred_files[0].stem})")
    return Pairing(dataset, pairs,
                   unpaired_pred=[f for f in pred_files if f not in used_pred],
                   unpaired_gt=unpaired_gt,
                   unpaired_audio=[f for f in audio.values() if f not in used_audio] if audio else [],
                   without_audio=without_audio if want_audio else [])


def assign_folds(clips: list[str], folds: int) -> dict[str, int]:
    """Deterministic, balanced fold of every clip id: clips ordered by SHA-1 of the id, dealt
    round-robin. Independent of file order and of the other clips' names' order."""
    unique = sorted(set(clips), key=lambda c: (hashlib.sha1(c.encode("utf-8")).hexdigest(), c))
    if folds < 1:
        raise ConfigError(f"--folds {folds}: must be at least 1")
    if folds > len(unique):
        raise MacsError(f"--folds {folds}: only {len(unique)} clips to split")
    return {c: i % folds for i, c in enumerate(unique)}
