"""Training data: clip collections (folder, CSV manifest, FSD50K layout, compact .npz corpus) and
the on-device synthesiser of mixtures of mixtures for MixIT.

A :class:`ClipBank` holds every clip of a split in one flat float tensor (resampled to the model
rate, clipped to ``max_seconds``), so batches are drawn with one gather on the training device and
a ``torch.Generator`` makes the stream of batches reproducible (and resumable).
"""

from __future__ import annotations

import csv
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..audio.io import AUDIO_SUFFIXES, find_audio_files, read_audio
from ..errors import AudioError, ConfigError
from .losses import MixtureBatch

SPLITS = ("train", "heldout")
KINDS = ("auto", "folder", "csv", "fsd50k", "npz")
HELDOUT_FOLDERS = ("heldout", "val", "test")  # clips under a folder of one of these names are held out
MIN_CLIP_SECONDS = 0.1  # shorter clips are left out of a bank


class DataError(ConfigError):
    """The training data is missing, unreadable or holds no usable clip: an input problem, so it
    exits with 1 (not ConfigError's 2). It subclasses ConfigError so that callers which catch
    ConfigError around an optional split (the trainer's held-out set) keep doing so."""

    exit_code = 1


@dataclass
class Clip:
    """One clip of a training set: its audio file, labels, and (train-sep) its split and source
    group, or (train-gen) a precomputed stem-embedding .npy used instead of separating it."""

    path: str
    labels: list[str] = field(default_factory=list)
    embedding: str | None = None
    split: str = "train"
    group: str = ""

    @property
    def audio(self) -> str:
        return self.path


@dataclass
class ClipBank:
    audio: torch.Tensor          # (N_total,) float32, clips back to back
    starts: torch.Tensor         # (C,) int64
    lengths: torch.Tensor        # (C,) int64
    rms: torch.Tensor            # (C,) float32, RMS of each clip
    labels: list[list[str]]
    sample_rate: int
    # clips left out when the bank was loaded: reason -> count ("missing", "unreadable", "empty",
    # "non-finite", "too short", "silent"), how many clips were looked at, and one example
    skipped: dict[str, int] = field(default_factory=dict)
    considered: int = 0
    skip_example: str = ""
    _draw_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.starts.numel())

    def to(self, device: torch.device | str) -> "ClipBank":
        return ClipBank(self.audio.to(device), self.starts.to(device), self.lengths.to(device),
                        self.rms.to(device), self.labels, self.sample_rate, dict(self.skipped),
                        self.considered, self.skip_example)

    def skip_warning(self) -> str | None:
        """``warning: skipped 3 of 40 clips (2 unreadable, 1 silent; e.g. ...)``, or None if no
        clip was left out. Plain text (no console markup)."""
        n = sum(self.skipped.values())
        if not n:
            return None
        why = ", ".join(f"{count} {reason}" for reason, count in
                        sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])))
        example = f"; e.g. {self.skip_example}" if self.skip_example else ""
        return f"warning: skipped {n} of {self.considered or n + len(self)} clips ({why}{example})"

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum()) / self.sample_rate

    @property
    def first_labels(self) -> list[str]:
        """Each clip's category for ``mix.balance``: its first label ("" for an unlabelled clip)."""
        return [lab[0] if lab else "" for lab in self.labels]

    def draw_weights(self, balance: float) -> torch.Tensor:
        """Per-clip draw probabilities (C,) on the bank's device for ``mix.balance``: a clip weighs
        n ** -balance, n being the number of clips that share its first label (an unlabelled clip
        counts under the label ""). 0: every clip alike (a category is drawn as often as it has
        clips); 1: every category alike; between: tempered."""
        key = float(balance)
        if key not in self._draw_cache:
            first = self.first_labels
            counts: dict[str, int] = {}
            for name in first:
                counts[name] = counts.get(name, 0) + 1
            n = torch.tensor([counts[name] for name in first], dtype=torch.float64)
            w = n.pow(-key)
            self._draw_cache[key] = (w / w.sum()).to(torch.float32).to(self.audio.device)
        return self._draw_cache[key]

    def category_shares(self, balance: float) -> dict[str, float]:
        """How often each first label is drawn under ``mix.balance`` (shares summing to 1)."""
        w = self.draw_weights(balance).cpu().tolist()
        shares: dict[str, float] = {}
        for name, p in zip(self.first_labels, w):
            shares[name] = shares.get(name, 0.0) + p
        return shares

    @classmethod
    def from_arrays(cls, clips: list[np.ndarray], labels: list[list[str]], sample_rate: int) -> "ClipBank":
        if not clips:
            raise DataError("no usable clips in the training data")
        if any(c.size == 0 for c in clips):
            raise DataError("a clip of the training data has no samples")
        lengths = torch.tensor([c.size for c in clips], dtype=torch.int64)
        starts = torch.cumsum(lengths, 0) - lengths
        audio = torch.from_numpy(np.concatenate(clips).astype(np.float32))
        rms = torch.tensor([float(np.sqrt(np.mean(np.square(c, dtype=np.float64)))) for c in clips],
                           dtype=torch.float32)
        return cls(audio, starts, lengths, rms, labels, sample_rate)


