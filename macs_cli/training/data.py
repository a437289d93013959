"""Training data: clip collections (folder, CSV manifest, FSD50K layout, compact .npz corpus) and
the on-device synthesiser of mixtures of mixtures for MixIT.

A :class:`ClipBank` holds every clip of a split in one flat float tensor (resampled to the model
rate, clipped to ``max_seconds``), so batches are drawn with one gather on the training device and
a ``torch.Generator`` makes the stream of batches reproducible (and resumable).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio.io import AUDIO_SUFFIXES, find_audio_files, read_audio
from ..errors import AudioError, ConfigError
from .losses import MixtureBatch

SPLITS = ("train", "heldout")


@dataclass
class Clip:
    path: str
    labels: list[str]
    split: str = "train"
    group: str = ""


@dataclass
class ClipBank:
    audio: torch.Tensor          # (N_total,) float32, clips back to back
    starts: torch.Tensor         # (C,) int64
    lengths: torch.Tensor        # (C,) int64
    rms: torch.Tensor            # (C,) float32, RMS of each clip
    labels: list[list[str]]
    sample_rate: int

    def __len__(self) -> int:
        return int(self.starts.numel())

    def to(self, device: torch.device | str) -> "ClipBank":
        return ClipBank(self.audio.to(device), self.starts.to(device), self.lengths.to(device),
                        self.rms.to(device), self.labels, self.sample_rate)

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum()) / self.sample_rate

    @classmethod
    def from_arrays(cls, clips: list[np.ndarray], labels: list[list[str]], sample_rate: int) -> "ClipBank":
        if not clips:
            raise ConfigError("no usable clips in the training data")
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
    """The rows of a CSV manifest; a one-line ConfigError if it cannot be read or is empty."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read manifest ({exc.strerror})") from None
    if not rows:
        raise ConfigError(f"{path}: manifest has no rows")
    return rows


def clips_from_csv(path: Path) -> list[Clip]:
    """CSV with a ``path``/``audio``/``file``/``fname`` column, optional ``label(s)``, ``split``."""
    path = Path(path)
    rows = read_manifest_rows(path)
    col = next((c for c in ("path", "audio", "file", "fname") if c in rows[0]), None)
    if col is None:
        raise ConfigError(f"{path}: manifest needs a 'path' column (has {', '.join(rows[0])})")
    lab = next((c for c in ("labels", "label") if c in rows[0]), None)
    clips = []
    for row in rows:
        p = Path(row[col])
        if not p.is_absolute():
            p = path.parent / p
        split = (row.get("split") or "train").strip()
        split = "heldout" if split in ("heldout", "val", "valid", "validation", "test", "eval") else "train"
        clips.append(Clip(str(p), _split_labels(row[lab]) if lab else [], split, row.get("group", "")))
    return clips


def clips_from_folder(root: Path) -> list[Clip]:
    """Every audio file under ``root``; its label is its parent folder's name (if not the root)."""
    root = Path(root)
    files, problems = find_audio_files([root])
    if problems:
        raise ConfigError(problems[0])
    clips = []
    for f in files:
        rel = f.relative_to(root)
        label = rel.parent.name.replace("_", " ") if rel.parent != Path(".") else ""
        split = "heldout" if any(p in ("heldout", "val", "test") for p in rel.parts[:-1]) else "train"
        clips.append(Clip(str(f), [label] if label else [], split, str(rel.parent)))
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
        raise ConfigError(f"{root}: not an FSD50K folder (no ground_truth/dev.csv)")
    clips = []
    for name, folder in (("dev", "dev_audio"), ("eval", "eval_audio")):
        table = gt / f"{name}.csv"
        if not table.exists():
            continue
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                split = "train" if name == "dev" and row.get("split", "train") == "train" else "heldout"
                labels = fsd50k_labels(row.get("labels", ""))
                clips.append(Clip(str(root / folder / f"{row['fname']}.wav"), labels, split))
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


def _load_npz_bank(path: Path, split: str, sample_rate: int, max_seconds: float) -> ClipBank:
    """A compact corpus: ``audio`` (int16, float or uint8 mu-law with ``encoding='mulaw'``) clips
    back to back, ``offsets`` (N + 1), ``labels``, ``splits`` and ``sample_rate``."""
    try:
        data = np.load(path, allow_pickle=False)
        audio, offsets = data["audio"], data["offsets"]
        labels, splits = data["labels"], data["splits"]
        rate = int(data["sample_rate"])
        encoding = str(data["encoding"]) if "encoding" in data.files else "pcm"
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: not a macs corpus .npz ({exc})") from None
    if encoding == "mulaw":
        audio = mulaw_decode(audio)
    scale = 1.0 / 32768.0 if audio.dtype == np.int16 else 1.0
    clips, labs = [], []
    limit = int(max_seconds * rate) if max_seconds else None
    for i in range(len(offsets) - 1):
        if str(splits[i]) != split:
            continue
        c = audio[offsets[i]: offsets[i + 1]][:limit].astype(np.float32) * scale
        clips.append(c)
        labs.append(_split_labels(str(labels[i])))
    if rate != sample_rate:
        from ..audio.io import resample

        clips = [resample(c, rate, sample_rate) for c in clips]
    return ClipBank.from_arrays(clips, labs, sample_rate)


def list_clips(spec: str | Path, kind: str = "auto") -> list[Clip]:
    spec = Path(spec)
    if kind == "auto":
        if spec.suffix == ".csv":
            kind = "csv"
        elif (spec / "ground_truth" / "dev.csv").exists():
            kind = "fsd50k"
        elif spec.is_dir():
            kind = "folder"
        else:
            raise ConfigError(f"{spec}: training data not found (a folder, .csv, .npz or FSD50K root)")
    return {"csv": clips_from_csv, "folder": clips_from_folder, "fsd50k": clips_from_fsd50k}[kind](spec)


