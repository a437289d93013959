"""Separation metrics from folders: SI-SDR(i) of stems against references, best grouping and
best one-to-one assignment (:mod:`macs_cli.evaluation.sisdr`).

    PRED/<name>/stem_00.wav ... (+ manifest.json)   as written by ``macs separate``
    REF/<name>/<anything>.wav ...                    one file per source

Everything is read mono and resampled (soxr HQ) to one rate (16 kHz by default) and cut to the
shortest of the item's files. The mixture of the improvement is the manifest's ``source`` file when
it is readable (``mixture="auto"``), else the sum of the references (how evaluation mixtures are
built); ``"refs"`` and ``"manifest"`` force one of the two.

Per item: SI-SDR (mean over the S references) under the best grouping of the M stems into S
groups (each stem in exactly one group, no group empty) and under the best one-to-one choice of S
distinct stems (the others dropped), both minus the mixture's SI-SDR for the improvement.
Items with fewer stems than references are skipped (and listed).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..audio.io import AUDIO_SUFFIXES, read_audio
from ..errors import AudioError, ConfigError, MacsError
from .sisdr import best_grouped_sisdr, best_one_to_one_sisdr, mixture_sisdr

MAX_GROUPINGS = 200_000          # S^M assignments enumerated for the best grouping
SEP_COLUMNS = ("sisdri_grouped", "sisdri_one_to_one", "sisdr_grouped", "sisdr_one_to_one",
               "sisdr_mixture")
SEP_LABELS = {"sisdri_grouped": "SI-SDRi, best grouping (dB)",
              "sisdri_one_to_one": "SI-SDRi, best one-to-one (dB)",
              "sisdr_grouped": "SI-SDR, best grouping (dB)",
              "sisdr_one_to_one": "SI-SDR, best one-to-one (dB)",
              "sisdr_mixture": "SI-SDR of the mixture (dB)"}


@dataclass
class SepItem:
    name: str
    stems: list[Path]
    refs: list[Path]
    manifest: dict | None = None


@dataclass
class SepPairing:
    items: list[SepItem]
    unpaired_pred: list[str] = field(default_factory=list)
    unpaired_ref: list[str] = field(default_factory=list)


def _audio_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in AUDIO_SUFFIXES), key=str)


def _folders_with_audio(root: Path, stems_only: bool) -> dict[str, Path]:
    out = {}
    for d in sorted([root, *(p for p in root.rglob("*") if p.is_dir())], key=str):
        rel = d.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        files = _audio_in(d)
        if stems_only:
            files = [f for f in files if f.stem.startswith("stem_")]
        if files:
            out[rel.as_posix() if rel.parts else d.name] = d
    return out


def _stems_of(folder: Path) -> tuple[list[Path], dict | None]:
    manifest = None
    mpath = folder / "manifest.json"
    if mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, ValueError) as exc:
            raise MacsError(f"{mpath}: unreadable manifest ({exc})") from None
        listed = [folder / s["file"] for s in manifest.get("stems", []) if "file" in s]
        if listed and all(p.is_file() for p in listed):
            return listed, manifest
    return [f for f in _audio_in(folder) if f.stem.startswith("stem_")], manifest


def pair_separation(pred_root: Path, ref_root: Path) -> SepPairing:
    """Match ``PRED/<name>/`` stem folders with ``REF/<name>/`` reference folders."""
    for opt, root in (("--pred", pred_root), ("--ref", ref_root)):
        if root is None:
            raise ConfigError(f"{opt} is required for --task separation")
        if not Path(root).is_dir():
            raise MacsError(f"{opt} {root}: no such folder")
    pred = _folders_with_audio(Path(pred_root), stems_only=True)
    refs = _folders_with_audio(Path(ref_root), stems_only=False)
    if not pred:
        raise MacsError(f"--pred {pred_root}: no stem folders (<name>/stem_XX.wav) found")
    items = []
    for name, folder in pred.items():
        if name in refs:
            stems, manifest = _stems_of(folder)
            items.append(SepItem(name, stems, _audio_in(refs[name]), manifest))
    if not items:
        raise MacsError(f"no pairs: none of the {len(pred)} stem folders in {pred_root} has a "
                        f"reference folder of the same name in {ref_root}")
    return SepPairing(items, [n for n in pred if n not in refs], [n for n in refs if n not in pred])


def _mixture(item: SepItem, refs: np.ndarray, rate: int, mode: str) -> tuple[np.ndarray, str]:
    src = (item.manifest or {}).get("source")
    if mode in ("auto", "manifest") and src and Path(src).is_file():
        x, _ = read_audio(Path(src), rate)
        return x, "manifest"
    if mode == "manifest":
        raise MacsError(f"{item.name}: --mixture manifest, but the manifest's source "
                        f"{src or '(none)'} is not readable")
    return refs.sum(0), "sum_of_references"


def evaluate_item(item: SepItem, rate: int = 16000, mixture: str = "auto") -> dict:
    """SI-SDR figures of one item (see the module docstring)."""
    stems = [read_audio(p, rate)[0] for p in item.stems]
    refs = [read_audio(p, rate)[0] for p in item.refs]
    out = {"name": item.name, "stems": len(stems), "references": len(refs),
           "stem_files": [str(p) for p in item.stems], "reference_files": [str(p) for p in item.refs]}
    if len(stems) < len(refs):
        return {**out, "skipped": f"{len(stems)} stems for {len(refs)} references"}
    length = min(x.shape[0] for x in stems + refs)
    r = np.stack([x[:length] for x in refs]).astype(np.float64)
    mix, mix_from = _mixture(item, r, rate, mixture)
    length = min(length, mix.shape[0])
    r, mix = r[:, :length], mix[:length].astype(np.float64)
    s = np.stack([x[:length] for x in stems]).astype(np.float64)
    longest = max(x.shape[0] for x in stems + refs)
    st, rt = torch.from_numpy(s)[None], torch.from_numpy(r)[None]
    mix_sdr = float(mixture_sisdr(torch.from_numpy(mix)[None], rt)[0])
    one, omat = best_one_to_one_sisdr(st, rt)
    out.update(samples=length, sample_rate=rate, trimmed_samples=longest - length, mixture=mix_from,
               sisdr_mixture=mix_sdr, sisdr_one_to_one=float(one[0]),
               sisdri_one_to_one=float(one[0]) - mix_sdr,
               one_to_one=[int(np.argmax(row)) for row in omat[0].numpy()])
    if len(refs) ** len(stems) <= MAX_GROUPINGS:
        grp, gmat = best_grouped_sisdr(st, rt)
        out.update(sisdr_grouped=float(grp[0]), sisdri_grouped=float(grp[0]) - mix_sdr,
                   grouping=[[int(j) for j in np.flatnonzero(row)] for row in gmat[0].numpy()])
    else:
        out.update(sisdr_grouped=None, sisdri_grouped=None,
                   grouping_note=f"{len(refs)}^{len(stems)} groupings: too many to search")
    return out


def summarize(values: list[float]) -> dict:
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if x.size == 0:
        return {"mean": None, "median": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(x.mean()), "median": float(np.median(x)),
            "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
            "min": float(x.min()), "max": float(x.max()), "n": int(x.size)}


def evaluate_separation(pairing: SepPairing, sample_rate: int = 16000, mixture: str = "auto",
                        progress: Callable[[str, int, int], None] | None = None,
                        name: str | None = None) -> dict:
    """Every item's SI-SDR figures and their mean/median; returns the report as a JSON-able dict."""
    if mixture not in ("auto", "refs", "manifest"):
        raise ConfigError(f"--mixture {mixture}: expected auto, refs or manifest")
    if sample_rate < 1000:
        raise ConfigError(f"--sample-rate {sample_rate}: too low")
    t0 = time.time()
    per_item = []
    for i, item in enumerate(pairing.items):
        if not item.refs:
            raise AudioError(f"{item.name}: no reference audio")
        per_item.append(evaluate_item(item, sample_rate, mixture))
        if progress:
            progress("separation", i + 1, len(pairing.items))
    scored = [r for r in per_item if "skipped" not in r]
    if not scored:
        raise MacsError(f"no item could be scored ({per_item[0]['name']}: {per_item[0]['skipped']})")
    return {
        "macs_version": __version__,
        "task": "separation",
        "name": name,
        "results": {c: summarize([r.get(c) for r in scored]) for c in SEP_COLUMNS},
        "pairing": {"items": len(pairing.items), "scored": len(scored),
                    "skipped": [{"name": r["name"], "reason": r["skipped"]}
                                for r in per_item if "skipped" in r],
                    "unpaired_pred": pairing.unpaired_pred, "unpaired_ref": pairing.unpaired_ref},
        "settings": {"sample_rate": sample_rate, "mixture": mixture, "std_ddof": 1},
        "timing": {"total_s": round(time.time() - t0, 3)},
        "per_item": per_item,
    }