# -- reading clip lists --------------------------------------------------------------------------
def _split_labels(text: str) -> list[str]:
    return [t.strip() for t in str(text).replace(";", ",").split(",") if t.strip()]


def read_manifest_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV manifest; a one-line DataError if it cannot be read or is empty."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise DataError(f"{path}: cannot read manifest ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a CSV text file ({str(exc).splitlines()[0]})") from None
    if not rows:
        raise DataError(f"{path}: manifest has no rows")
    return rows


def _cell(row: dict[str, str], key: str | None) -> str:
    """A CSV cell as text ('' for a missing column or a short row)."""
    value = row.get(key) if key is not None else None
    return value.strip() if isinstance(value, str) else ""


def clips_from_csv(path: Path) -> list[Clip]:
    """CSV with a ``path``/``audio``/``file``/``fname`` column, optional ``label(s)``, ``split``.

    A row without a path becomes a clip with an empty ``path`` (counted as missing on loading)."""
    path = Path(path)
    rows = read_manifest_rows(path)
    col = next((c for c in ("path", "audio", "file", "fname") if c in rows[0]), None)
    if col is None:
        raise DataError(f"{path}: manifest needs a 'path' column (has {', '.join(map(str, rows[0]))})")
    lab = next((c for c in ("labels", "label") if c in rows[0]), None)
    clips = []
    for row in rows:
        where = _cell(row, col)
        p = Path(where)
        if where and not p.is_absolute():
            p = path.parent / p
        split = _cell(row, "split") or "train"
        split = "heldout" if split in ("heldout", "val", "valid", "validation", "test", "eval") else "train"
        clips.append(Clip(str(p) if where else "", _split_labels(_cell(row, lab)), split=split,
                          group=_cell(row, "group")))
    return clips