def load_clip_bank(spec: str | Path, split: str, sample_rate: int, max_seconds: float = 10.0,
                   kind: str = "auto", max_clips: int | None = None, progress=None) -> ClipBank:
    """Load one split of a clip collection into memory at ``sample_rate``."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}")
    spec = Path(spec)
    if not spec.exists():
        raise ConfigError(f"{spec}: training data not found")
    if spec.suffix == ".npz" or kind == "npz":
        return _load_npz_bank(spec, split, sample_rate, max_seconds)
    clips = [c for c in list_clips(spec, kind) if c.split == split]
    if max_clips:
        clips = clips[:max_clips]
    arrays, labels = [], []
    limit = int(max_seconds * sample_rate) if max_seconds else None
    for clip in clips:
        try:
            x, _ = read_audio(Path(clip.path), sample_rate)
        except AudioError:
            continue  # unreadable clips are skipped, as a data loader would
        if x.size < sample_rate // 10 or not np.any(x):
            continue
        arrays.append(x[:limit])
        labels.append(clip.labels)
        if progress is not None:
            progress()
    if not arrays:
        raise ConfigError(f"{spec}: no usable '{split}' clips")
    return ClipBank.from_arrays(arrays, labels, sample_rate)


# -- synthesis ------------------------------------------------------------------------------------
@dataclass
class MixSpec:
    """How mixtures of mixtures are drawn."""

    sources_per_mixture: tuple[int, int] = (1, 2)   # each of m1, m2 holds this many clips
    repeats: tuple[int, int] = (1, 3)               # each clip occurs this many times in the window
    gain_db: tuple[float, float] = (-6.0, 6.0)      # per-source level relative to unit RMS
    loop_prob: float = 0.0                          # chance that a clip loops through the window

    def validate(self) -> "MixSpec":
        lo, hi = self.sources_per_mixture
        if not (1 <= lo <= hi <= 8):
            raise ConfigError("mix.sources_per_mixture must be [lo, hi] with 1 <= lo <= hi <= 8")
        if not (1 <= self.repeats[0] <= self.repeats[1] <= 8):
            raise ConfigError("mix.repeats must be [lo, hi] with 1 <= lo <= hi <= 8")
        if self.gain_db[0] > self.gain_db[1]:
            raise ConfigError("mix.gain_db must be [low, high]")
        if not 0.0 <= self.loop_prob <= 1.0:
            raise ConfigError("mix.loop_prob must be in [0, 1]")
        return self


def _randint(lo: int, hi: int, shape, gen: torch.Generator, device) -> torch.Tensor:
    return torch.randint(lo, hi + 1, shape, generator=gen, device=device)


def synthesize(bank: ClipBank, batch_size: int, length: int, gen: torch.Generator,
               spec: MixSpec = MixSpec()) -> MixtureBatch:
    """Draw ``batch_size`` mixtures of mixtures of ``length`` samples from ``bank``."""
    device = bank.audio.device
    lo, hi = spec.sources_per_mixture
    b, s = batch_size, 2 * hi
    counts = _randint(lo, hi, (b, 2), gen, device)                          # clips in m1, m2
    slot = torch.arange(s, device=device)
    group = (slot >= hi).long()[None, :].expand(b, s)
    present = (slot % hi)[None, :] < counts.gather(1, group)
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
    groups = torch.where(present, group, torch.full_like(group, -1))
    m1 = (sources * (groups == 0)[..., None]).sum(1)
    m2 = (sources * (groups == 1)[..., None]).sum(1)
    clip_cpu, groups_cpu = clip.cpu().tolist(), groups.cpu().tolist()
    labels = [[[lab for k in range(s) if groups_cpu[i][k] == g for lab in bank.labels[clip_cpu[i][k]]]
               for g in (0, 1)] for i in range(b)]
    return MixtureBatch(sources, groups, m1, m2, labels)


def fixed_eval_set(bank: ClipBank, count: int, num_sources: int, length: int, seed: int = 1234,
                   repeats: tuple[int, int] = (1, 2), gain_db: tuple[float, float] = (-5.0, 5.0),
                   loop_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic held-out mixtures: returns (mix (N, L), refs (N, S, L)), one clip per source,
    never two clips of the same label in one mixture. ``loop_prob=1`` loops every clip through the
    window, so all sources overlap all the time (the hardest case)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    cpu = bank.to("cpu")
    mixes, refs = [], []
    spec = MixSpec((1, 1), repeats, gain_db, loop_prob).validate()
    sub = ClipBank(cpu.audio, cpu.starts, cpu.lengths, cpu.rms, cpu.labels, cpu.sample_rate)
    while len(mixes) < count:
        parts = []
        used: set[str] = set()
        for _ in range(num_sources):
            one = synthesize(sub, 1, length, gen, spec)
            lab = "|".join(one.labels[0][0])
            if lab in used:
                break
            used.add(lab)
            parts.append(one.m1[0])
        if len(parts) < num_sources or any(p.abs().max() == 0 for p in parts):
            continue
        r = torch.stack(parts)
        refs.append(r)
        mixes.append(r.sum(0))
    return torch.stack(mixes), torch.stack(refs)


__all__ = ["ClipBank", "Clip", "MixSpec", "synthesize", "fixed_eval_set", "load_clip_bank",
           "list_clips", "AUDIO_SUFFIXES"]
