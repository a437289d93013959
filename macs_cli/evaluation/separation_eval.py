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
Items are skipped, listed in the report's ``pairing.skipped`` with a ``kind`` and a reason, and
left out of every mean and median when:

* ``error``: a stem, reference or (``--mixture manifest``) mixture file cannot be read, or the
  folder's ``manifest.json`` is unreadable or of the wrong shape; the other items are still
  evaluated, and ``pairing.failed`` counts these (the command line exits 1 when it is not 0);
* ``fewer_stems``: fewer stems than references;
* ``silent``: a reference, or the mixture, is silent over the scored samples: the RMS of the
  mean-removed signal (SI-SDR removes the mean) below :data:`SILENT_RMS` (1e-5, -100 dBFS, a third
  of one 16-bit step). SI-SDR against a silent reference is a number of the epsilon only (an
  all-zero source scored -31 dB one-to-one, an all-silent item 0 dB).
"""

from __future__ import annotations

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
SILENT_RMS = 1e-5                # RMS of a mean-removed reference/mixture below this: silent
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
    error: str | None = None     # the item cannot be evaluated (e.g. a bad manifest.json)


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


def _stem_files(folder: Path) -> list[Path]:
    return [f for f in _audio_in(folder) if f.stem.startswith("stem_")]


def _stems_of(folder: Path) -> tuple[list[Path], dict | None]:
    """The stem files in the manifest's order (when it lists existing files), and the manifest.

    Raises MacsError naming ``manifest.json`` when it is unreadable or of the wrong shape."""
    from ..formats import read_stem_manifest

    manifest = None
    mpath = folder / "manifest.json"
    if mpath.is_file():
        manifest = read_stem_manifest(mpath)
        listed = [folder / s["file"] for s in manifest.get("stems", []) if "file" in s]
        if listed and all(p.is_file() for p in listed):
            return listed, manifest
    return _stem_files(folder), manifest


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
            try:
                stems, manifest = _stems_of(folder)
                items.append(SepItem(name, stems, _audio_in(refs[name]), manifest))
            except MacsError as exc:  # this item only; the others are still evaluated
                items.append(SepItem(name, _stem_files(folder), _audio_in(refs[name]), None,
                                     error=str(exc)))
    if not items:
        raise MacsError(f"no pairs: none of the {len(pred)} stem folders in {pred_root} has a "
                        f"reference folder of the same name in {ref_root}")
    return SepPairing(items, [n for n in pred if n not in refs], [n for n in refs if n not in pred])


def _mixture(item: SepItem, refs: np.ndarray, rate: int,
             mode: str) -> tuple[np.ndarray, str, str | None]:
    """(mixture, where it came from, a note when ``auto`` fell back from an unreadable source)."""
    src = (item.manifest or {}).get("source")
    note = None
    if mode in ("auto", "manifest") and src and Path(src).is_file():
        try:
            x, _ = read_audio(Path(src), rate)
            return x, "manifest", None
        except (AudioError, OSError) as exc:
            if mode == "manifest":
                raise MacsError(f"{item.name}: --mixture manifest, but the manifest's source "
                                f"is not readable ({exc})") from None
            note = f"manifest source not readable ({exc}); sum of references used"
    if mode == "manifest":
        raise MacsError(f"{item.name}: --mixture manifest, but the manifest's source "
                        f"{src or '(none)'} is not readable")
    return refs.sum(0), "sum_of_references", note


def _silent(x: np.ndarray) -> bool:
    """RMS of the mean-removed signal below SILENT_RMS (SI-SDR ignores the mean)."""
    return x.size == 0 or float(np.sqrt(np.mean(np.square(x - x.mean())))) < SILENT_RMS


def _read(path: Path, rate: int) -> np.ndarray:
    try:
        return read_audio(path, rate)[0]
    except OSError as exc:  # AudioError (MacsError) passes through, naming the file
        raise AudioError(f"{path}: {exc.strerror or exc}") from None


def _skip(out: dict, kind: str, reason: str) -> dict:
    return {**out, "skipped": reason, "skip_kind": kind}


def evaluate_item(item: SepItem, rate: int = 16000, mixture: str = "auto") -> dict:
    """SI-SDR figures of one item (see the module docstring).

    Items that cannot be scored come back with ``skipped`` (the reason) and ``skip_kind``
    (``fewer_stems`` or ``silent``); an unreadable file or manifest raises MacsError naming it."""
    if item.error:
        raise MacsError(item.error)
    if not item.refs:
        raise AudioError(f"{item.name}: no reference audio")
    out = {"name": item.name, "stems": len(item.stems), "references": len(item.refs),
           "stem_files": [str(p) for p in item.stems], "reference_files": [str(p) for p in item.refs]}
    if len(item.stems) < len(item.refs):
        return _skip(out, "fewer_stems", f"{len(item.stems)} stems for {len(item.refs)} references")
    stems = [_read(p, rate) for p in item.stems]
    refs = [_read(p, rate) for p in item.refs]
    length = min(x.shape[0] for x in stems + refs)
    r = np.stack([x[:length] for x in refs]).astype(np.float64)
    mix, mix_from, mix_note = _mixture(item, r, rate, mixture)
    length = min(length, mix.shape[0])
    r, mix = r[:, :length], mix[:length].astype(np.float64)
    silent = [Path(p).name for p, x in zip(item.refs, r) if _silent(x)]
    if silent:
        return _skip(out, "silent", f"silent reference{'s' if len(silent) > 1 else ''} "
                                    f"{', '.join(silent)} (RMS below {SILENT_RMS:g})")
    if _silent(mix):
        what = "manifest source" if mix_from == "manifest" else "sum of the references"
        return _skip(out, "silent", f"silent mixture ({what}, RMS below {SILENT_RMS:g})")
    s = np.stack([x[:length] for x in stems]).astype(np.float64)
    longest = max(x.shape[0] for x in stems + refs)
    st, rt = torch.from_numpy(s)[None], torch.from_numpy(r)[None]
    mix_sdr = float(mixture_sisdr(torch.from_numpy(mix)[None], rt)[0])
    one, omat = best_one_to_one_sisdr(st, rt)
    if mix_note:
        out["mixture_note"] = mix_note
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
    """Every item's SI-SDR figures and their mean/median; returns the report as a JSON-able dict.

    An item that cannot be read is listed (``pairing.skipped`` with kind ``error``, counted in
    ``pairing.failed``) and the others are still evaluated; MacsError only when no item is scored."""
    if mixture not in ("auto", "refs", "manifest"):
        raise ConfigError(f"--mixture {mixture}: expected auto, refs or manifest")
    if sample_rate < 1000:
        raise ConfigError(f"--sample-rate {sample_rate}: too low")
    t0 = time.time()
    per_item = []
    for i, item in enumerate(pairing.items):
        try:
            per_item.append(evaluate_item(item, sample_rate, mixture))
        except MacsError as exc:
            per_item.append(_skip({"name": item.name, "stems": len(item.stems),
                                   "references": len(item.refs),
                                   "stem_files": [str(p) for p in item.stems],
                                   "reference_files": [str(p) for p in item.refs]},
                                  "error", str(exc)))
        if progress:
            progress("separation", i + 1, len(pairing.items))
    scored = [r for r in per_item if "skipped" not in r]
    skipped = [{"name": r["name"], "kind": r["skip_kind"], "reason": r["skipped"]}
               for r in per_item if "skipped" in r]
    if not scored:
        first = skipped[0]
        more = f"; {len(skipped) - 1} more" if len(skipped) > 1 else ""
        raise MacsError(f"no item could be scored ({first['name']}: {first['reason']}{more})")
    return {
        "macs_version": __version__,
        "task": "separation",
        "name": name,
        "results": {c: summarize([r.get(c) for r in scored]) for c in SEP_COLUMNS},
        "pairing": {"items": len(pairing.items), "scored": len(scored), "skipped": skipped,
                    "failed": sum(s["kind"] == "error" for s in skipped),
                    "unpaired_pred": pairing.unpaired_pred, "unpaired_ref": pairing.unpaired_ref},
        "settings": {"sample_rate": sample_rate, "mixture": mixture, "std_ddof": 1},
        "timing": {"total_s": round(time.time() - t0, 3)},
        "per_item": per_item,
    }