def clips_from_folder(root: Path) -> list[Clip]:
    """Every audio file under ``root``; its label is its parent folder's name (if not the root)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (data.kind=folder)")
    files, problems = find_audio_files([root])
    if not files:   # (broken links among usable files are left out, as unreadable clips are)
        raise DataError(problems[0] if problems else f"{root}: folder holds no audio files")
    clips = []
    for f in files:
        rel = f.relative_to(root)
        split = "heldout" if any(p in HELDOUT_FOLDERS for p in rel.parts[:-1]) else "train"
        # a file right inside a split folder (heldout/x.wav) has no class label
        label = rel.parent.name.replace("_", " ") if rel.parent.name not in ("", *HELDOUT_FOLDERS) else ""
        clips.append(Clip(str(f), [label] if label else [], split=split, group=str(rel.parent)))
    return clips


# Generic FSD50K/AudioSet classes that name no particular sound: the official MACS loader drops
# these (compared lower-cased, underscores as spaces) and keeps at most 5 labels per clip.
FSD50K_GENERIC = frozenset([
    "human sounds", "human voice", "whistling", "respiratory sounds", "human locomotion", "digestive",
    "hands", "heart sounds and heartbeat", "otoacoustic emission", "human group actions",
    "generic impact sounds", "surface contact", "deformable shell", "onomatopoeia", "silence",
    "other sourceless", "domestic animals and pets", "livestock and farm animals and working animals",
    "wild animals", "vehicle", "domestic sounds and home sounds", "mechanisms", "tools",
    "miscellaneous sources", "specific impact sounds", "sound reproduction", "accoustic environment",
    "acoustic environment", "musical instrument", "music genre", "musical concepts", "music role",
    "music mood",
])
FSD50K_MAX_LABELS = 5


def fsd50k_labels(text: str, max_labels: int = FSD50K_MAX_LABELS) -> list[str]:
    """An FSD50K ``labels`` cell -> its labels (underscores as spaces), generic classes dropped,
    the first ``max_labels`` kept (the official MACS rule)."""
    labels = [lab.replace("_", " ") for lab in _split_labels(text)]
    return [lab for lab in labels if lab.lower() not in FSD50K_GENERIC][:max_labels]


def clips_from_fsd50k(root: Path) -> list[Clip]:
    """FSD50K: ``dev_audio/``, ``eval_audio/``, ``ground_truth/dev.csv`` and ``eval.csv``.

    dev rows with split ``train`` are training clips; dev ``val`` and all eval rows are held out.
    Labels: :func:`fsd50k_labels` (generic parent classes dropped, at most 5 per clip).
    """
    root = Path(root)
    gt = root / "ground_truth"
    if not (gt / "dev.csv").exists():
        raise DataError(f"{root}: not an FSD50K folder (no ground_truth/dev.csv)")
    clips = []
    for name, folder in (("dev", "dev_audio"), ("eval", "eval_audio")):
        table = gt / f"{name}.csv"
        if not table.exists():
            continue
        rows = read_manifest_rows(table)
        if "fname" not in rows[0]:
            raise DataError(f"{table}: FSD50K ground truth needs an 'fname' column")
        for row in rows:
            split = "train" if name == "dev" and (_cell(row, "split") or "train") == "train" else "heldout"
            labels = fsd50k_labels(_cell(row, "labels"))
            fname = _cell(row, "fname")
            clips.append(Clip(str(root / folder / f"{fname}.wav") if fname else "", labels, split=split))
    return clips


MU = 255.0


def mulaw_encode(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> uint8 mu-law (mu = 255)."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    return np.round((y + 1.0) * 127.5).astype(np.uint8)


def mulaw_decode(q: np.ndarray) -> np.ndarray:
    y = q.astype(np.float64) / 127.5 - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU)) / MU).astype(np.float32)


def _clip_limit(max_seconds: float | None, rate: int) -> int | None:
    """Samples kept per clip: ``max_seconds`` at ``rate`` (at least one), None for whole clips."""
    if max_seconds is None:
        return None
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, numbers.Real) or not max_seconds > 0:
        raise ConfigError(f"max_seconds must be > 0 or None for whole clips (got {max_seconds!r})")
    if not np.isfinite(max_seconds):
        return None
    return max(1, int(max_seconds * rate))


def _clip_problem(x: np.ndarray, rate: int) -> str | None:
    """Why a decoded clip cannot train (a skip reason), or None if it can."""
    if x.size == 0:
        return "empty"
    if not np.isfinite(x).all():
        return "non-finite"
    if x.size < max(1, int(rate * MIN_CLIP_SECONDS)):
        return "too short"
    if not np.any(x):
        return "silent"
    return None


def _read_clip(path: str, rate: int) -> tuple[np.ndarray | None, str | None, str]:
    """(audio at ``rate``, None, "") or (None, skip reason, a one-line explanation)."""
    if not path:
        return None, "missing", "a manifest row without a path"
    if not Path(path).exists():
        return None, "missing", f"{path}: no such file"
    try:
        x, _ = read_audio(Path(path), rate)
    except AudioError as exc:
        msg = str(exc)
        reason = ("empty" if "empty audio" in msg else "non-finite" if "NaN or infinite" in msg
                  else "unreadable")
        return None, reason, msg
    except (OSError, ValueError, RuntimeError) as exc:  # anything else the decoders may raise
        why = str(exc).splitlines()[0] if str(exc) else repr(exc)
        return None, "unreadable", f"{path}: cannot read audio ({why})"
    reason = _clip_problem(x, rate)
    if reason is not None:
        seconds = x.size / rate
        what = {"too short": f"{seconds:.3f} s, shorter than {MIN_CLIP_SECONDS} s",
                "silent": "all samples are zero", "empty": "no samples",
                "non-finite": "NaN or infinite samples"}[reason]
        return None, reason, f"{path}: {what}"
    return x, None, ""


class _Skips:
    """Counts of left-out clips per reason, with the first explanation as an example."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.example = ""

    def add(self, reason: str, detail: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.example = self.example or detail

    def summary(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{why}; e.g. {self.example}" if self.example else why

    def bank(self, spec: Path, split: str, clips: list[np.ndarray], labels: list[list[str]],
             rate: int, considered: int) -> ClipBank:
        if not clips:
            detail = f" (all {considered} skipped: {self.summary()})" if considered else " (none listed)"
            raise DataError(f"{spec}: no usable '{split}' clips{detail}")
        bank = ClipBank.from_arrays(clips, labels, rate)
        bank.skipped, bank.considered, bank.skip_example = dict(self.counts), considered, self.example
        return bank


def _load_npz_bank(path: Path, split: str, sample_rate: int, max_seconds: float | None) -> ClipBank:
    """A compact corpus: ``audio`` (int16, float or uint8 mu-law with ``encoding='mulaw'``) clips
    back to back, ``offsets`` (N + 1), ``labels``, ``splits`` and ``sample_rate``."""
    import zipfile

    try:
        data = np.load(path, allow_pickle=False)
        audio, offsets = data["audio"], data["offsets"]
        labels, splits = data["labels"], data["splits"]
        rate = int(data["sample_rate"])
        encoding = str(data["encoding"]) if "encoding" in data.files else "pcm"
    except (OSError, KeyError, ValueError, IndexError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        why = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise DataError(f"{path}: not a macs corpus .npz ({why})") from None
    n = len(offsets) - 1
    if (audio.ndim != 1 or offsets.ndim != 1 or labels.ndim != 1 or splits.ndim != 1 or n < 0
            or len(labels) < n or len(splits) < n or rate <= 0 or not np.issubdtype(offsets.dtype, np.integer)):
        raise DataError(f"{path}: not a macs corpus .npz (audio, offsets, labels, splits or sample_rate "
                        "have the wrong shape)")
    if n > 0 and (offsets[0] < 0 or offsets[-1] > audio.size or np.any(np.diff(offsets) < 0)):
        raise DataError(f"{path}: not a macs corpus .npz (offsets out of order or past the audio)")
    if encoding == "ogg":
        return _load_ogg_npz_bank(path, split, sample_rate, max_seconds, audio, offsets, labels, splits, rate)
    if encoding == "mulaw":
        audio = mulaw_decode(audio)
    scale = 1.0 / 32768.0 if audio.dtype == np.int16 else 1.0

    def decode(i: int) -> np.ndarray:
        return audio[offsets[i]: offsets[i + 1]].astype(np.float32) * scale

    return _collect_bank(path, split, sample_rate, max_seconds, rate, n, labels, splits, decode)


class _Undecodable(Exception):
    """One clip of a packed corpus cannot be decoded (it is skipped and counted)."""


def _collect_bank(path: Path, split: str, sample_rate: int, max_seconds: float | None, rate: int, n: int,
                  labels, splits, decode) -> ClipBank:
    """The clips of ``split`` from a packed corpus: ``decode(i)`` gives clip i as float32 at
    ``rate`` (or raises _Undecodable); unusable clips are skipped and counted; then resampled."""
    clips, labs = [], []
    skips = _Skips()
    limit = _clip_limit(max_seconds, rate)
    considered = 0
    for i in range(n):
        if str(splits[i]) != split:
            continue
        considered += 1
        try:
            c = decode(i)
        except _Undecodable as exc:
            skips.add("undecodable", f"{path}: clip {i} ({exc})")
            continue
        reason = _clip_problem(c, rate)
        if reason is not None:
            skips.add(reason, f"{path}: clip {i} is {reason}")
            continue
        clips.append(c[:limit] if limit is not None else c)
        labs.append(_split_labels(str(labels[i])))
    if rate != sample_rate:
        from ..audio.io import resample

        clips = [resample(c, rate, sample_rate) for c in clips]
        clips = [c if c.size else np.zeros(1, np.float32) for c in clips]
    return skips.bank(path, split, clips, labs, sample_rate, considered)


def _load_ogg_npz_bank(path: Path, split: str, sample_rate: int, max_seconds: float | None, audio, offsets,
                       labels, splits, rate: int) -> ClipBank:
    """``encoding='ogg'``: ``audio`` is uint8, each clip an Ogg (Opus/Vorbis) file at
    ``offsets[i]:offsets[i + 1]`` (byte offsets), decoded with soundfile."""
    import io

    import soundfile as sf

    raw = np.asarray(audio, dtype=np.uint8).tobytes()

    def decode(i: int) -> np.ndarray:
        try:
            c, sr = sf.read(io.BytesIO(raw[offsets[i]: offsets[i + 1]]), dtype="float32", always_2d=True)
        except (RuntimeError, ValueError, sf.LibsndfileError) as exc:  # a damaged clip is skipped
            raise _Undecodable(str(exc)) from None
        c = c.mean(axis=1)
        if sr != rate:
            from ..audio.io import resample

            c = resample(c, sr, rate)
        return c

    return _collect_bank(path, split, sample_rate, max_seconds, rate, len(offsets) - 1, labels, splits, decode)


def data_kind(spec: str | Path, kind: str = "auto") -> str:
    """The kind of a data source (folder, csv, fsd50k or npz), ``auto`` resolved, after cheap checks
    that it exists and has the right form: a :class:`DataError` (exit 1) if not, a
    :class:`ConfigError` for an unknown ``kind``. Reads no audio, so a command can call it before
    it writes anything."""
    if kind not in KINDS:
        raise ConfigError(f"data.kind must be one of {', '.join(KINDS)} (got {kind!r})")
    spec = Path(spec)
    if not spec.exists():
        raise DataError(f"{spec}: training data not found (a folder, .csv, .npz or FSD50K root)")
    if kind == "auto":
        if spec.is_dir():
            kind = "fsd50k" if (spec / "ground_truth" / "dev.csv").exists() else "folder"
        elif spec.suffix.lower() in (".csv", ".npz"):
            kind = spec.suffix.lower()[1:]
        else:
            raise DataError(f"{spec}: not training data (a folder, .csv, .npz or FSD50K root)")
    if kind in ("folder", "fsd50k") and not spec.is_dir():
        raise DataError(f"{spec}: not a folder (data.kind={kind})")
    if kind in ("csv", "npz") and spec.is_dir():
        raise DataError(f"{spec}: is a folder, not a .{kind} file (data.kind={kind})")
    return kind


def list_clips(spec: str | Path, kind: str = "auto") -> list[Clip]:
    """The clips listed by a folder, CSV manifest or FSD50K root (``kind``: auto, folder, csv,
    fsd50k). Data that is missing or unreadable is a :class:`DataError`."""
    spec = Path(spec)
    kind = data_kind(spec, kind)
    if kind == "npz":
        raise ConfigError(f"{spec}: a .npz corpus is read whole by load_clip_bank, not listed")
    return {"csv": clips_from_csv, "folder": clips_from_folder, "fsd50k": clips_from_fsd50k}[kind](spec)


def load_clip_bank(spec: str | Path, split: str, sample_rate: int, max_seconds: float | None = 10.0,
                   kind: str = "auto", max_clips: int | None = None, progress=None) -> ClipBank:
    """Load one split of a clip collection into memory at ``sample_rate``, each clip cut to
    ``max_seconds`` (None: whole clips).

    Clips that cannot train are left out: missing files, unreadable or empty files, files with NaN
    or infinite samples, clips shorter than 0.1 s and silent clips. The bank's ``skipped`` (reason
    -> count), ``considered`` and :meth:`ClipBank.skip_warning` say how many and why. If no clip
    is usable, or the data is missing, it is a :class:`DataError` naming ``spec``."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}")
    limit = _clip_limit(max_seconds, sample_rate)
    spec = Path(spec)
    kind = data_kind(spec, kind)
    if kind == "npz":
        return _load_npz_bank(spec, split, sample_rate, max_seconds)
    clips = [c for c in list_clips(spec, kind) if c.split == split]
    if max_clips:
        clips = clips[:max_clips]
    arrays, labels = [], []
    skips = _Skips()
    for clip in clips:
        x, reason, detail = _read_clip(clip.path, sample_rate)
        if x is None:
            skips.add(reason, detail)
            continue
        arrays.append(x[:limit] if limit is not None else x)
        labels.append(clip.labels)
        if progress is not None:
            progress()
    return skips.bank(spec, split, arrays, labels, sample_rate, len(clips))


# -- synthesis ------------------------------------------------------------------------------------
@dataclass
class MixSpec:
    """How mixtures of mixtures are drawn."""

    sources_per_mixture: tuple[int, int] = (1, 2)   # each of m1, m2 holds this many clips
    repeats: tuple[int, int] = (1, 3)               # each clip occurs this many times in the window
    gain_db: tuple[float, float] = (-6.0, 6.0)      # per-source level relative to unit RMS
    loop_prob: float = 0.0                          # chance that a clip loops through the window
    # sources in the whole mixture of mixtures, drawn uniformly in lo..hi and split at random
    # between m1 (at least one) and m2 (may be empty when one source is drawn); None: the
    # per-mixture counts of sources_per_mixture
    total_sources: tuple[int, int] | None = None
    # how clips are drawn: each weighs n ** -balance, n the clips sharing its first label; 0 (every
    # clip alike, the default), 1 (every category alike) or between (ClipBank.draw_weights)
    balance: float = 0.0

    def validate(self) -> "MixSpec":
        # (no square brackets in these messages: the console would take "[lo, hi]" for markup)
        def ints(v) -> bool:
            return (isinstance(v, (list, tuple)) and len(v) == 2
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in v))

        def nums(v) -> bool:
            return (isinstance(v, (list, tuple)) and len(v) == 2
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v))

        spm = self.sources_per_mixture
        if not (ints(spm) and 1 <= spm[0] <= spm[1] <= 8):
            raise ConfigError("mix.sources_per_mixture must be two integers lo, hi with 1 <= lo <= hi <= 8")
        if not (ints(self.repeats) and 1 <= self.repeats[0] <= self.repeats[1] <= 8):
            raise ConfigError("mix.repeats must be two integers lo, hi with 1 <= lo <= hi <= 8")
        if not (nums(self.gain_db) and self.gain_db[0] <= self.gain_db[1]):
            raise ConfigError("mix.gain_db must be two numbers low, high (dB) with low <= high")
        lp = self.loop_prob
        if not (isinstance(lp, (int, float)) and not isinstance(lp, bool) and 0.0 <= lp <= 1.0):
            raise ConfigError("mix.loop_prob must be in [0, 1]")
        ts = self.total_sources
        if ts is not None and not (ints(ts) and 1 <= ts[0] <= ts[1] <= 8 and ts[1] >= 2):
            raise ConfigError("mix.total_sources must be null or two integers lo, hi with 1 <= lo <= hi <= 8 "
                              "and hi >= 2")
        bal = self.balance
        if not (isinstance(bal, (int, float)) and not isinstance(bal, bool) and 0.0 <= bal <= 1.0):
            raise ConfigError("mix.balance must be a number in [0, 1]")
        return self


def _randint(lo: int, hi: int, shape, gen: torch.Generator, device) -> torch.Tensor:
    return torch.randint(lo, hi + 1, shape, generator=gen, device=device)


def synthesize(bank: ClipBank, batch_size: int, length: int, gen: torch.Generator,
               spec: MixSpec = MixSpec(), augment: "AugmentSpec | None" = None) -> MixtureBatch:
    """Draw ``batch_size`` mixtures of mixtures of ``length`` samples from ``bank``; ``augment``
    (:mod:`macs_cli.training.augment`): EQ and reverb on each source before m1, m2 are summed."""
    device = bank.audio.device
    b = batch_size
    if spec.total_sources is None:
        lo, hi = spec.sources_per_mixture
        counts = _randint(lo, hi, (b, 2), gen, device)                      # clips in m1, m2
    else:
        tlo, thi = spec.total_sources
        hi = max(1, thi - 1)
        total = _randint(tlo, thi, (b,), gen, device)
        u = torch.rand((b,), generator=gen, device=device)
        k1 = torch.where(total >= 2, torch.minimum(1 + (u * (total - 1).float()).long(), total - 1),
                         torch.ones_like(total))
        counts = torch.stack([k1, total - k1], dim=1)
    s = 2 * hi
    slot = torch.arange(s, device=device)
    group = (slot >= hi).long()[None, :].expand(b, s)
    present = (slot % hi)[None, :] < counts.gather(1, group)
    if spec.balance:
        clip = torch.multinomial(bank.draw_weights(spec.balance), b * s, replacement=True,
                                 generator=gen).view(b, s)
    else:   # the draw of earlier versions, so that their configs give the same batches
        clip = torch.randint(0, len(bank), (b, s), generator=gen, device=device)
    start, n = bank.starts[clip], bank.lengths[clip]
    reps = _randint(spec.repeats[0], spec.repeats[1], (b, s), gen, device)
    u = torch.rand((b, s), generator=gen, device=device)
    gain = 10.0 ** ((spec.gain_db[0] + u * (spec.gain_db[1] - spec.gain_db[0])) / 20.0)
    gain = gain / bank.rms[clip].clamp_min(1e-5)
    loop = torch.rand((b, s), generator=gen, device=device) < spec.loop_prob
    t = torch.arange(length, device=device)
    sources = torch.zeros(b, s, length, device=device)
    for r in range(spec.repeats[1]):
        u = torch.rand((b, s), generator=gen, device=device)
        # short clips land anywhere inside the window; long ones are cropped at a random point
        offset = torch.where(n <= length, (u * (length - n + 1).float()).long(),
                             -(u * (n - length + 1).float()).long())
        pos = t[None, None, :] - offset[..., None]
        valid = (pos >= 0) & (pos < n[..., None]) & (r < reps)[..., None]
        # a looping clip repeats back to back through the whole window (continuous sounds)
        pos = torch.where(loop[..., None], torch.remainder(pos, n[..., None]), pos)
        valid = torch.where(loop[..., None], torch.full_like(valid, r == 0), valid)
        idx = start[..., None] + pos.clamp(min=0).minimum(n[..., None] - 1)
        sources += torch.where(valid, bank.audio[idx], 0.0)
    sources = sources * (gain * present)[..., None]
    if augment is not None and augment.active:
        from .augment import augment_sources

        sources = augment_sources(sources, present, gen, augment, bank.sample_rate)
    groups = torch.where(present, group, torch.full_like(group, -1))
    m1 = (sources * (groups == 0)[..., None]).sum(1)
    m2 = (sources * (groups == 1)[..., None]).sum(1)
    clip_cpu, groups_cpu = clip.cpu().tolist(), groups.cpu().tolist()
    labels = [[[lab for k in range(s) if groups_cpu[i][k] == g for lab in bank.labels[clip_cpu[i][k]]]
               for g in (0, 1)] for i in range(b)]
    return MixtureBatch(sources, groups, m1, m2, labels)


def _draws(more: Callable[[], bool], limit: int, failure: str) -> Iterator[int]:
    """Random draws while ``more()``; past ``limit`` tries the set cannot be drawn (DataError)."""
    tries = 0
    while more():
        tries += 1
        if tries > limit:
            raise DataError(failure)
        yield tries


def sparse_eval_set(bank: ClipBank, count: int, num_sources: int, length: int, seed: int = 1234,
                    repeats: tuple[int, int] = (1, 2), gain_db: tuple[float, float] = (-5.0, 5.0),
                    loop_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first held-out set (kept for comparison): one clip per source placed 1-2 times at random
    offsets, +-5 dB around unit RMS. With short clips most sources barely overlap, so it flatters a
    separator. Returns (mix (N, L), refs (N, S, L)); never two clips of the same label in one
    mixture. ``loop_prob=1`` loops every clip through the window."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    cpu = bank.to("cpu")
    mixes, refs = [], []
    spec = MixSpec((1, 1), repeats, gain_db, loop_prob).validate()
    sub = ClipBank(cpu.audio, cpu.starts, cpu.lengths, cpu.rms, cpu.labels, cpu.sample_rate)
    for _ in _draws(lambda: len(mixes) < count, 100 * count + 200,
                    f"cannot draw {count} held-out mixtures of {num_sources} differently labelled clips from "
                    f"{len(bank)} clip(s) (too few distinct labels?)"):
        parts = []
        used: set[str] = set()
        for _ in range(num_sources):
            one = synthesize(sub, 1, length, gen, spec)
            lab = "|".join(one.labels[0][0])
            if lab and lab in used:  # unlabelled clips cannot be told apart: never a clash
                break
            used.add(lab)
            parts.append(one.m1[0])
        if len(parts) < num_sources or any(p.abs().max() == 0 for p in parts):
            continue
        r = torch.stack(parts)
        refs.append(r)
        mixes.append(r.sum(0))
    return torch.stack(mixes), torch.stack(refs)


# -- real-condition mixtures ------------------------------------------------------------------------
# Words of a label that name a steady sound (a texture that runs on: rain, engines, crowds...). Such
# clips loop through the whole window; the rest are placed once. Matched on the label's words, so
# both this project's corpus labels (wind_rain_waves, vehicle_engine) and FSD50K's ("Rain",
# "Engine", "Crowd") are recognised.
STEADY_WORDS = frozenset([
    "rain", "wind", "waves", "wave", "ocean", "surf", "water", "stream", "river", "waterfall",
    "crowd", "chatter", "babble", "applause", "engine", "motor", "traffic", "machine", "machinery",
    "fan", "hum", "fire", "crackle", "insect", "insects", "cricket", "bee", "buzz", "train",
    "aircraft", "airplane", "helicopter", "drone", "vacuum", "hair dryer", "loop",
])
REAL_FRAME_SECONDS = 0.1      # activity frames of the real-condition set
REAL_ACTIVE_DB = -20.0        # a source is active in a frame within 20 dB of its loudest frame
REAL_MIN_OVERLAP_S = 1.0      # each pair overlaps >= min(1 s, half the shorter source's activity)
REAL_LEVEL = 0.1              # RMS of a source over its active frames, before its +-level_db offset
LOOP_FADE_SECONDS = 0.01      # cross-fade at the joins of a looped clip


def is_steady(labels: list[str]) -> bool:
    """Whether a clip's labels name a steady sound (:data:`STEADY_WORDS`)."""
    for lab in labels:
        words = [w for w in re.split(r"[^a-z]+", lab.lower()) if w]
        if set(words) & STEADY_WORDS or " ".join(words) in STEADY_WORDS:
            return True
    return False


def frame_activity(x: np.ndarray, frame: int, rel_db: float = REAL_ACTIVE_DB) -> np.ndarray:
    """(..., T) -> (..., T // frame) booleans: frame power within ``rel_db`` of the loudest frame."""
    n = x.shape[-1] // frame
    power = np.square(x[..., : n * frame].reshape(*x.shape[:-1], n, frame), dtype=np.float64).mean(-1)
    peak = power.max(-1, keepdims=True)
    return (power > peak * 10 ** (rel_db / 10)) & (peak > 0)


def pair_overlaps(active: np.ndarray, frame_seconds: float,
                  min_overlap_s: float = REAL_MIN_OVERLAP_S) -> tuple[np.ndarray, np.ndarray]:
    """For (S, F) activity: the overlap of every pair in frames (S, S), and the overlap each pair
    needs, min(min_overlap_s, half the shorter source's active time), in frames (S, S)."""
    a = active.astype(np.int64)
    both = a @ a.T
    dur = a.sum(1)
    need = np.minimum(np.ceil(min_overlap_s / frame_seconds - 1e-9),
                      np.ceil(0.5 * np.minimum(dur[:, None], dur[None, :]) - 1e-9))
    return both, need


def _loop(clip: np.ndarray, length: int, start: int, fade: int) -> np.ndarray:
    """``clip`` repeated back to back (cross-faded over ``fade`` samples at each join) from
    sample ``start`` of the loop, ``length`` samples."""
    n = clip.size
    fade = min(fade, n // 4)
    if fade > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)).astype(np.float32)
        period = n - fade
        one = clip.copy()
        one[:fade] = clip[:fade] * ramp + clip[n - fade:] * (1 - ramp)  # the join, folded in
        one = one[:period]
    else:
        one = clip
    reps = (start + length) // one.size + 2
    return np.tile(one, reps)[start % one.size: start % one.size + length]


def real_eval_set(bank: ClipBank, count: int, num_sources: int, length: int, seed: int = 1234,
                  level_db: float = 2.5, min_overlap_s: float = REAL_MIN_OVERLAP_S,
                  return_info: bool = False):
    """Deterministic held-out mixtures in real conditions: returns (mix (N, L), refs (N, S, L))
    (and, with ``return_info``, one dict per mixture: clip indices, labels, steady flags, levels,
    overlaps).

    * each source is one clip of its own label (labels drawn uniformly, then a clip of the label);
    * steady sounds (:func:`is_steady`: rain, engines, crowds, wind...) loop through the whole
      window from a random point; other clips are placed once, longer ones cropped at random;
    * every pair of sources overlaps by at least min(1 s, half the shorter source's active time)
      (activity: 100 ms frames within 20 dB of the source's loudest frame): short clips are placed
      around a shared time, and a draw that still misses is drawn again;
    * each source's RMS over its active frames is 0.1 times a gain of +-``level_db`` dB, so any
      two sources are within 2 x ``level_db`` dB of each other.
    """
    rng = np.random.default_rng(seed)
    cpu = bank.to("cpu")
    audio = cpu.audio.numpy()
    starts, lengths = cpu.starts.numpy(), cpu.lengths.numpy()
    rate = bank.sample_rate
    frame = max(1, int(round(rate * REAL_FRAME_SECONDS)))
    frame_s = frame / rate
    fade = int(round(rate * LOOP_FADE_SECONDS))
    keys: dict[str, list[int]] = {}
    for i, labs in enumerate(cpu.labels):
        keys.setdefault("|".join(labs) or f"#unlabelled{i}", []).append(i)  # unlabelled: its own key
    names = sorted(keys)
    if len(names) < num_sources:
        raise DataError(f"cannot draw held-out mixtures of {num_sources} differently labelled clips from "
                        f"{len(bank)} clip(s) with {len(names)} label(s)")
    steady = {i: is_steady(labs) for i, labs in enumerate(cpu.labels)}
    mixes, refs, infos = [], [], []
    for _ in _draws(lambda: len(mixes) < count, 50 * count + 200,
                    f"cannot draw {count} held-out mixtures of {num_sources} overlapping sources from "
                    f"{len(bank)} clip(s) (clips too short or too sparse?)"):
        picked = rng.choice(len(names), num_sources, replace=False)
        clips = [int(rng.choice(keys[names[k]])) for k in picked]
        # a shared time that every placed-once clip covers (in its middle half, at most 1 s around it)
        anchor = rng.uniform(0.25, 0.75) * length
        srcs, placement = [], []
        for c in clips:
            x = audio[starts[c]: starts[c] + lengths[c]]
            n = x.size
            if steady[c]:
                start = int(rng.integers(0, n))
                srcs.append(_loop(x, length, start, fade))
                placement.append({"loop_start": start})
            elif n >= length:
                start = int(rng.integers(0, n - length + 1))
                srcs.append(x[start: start + length].copy())
                placement.append({"crop_start": start})
            else:
                h = min(0.5 * rate * min_overlap_s, n / 4)
                lo = max(0, int(np.ceil(anchor + h - n)))
                hi = min(length - n, int(np.floor(anchor - h)))
                off = int(rng.integers(lo, hi + 1)) if hi >= lo else int(rng.integers(0, length - n + 1))
                s = np.zeros(length, dtype=np.float32)
                s[off: off + n] = x
                srcs.append(s)
                placement.append({"offset": off})
        r = np.stack(srcs).astype(np.float32)
        active = frame_activity(r, frame)
        if not active.any(1).all():
            continue
        both, need = pair_overlaps(active, frame_s, min_overlap_s)
        iu = np.triu_indices(num_sources, 1)
        if np.any(both[iu] < need[iu]):
            continue
        act_rms = np.array([np.sqrt(np.mean(np.square(
            s[: active.shape[1] * frame].reshape(-1, frame)[a], dtype=np.float64))) for s, a in zip(r, active)])
        gains_db = rng.uniform(-level_db, level_db, num_sources)
        r = r * (REAL_LEVEL * 10 ** (gains_db / 20) / np.maximum(act_rms, 1e-9))[:, None].astype(np.float32)
        refs.append(torch.from_numpy(r))
        mixes.append(torch.from_numpy(r.sum(0)))
        if return_info:
            infos.append({"clips": clips, "labels": [cpu.labels[c] for c in clips],
                          "steady": [bool(steady[c]) for c in clips], "gain_db": gains_db.round(3).tolist(),
                          "active_seconds": (active.sum(1) * frame_s).round(2).tolist(),
                          "min_pair_overlap_seconds": float(both[iu].min() * frame_s),
                          "placement": placement})
    out = (torch.stack(mixes), torch.stack(refs))
    return (*out, infos) if return_info else out


EVAL_MODES = ("real", "sparse")


def fixed_eval_set(bank: ClipBank, count: int, num_sources: int, length: int, seed: int = 1234,
                   mode: str = "real", loop_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic held-out mixtures (mix (N, L), refs (N, S, L)): ``mode="real"`` (the default)
    is :func:`real_eval_set` (every pair of sources overlapping, levels within 5 dB, steady sounds
    looped); ``"sparse"`` is the first set, :func:`sparse_eval_set`, whose sources mostly do not
    overlap (``loop_prob`` applies to it only)."""
    if mode == "real":
        if loop_prob:
            raise ConfigError("loop_prob applies to the sparse held-out set only (real-condition mixtures "
                              "loop steady sounds by their label)")
        return real_eval_set(bank, count, num_sources, length, seed=seed)
    if mode == "sparse":
        return sparse_eval_set(bank, count, num_sources, length, seed=seed, loop_prob=loop_prob)
    raise ConfigError(f"held-out set mode must be one of {', '.join(EVAL_MODES)} (got {mode!r})")


def validation_sets(bank: ClipBank, mixtures: int, sources, length: int, seed: int = 1234,
                    mode: str = "real", loop_prob: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The trainer's validation: ``mixtures`` in all, split evenly over the source counts in
    ``sources`` (an int or a list), count S drawn with seed ``seed + S``; one (mix, refs) per count."""
    counts = [sources] if isinstance(sources, int) else list(sources)
    out = []
    for i, s in enumerate(counts):
        n = mixtures // len(counts) + (i < mixtures % len(counts))
        if n:
            out.append(fixed_eval_set(bank, n, int(s), length, seed=seed + int(s), mode=mode,
                                      loop_prob=loop_prob))
    return out


__all__ = ["ClipBank", "Clip", "DataError", "MixSpec", "synthesize", "fixed_eval_set", "real_eval_set",
           "sparse_eval_set", "validation_sets", "is_steady", "load_clip_bank",
           "data_kind", "list_clips", "AUDIO_SUFFIXES"]
