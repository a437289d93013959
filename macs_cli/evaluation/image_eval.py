"""Image-set evaluation: FID, KID, CLIP-FID, AIS(-z), IIS(-z) over paired files, with folds.

    from macs_cli.evaluation.pairing import pair_files
    from macs_cli.evaluation.encoders import build_encoders
    from macs_cli.evaluation.embedding import EmbeddingCache
    from macs_cli.evaluation.image_eval import ImageEvalOptions, evaluate_images

    pairing = pair_files("llp-multi", "gen/", "frames/", "audio/")
    opts = ImageEvalOptions(metrics=["fid", "kid", "clip-fid", "ais", "iis"], folds=5)
    encoders = build_encoders(opts.metrics, "cuda", weights_dir="weights/")
    report = evaluate_images(pairing, encoders, opts, cache=EmbeddingCache("cache/"))

Every file is embedded once per network (Inception for FID/KID; CLIP for CLIP-FID and for the
generated and ground-truth images of AIS/IIS; Wav2CLIP for the audio), the folds and all metrics
reuse those features. FID/KID/CLIP-FID use the unique generated and ground-truth files of the
pairs (of the fold), in clean-fid's folder order.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ConfigError, MacsError
from .embedding import EmbeddingCache, Progress, embed_audio, embed_images
from .encoders import Encoders
from .image_metrics import (KID_SUBSET_SIZE, KID_SUBSETS, SingularCovarianceWarning, fid_from_features,
                            kid_from_features)
from .pairing import DATASET_LABELS, Pairing, assign_folds
from .similarity import similarity_scores

METRICS = ("fid", "kid", "clip-fid", "ais", "iis")
COLUMNS = ("FID", "CLIP-FID", "KID", "AIS", "AIS-z", "IIS", "IIS-z")   # the paper's table
AIS_AVERAGES = ("clips", "pairs")
_ALIASES = {"ais-z": "ais", "iis-z": "iis", "clipfid": "clip-fid", "clip_fid": "clip-fid"}


def parse_metrics(text: str | None) -> list[str]:
    """``"fid,kid,..."`` -> canonical names in METRICS order; ``None``/``all`` -> all of them."""
    if text is None or text.strip().lower() in ("", "all"):
        return list(METRICS)
    names = []
    for raw in text.split(","):
        m = raw.strip().lower()
        if not m:
            continue
        if m == "all":                  # "all" among others: all of them
            return list(METRICS)
        m = _ALIASES.get(m, m)
        if m not in METRICS:
            raise ConfigError(f"--metrics: unknown metric '{raw.strip()}' "
                              f"(choose from {', '.join(METRICS)}, ais-z, iis-z, all)")
        names.append(m)
    if not names:
        raise ConfigError("--metrics: no metric named")
    return [m for m in METRICS if m in names]


@dataclass
class ImageEvalOptions:
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    folds: int = 1
    batch_size: int = 32
    num_workers: int = 0
    device: str = "cpu"
    kid_seed: int | None = 0
    kid_subsets: int = KID_SUBSETS
    kid_subset_size: int = KID_SUBSET_SIZE
    # AIS / AIS-z averaged over audio clips (the official ais.py: one row per clip) or over pairs
    # (ground-truth frames: clips weighted by their frame count)
    ais_average: str = "clips"

    def validate(self) -> "ImageEvalOptions":
        if self.ais_average not in AIS_AVERAGES:
            raise ConfigError(f"--ais-average {self.ais_average}: expected {' or '.join(AIS_AVERAGES)}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.num_workers < 0:
            raise ConfigError(f"--workers {self.num_workers}: must be 0 or more")
        if self.folds < 1:
            raise ConfigError(f"--folds {self.folds}: must be at least 1")
        if not 0 <= self.kid_seed < 2 ** 32:   # numpy's RandomState range, used for KID's subsets
            raise ConfigError(f"--seed {self.kid_seed}: must be in 0..2^32-1")
        return self


@dataclass
class _Features:
    inception: dict[Path, np.ndarray] = field(default_factory=dict)
    clip: dict[Path, np.ndarray] = field(default_factory=dict)
    audio: dict[Path, np.ndarray] = field(default_factory=dict)


def _unique(paths) -> list[Path]:
    return sorted(set(paths), key=str)   # clean-fid scans folders in sorted path-string order


def _embed_all(pairing: Pairing, enc: Encoders, opts: ImageEvalOptions, cache: EmbeddingCache,
               progress: Progress | None) -> tuple[_Features, dict]:
    m = set(opts.metrics)
    gen = _unique(p.pred for p in pairing.pairs)
    gt = _unique(p.gt for p in pairing.pairs)
    audio = _unique(p.audio for p in pairing.pairs if p.audio is not None)
    feats, digests, counts = _Features(), {}, {}

    def run(stage: str, files: list[Path], encoder) -> dict[Path, np.ndarray]:
        if encoder is None:
            raise MacsError(f"no {stage} encoder loaded for metrics {', '.join(opts.metrics)}")
        before = cache.misses
        x = embed_images(files, encoder, opts.device, opts.batch_size, cache, opts.num_workers,
                         progress, stage, digests)
        counts[stage] = {"files": len(files), "embedded": cache.misses - before}
        return dict(zip(files, x))

    if m & {"fid", "kid"}:
        feats.inception = run("inception", _unique(gen + gt), enc.inception)
    need_clip_gt = bool(m & {"clip-fid", "iis"})
    if m & {"clip-fid", "ais", "iis"}:
        feats.clip = run("clip", _unique(gen + (gt if need_clip_gt else [])), enc.clip)
    if "ais" in m:
        if enc.wav2clip is None:
            raise MacsError("no audio encoder loaded for AIS")
        before = cache.misses
        x = embed_audio(audio, enc.wav2clip, opts.device, cache, progress, "wav2clip", digests)
        feats.audio = dict(zip(audio, x))
        counts["wav2clip"] = {"files": len(audio), "embedded": cache.misses - before}
    return feats, counts


def _metrics_on(pairs, feats: _Features, opts: ImageEvalOptions, what: str) -> tuple[dict, dict]:
    """All requested metrics on a list of pairs; returns (table values, per-key per-item values)."""
    m = set(opts.metrics)
    gen = _unique(p.pred for p in pairs)
    gt = _unique(p.gt for p in pairs)
    out: dict[str, float | None] = {c: None for c in COLUMNS}
    items: dict[str, dict] = {p.key: {} for p in pairs}
    try:
        if "fid" in m:
            out["FID"] = fid_from_features(_stack(feats.inception, gen), _stack(feats.inception, gt))
        if "kid" in m:
            out["KID"] = kid_from_features(_stack(feats.inception, gen), _stack(feats.inception, gt),
                                           opts.kid_seed, opts.kid_subsets, opts.kid_subset_size)
        if "clip-fid" in m:
            out["CLIP-FID"] = fid_from_features(_stack(feats.clip, gen), _stack(feats.clip, gt))
        gen_pos = {f: i for i, f in enumerate(gen)}
        gen_clip = {}
        for p in pairs:
            gen_clip.setdefault(p.pred, p.clip)
        gen_clips = np.array([gen_clip[f] for f in gen], dtype=object)
        g = _stack(feats.clip, gen) if m & {"ais", "iis"} else None
        if "ais" in m:
            rows = [p for p in pairs if p.audio is not None]
            if not rows:
                raise MacsError("AIS: no pair has audio")
            r = similarity_scores(_stack(feats.audio, [p.audio for p in rows]), g,
                                  np.array([gen_pos[p.pred] for p in rows]),
                                  np.array([p.clip for p in rows], dtype=object), gen_clips,
                                  per_clip=opts.ais_average == "clips")
            out["AIS"], out["AIS-z"] = r.score, r.z
            for p, s, z in zip(rows, r.scores, r.zs):
                items[p.key].update(ais=float(s), ais_z=float(z))
        if "iis" in m:
            r = similarity_scores(_stack(feats.clip, [p.gt for p in pairs]), g,
                                  np.array([gen_pos[p.pred] for p in pairs]),
                                  np.array([p.clip for p in pairs], dtype=object), gen_clips)
            out["IIS"], out["IIS-z"] = r.score, r.z
            for p, s, z in zip(pairs, r.scores, r.zs):
                items[p.key].update(iis=float(s), iis_z=float(z))
    except MacsError as exc:
        raise MacsError(f"{what}: {exc}") from None
    return out, items


def _stack(table: dict[Path, np.ndarray], files) -> np.ndarray:
    return np.stack([table[f] for f in files])


def evaluate_images(pairing: Pairing, encoders: Encoders, opts: ImageEvalOptions,
                    cache: EmbeddingCache | None = None, progress: Progress | None = None,
                    name: str | None = None) -> dict:
    """Compute every requested metric (and per fold); returns the report as a JSON-able dict."""
    opts.validate()
    cache = cache or EmbeddingCache(None)
    if "ais" in opts.metrics and not any(p.audio is not None for p in pairing.pairs):
        raise MacsError("AIS needs audio: no audio file matches the pairs (pass --audio DIR)")
    fold_of = assign_folds([p.clip for p in pairing.pairs], opts.folds)
    t0 = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feats, counts = _embed_all(pairing, encoders, opts, cache, progress)
        t_embed = time.time() - t0
        overall, items = _metrics_on(pairing.pairs, feats, opts, "all pairs")
        folds = []
        for k in range(opts.folds if opts.folds > 1 else 0):
            subset = [p for p in pairing.pairs if fold_of[p.clip] == k]
            values, _ = _metrics_on(subset, feats, opts, f"fold {k + 1}/{opts.folds}")
            folds.append({"fold": k + 1, "pairs": len(subset),
                          "clips": len({p.clip for p in subset}), **values})
        caught_warnings = sorted({str(w.message).splitlines()[0] for w in caught
                                  if issubclass(w.category, (SingularCovarianceWarning, RuntimeWarning))})
    summary = {"mean": {}, "std": {}}
    for c in COLUMNS:
        vals = [f[c] for f in folds if f[c] is not None]
        summary["mean"][c] = float(np.mean(vals)) if vals else None
        summary["std"][c] = float(np.std(vals)) if vals else None
    headline = summary["mean"] if folds else overall
    per_item = []
    for p in pairing.pairs:
        per_item.append({"key": p.key, "clip": p.clip, "fold": fold_of[p.clip] + 1,
                         "pred": str(p.pred), "gt": str(p.gt),
                         "audio": str(p.audio) if p.audio else None, **items[p.key]})
    return {
        "macs_version": __version__,
        "task": "images",
        "name": name,
        "dataset": pairing.dataset,
        "dataset_label": DATASET_LABELS[pairing.dataset],
        "metrics": list(opts.metrics),
        "columns": list(COLUMNS),
        "results": headline,
        "all_pairs": overall,
        "folds": {"k": opts.folds, "per_fold": folds, "mean": summary["mean"],
                  "std": summary["std"], "std_ddof": 0,
                  "split": "clips ordered by SHA-1 of the clip id, dealt round-robin"}
        if folds else None,
        "pairing": pairing.summary(),
        "settings": {**asdict(opts), "embedding_cache": str(cache.root) if cache.root else None},
        "encoders": {"inception": getattr(encoders.inception, "cache_key", None),
                     "clip": getattr(encoders.clip, "cache_key", None),
                     "wav2clip": getattr(encoders.wav2clip, "cache_key", None),
                     "weights": dict(encoders.weights)},
        "embeddings": {"per_network": counts, "cache_hits": cache.hits,
                       "embedded": cache.misses},
        "warnings": caught_warnings,
        "timing": {"embedding_s": round(t_embed, 3), "total_s": round(time.time() - t0, 3)},
        "per_item": per_item,
    }
