"""Separating files: the importable API behind ``macs separate``.

    from macs_cli.separation.api import SeparateOptions, separate_file
    from macs_cli.weights.separator import load_separator

    model = load_separator("default", device="cpu")
    manifest = separate_file(model, "mix.wav", "out/", SeparateOptions())

Writes ``out/<name>/stem_00.wav ... stem_{M-1}.wav`` and ``manifest.json``. Audio is streamed:
memory does not grow with the file's length (MP3 excepted: it is decoded in one read, see
:data:`macs_cli.audio.io.WHOLE_READ_FORMATS`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .. import __version__
from ..audio.chunking import OverlapAdd
from ..audio.io import AudioInfo, StreamResampler, iter_blocks, probe
from ..errors import AudioError, ConfigError, MacsError
from ..formats import STEMS_FORMAT, STEMS_OUTPUT
from ..fsutil import atomic_dir, describe_os_error, is_inside
from .grouping import GroupingPlan, GroupRenderer, StemStatistics, default_net, plan_grouping, statistics_of
from .model import Separator, cpu_inference_copy

FRAME_SECONDS = 0.1      # envelope resolution for activity and grouping
ACTIVE_REL_DB = -30.0    # a stem frame is active if within 30 dB of the mixture frame...
SILENT_ABS_DB = -70.0    # ...and the mixture frame itself is above -70 dBFS
MIN_ACTIVITY = 0.02      # a stem is active if active in at least 2% of the frames


class SilentInputWarning(UserWarning):
    pass


STEM_MODES = ("auto", "clean", "raw")
# separators whose stems are written clean by default (measured: benchmarks/README.md, "Clean stems")
CLEAN_STEM_MODELS = frozenset({"macs-default-v1"})


def stem_mode_for(mode: str, model_name: str | None) -> str:
    """``clean`` or ``raw``. Raw: the network's stems as they are (after its mixture-consistency
    step). Clean: each stem re-rendered from the mixture's STFT with the non-negative part of its
    share of every time-frequency bin (grouping.clean_shares; the shares sum to one, so the stems
    still sum to the mixture). ``auto``: clean for the separators it was measured on, raw for
    the others (the official separator's stems stay the authors')."""
    if mode == "auto":
        return "clean" if model_name in CLEAN_STEM_MODELS else "raw"
    return mode


@dataclass
class SeparateOptions:
    overlap: float = 0.25              # fraction of the window shared by consecutive windows
    batch_size: int = 1                # windows per forward pass
    sample_rate: int | str = "model"   # "model", "input" or an integer rate for the stems
    num_sources: int | str | None = None  # merge the stems into this many, "auto" (count them), None: all
    drop_silent: bool = False          # omit stems that are inactive
    force: bool = False                # replace an existing output folder
    align: bool = True                 # keep the stem order stable across windows
    subtype: str = "FLOAT"             # WAV sample format of the stems
    spectrograms: bool = False         # also write spectrograms.png (mixture and every stem)
    precision: str = "auto"            # auto, fp32, bf16 or fp16 (macs_cli.precision)
    stem_mode: str = "auto"            # clean, raw or auto (clean for CLEAN_STEM_MODELS): see stem_mode_for

    def validate(self, model_stems: int) -> None:
        if not 0.0 <= self.overlap <= 0.75:
            raise ConfigError(f"--overlap must be in [0, 0.75] (got {self.overlap})")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1 (got {self.batch_size})")
        k = self.num_sources
        if k is not None and k != "auto" and (isinstance(k, bool) or not isinstance(k, int)
                                               or not 1 <= k <= model_stems):
            raise ConfigError(f"--num-sources must be 'auto' or in 1..{model_stems} for this model "
                              f"(got {k!r})")
        if isinstance(self.sample_rate, str) and self.sample_rate not in ("model", "input"):
            raise ConfigError(f"--sample-rate must be 'model', 'input' or a rate in Hz "
                              f"(got {self.sample_rate!r})")
        if isinstance(self.sample_rate, int) and not 1000 <= self.sample_rate <= 384000:
            raise ConfigError(f"--sample-rate must be in 1000..384000 Hz (got {self.sample_rate})")
        if self.stem_mode not in STEM_MODES:
            raise ConfigError(f"--stem-mode must be one of {', '.join(STEM_MODES)} (got {self.stem_mode!r})")
        from ..precision import check_precision

        check_precision(self.precision)

    @classmethod
    def parse(cls, sample_rate: str = "model", num_sources: str | None = None, **kw) -> "SeparateOptions":
        """Options from ``macs separate``'s text values of ``--sample-rate`` and ``--num-sources``."""
        from .grouping import parse_num_sources

        v = sample_rate.strip().lower()
        try:
            rate: int | str = v if v in ("model", "input") else int(v)
        except ValueError:
            raise ConfigError(f"--sample-rate must be 'model', 'input' or a rate in Hz (got {sample_rate!r})") from None
        try:
            k = parse_num_sources(num_sources)
        except ValueError as exc:
            raise ConfigError(f"--num-sources {exc}") from None
        if isinstance(kw.get("stem_mode"), str):   # case-blind, as --precision and --num-sources are
            kw["stem_mode"] = kw["stem_mode"].strip().lower()
        return cls(sample_rate=rate, num_sources=k, **kw)


def model_window_fn(model: Separator, precision: str = "auto") -> Callable[[np.ndarray], np.ndarray]:
    """(B, L) numpy windows -> (B, M, L) numpy stems, on the model's device, in ``precision``
    (``auto``, ``fp32``, ``bf16``, ``fp16``: see :mod:`macs_cli.precision`)."""
    from ..precision import inference, resolve_precision

    device = next(model.parameters()).device
    used = resolve_precision(precision, device, "separator", model.config.name)
    net = _cpu_inference_model(model) if device.type == "cpu" else model

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        with inference(used, device):
            return net(x).float().cpu().numpy()

    run.precision = used  # type: ignore[attr-defined]
    return run


_CPU_COPIES: "weakref.WeakKeyDictionary[Separator, tuple[tuple, Separator]]" = weakref.WeakKeyDictionary()


def _cpu_inference_model(model: Separator) -> Separator:
    """``model`` prepared for the CPU (:func:`~macs_cli.separation.model.cpu_inference_copy`: BatchNorm
    folded, channels_last), made once per model and remade if its weights or buffers change (their
    in-place version counters and storage identify them). A model in training mode is used as it is."""
    if model.training:
        return model
    tensors = [*model.parameters(), *model.buffers()]
    key = tuple((t.data_ptr(), t._version) for t in tensors)
    hit = _CPU_COPIES.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    fast = cpu_inference_copy(model)
    _CPU_COPIES[model] = (key, fast)
    return fast


class _StemStats:
    """Per-stem energy and 100 ms envelopes, accumulated while streaming."""

    def __init__(self, stems: int, rate: int):
        self.frame = max(1, int(rate * FRAME_SECONDS))
        self.sumsq = np.zeros(stems)
        self.mix_sumsq = 0.0
        self.peak = 0.0
        self.count = 0
        self._carry = np.zeros((stems + 1, 0), dtype=np.float32)
        self.env: list[np.ndarray] = []  # (stems + 1,) mean power per frame; last row = mixture

    def add(self, stems: np.ndarray) -> None:
        mix = stems.sum(0, keepdims=True)
        self.sumsq += np.square(stems, dtype=np.float64).sum(1)
        self.mix_sumsq += float(np.square(mix, dtype=np.float64).sum())
        self.peak = max(self.peak, float(np.abs(mix).max(initial=0.0)))
        self.count += stems.shape[1]
        data = np.concatenate([self._carry, np.concatenate([stems, mix])], axis=1)
        full = data.shape[1] // self.frame * self.frame
        if full:
            frames = data[:, :full].reshape(data.shape[0], -1, self.frame)
            self.env.append(np.square(frames, dtype=np.float64).mean(-1).T)
        self._carry = data[:, full:]

    def finish(self) -> np.ndarray:
        if self._carry.shape[1]:
            self.env.append(np.square(self._carry, dtype=np.float64).mean(-1)[None, :])
            self._carry = self._carry[:, :0]
        return np.concatenate(self.env) if self.env else np.zeros((0, len(self.sumsq) + 1))


def stem_activity(env: np.ndarray) -> np.ndarray:
    """Fraction of non-silent mixture frames in which each stem is within 30 dB of the mixture."""
    stems, mix = env[:, :-1], env[:, -1:]
    audible = mix[:, 0] > 10 ** (SILENT_ABS_DB / 10)
    if not audible.any():
        return np.zeros(stems.shape[1])
    active = stems[audible] > mix[audible] * 10 ** (ACTIVE_REL_DB / 10)
    return active.mean(0)


def group_stems(stems: np.ndarray, k: int | str, rate: int = 16000, n_fft: int = 400) -> GroupingPlan:
    """The grouping ``separate_file`` uses, for one (M, T) array of stems: a
    :class:`~macs_cli.separation.grouping.GroupingPlan` (``render(stems, plan)`` gives the outputs)."""
    return plan_grouping(statistics_of(stems, rate, n_fft), k)


def output_rate(opts: SeparateOptions, info: AudioInfo, model_rate: int) -> int:
    if opts.sample_rate == "model":
        return model_rate
    if opts.sample_rate == "input":
        return info.sample_rate
    return int(opts.sample_rate)


def _db(x: float) -> float:
    return float(10 * np.log10(max(x, 1e-20)))


def output_name(rel: Path) -> str:
    """The output folder name for an input at relative path ``rel`` (suffix dropped). Parts that
    would not name a folder of their own (``.``, ``..``, empty: from files such as ``..wav``) have
    their dots replaced by ``_``, so an output can never land on, or above, the output folder."""
    parts = [p if p.strip(".") else (p.replace(".", "_") or "_") for p in rel.with_suffix("").parts
             if p not in ("/", "\\")]
    return str(Path(*parts)) if parts else "_"


def inside_output_warning(inputs: list[Path], files: list[Path], output: Path) -> str | None:
    """A line about files a folder search found inside the output folder (None: there are none)."""
    given = {Path(i).resolve() for i in inputs}
    inside = [f for f in files if f.resolve() not in given and is_inside(f, output)]
    if not inside:
        return None
    return (f"{len(inside)} file(s) found inside the output folder {output} (e.g. {inside[0]}) are separated like "
            "the other inputs")


def output_names(inputs: list[Path], files: list[Path]) -> dict[Path, str]:
    """Output folder name per file: its stem, or its path below the input folder it was found in."""
    names: dict[Path, str] = {}
    for f in files:
        root = next((i for i in inputs if i.is_dir() and f.is_relative_to(i)), None)
        names[f] = output_name(f.relative_to(root) if root else Path(f.name))
    return names


@dataclass
class Source:
    """Where the mixture comes from: its ``info`` and ``blocks(n)``, mono float32 blocks of n frames
    at its own rate, readable more than once (the outputs are made to sum to it)."""

    info: AudioInfo
    blocks: Callable[[int], Iterator[np.ndarray]]
    path: str | None = None          # recorded in the manifest (None: an array in memory)

    @property
    def name(self) -> str:
        return self.path or "waveform"

    @classmethod
    def from_array(cls, waveform: np.ndarray, sample_rate: int) -> "Source":
        """(T,) or (T, channels) / (channels, T) samples -> a source (channels averaged, as for files)."""
        from ..errors import AudioError

        x = np.asarray(waveform, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1) if x.shape[0] > x.shape[1] else x.mean(axis=0)
        if x.ndim != 1 or x.size == 0:
            raise AudioError(f"expected a 1-D (or 2-D channels x samples) waveform, got shape {np.shape(waveform)}")
        if not np.all(np.isfinite(x)):
            raise AudioError("the waveform holds NaN or infinite samples")
        if not (isinstance(sample_rate, (int, np.integer)) and 1000 <= sample_rate <= 384000):
            raise AudioError(f"sample_rate must be an integer in 1000..384000 (got {sample_rate!r})")
        info = AudioInfo(Path("<memory>"), int(sample_rate), 1, int(x.size), "array", "FLOAT")

        def blocks(n: int) -> Iterator[np.ndarray]:
            for i in range(0, x.size, n):
                yield x[i:i + n]

        return cls(info, blocks)


class FolderStore:
    """Tracks as WAV files in a (temporary) folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def writer(self, name: str, rate: int, subtype: str):
        import soundfile as sf

        return sf.SoundFile(str(self.folder / name), "w", rate, 1, subtype=subtype)

    def reader(self, name: str):
        import soundfile as sf

        return sf.SoundFile(str(self.folder / name))

    def rename(self, a: str, b: str) -> None:
        (self.folder / a).rename(self.folder / b)

    def unlink(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)


class _Track:
    """A mono float32 track in memory, written then read like a soundfile.SoundFile."""

    def __init__(self):
        self.parts: list[np.ndarray] = []
        self.pos = 0

    def write(self, x: np.ndarray) -> None:
        self.parts.append(np.array(x, dtype=np.float32, copy=True))

    def read(self, n: int, dtype: str = "float32") -> np.ndarray:
        data = self.array()
        out = data[self.pos:self.pos + n]
        self.pos += out.size
        return out

    def array(self) -> np.ndarray:
        if len(self.parts) != 1:
            self.parts = [np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)]
        return self.parts[0]

    def close(self) -> None:
        pass


class MemoryStore:
    """Tracks as arrays (the in-memory path: nothing touches the disk)."""

    def __init__(self):
        self.tracks: dict[str, _Track] = {}

    def writer(self, name: str, rate: int, subtype: str) -> _Track:
        self.tracks[name] = _Track()
        return self.tracks[name]

    def reader(self, name: str) -> _Track:
        self.tracks[name].pos = 0
        return self.tracks[name]

    def rename(self, a: str, b: str) -> None:
        self.tracks[b] = self.tracks.pop(a)

    def unlink(self, name: str) -> None:
        self.tracks.pop(name, None)


@dataclass
class Stems:
    """The result of :func:`separate_waveform`: ``audio`` (K, T) float32 stems at ``sample_rate``
    that sum to the mixture, and the manifest ``macs separate`` would write (per-stem ``rms``,
    ``activity``, ``active``, the ``grouping``)."""

    audio: np.ndarray
    sample_rate: int
    manifest: dict

    @property
    def activity(self) -> list[float]:
        return [s["activity"] for s in self.manifest["stems"]]

    @property
    def active(self) -> list[bool]:
        return [s["active"] for s in self.manifest["stems"]]

    @property
    def grouping(self) -> dict:
        return self.manifest["grouping"]

    @property
    def mixture(self) -> np.ndarray:
        return self.audio.sum(0)

    def __len__(self) -> int:
        return len(self.audio)

    def __iter__(self):
        return iter(self.audio)

    def __repr__(self) -> str:
        return f"Stems({len(self)} x {self.audio.shape[1]} samples at {self.sample_rate} Hz)"


def separate_waveform(model: Separator, waveform: np.ndarray, sample_rate: int,
                      opts: SeparateOptions | None = None) -> Stems:
    """Separate samples held in memory: the same code as :func:`separate_file` (same stems, same
    manifest figures), with the stems returned as arrays instead of written."""
    return _in_memory(model, Source.from_array(waveform, sample_rate), opts or SeparateOptions())


def separate_to_memory(model: Separator, path: str | Path, opts: SeparateOptions | None = None,
                       on_progress: Callable[[float], None] | None = None) -> Stems:
    """Separate a file, read block by block as :func:`separate_file` reads it, into stems held in
    memory (nothing is written): the same stems that :func:`separate_file` would write."""
    path = Path(path)
    info = probe(path)
    source = Source(info, lambda n: iter_blocks(path, block_frames=n), str(path.resolve()))
    return _in_memory(model, source, opts or SeparateOptions(), on_progress)


def _in_memory(model: Separator, source: Source, opts: SeparateOptions,
               on_progress: Callable[[float], None] | None = None) -> Stems:
    opts.validate(model.config.num_sources)
    store = MemoryStore()
    manifest = _separate_core(model, source, store, opts, on_progress)
    audio = np.stack([store.tracks[s["file"]].array() for s in manifest["stems"]]) if manifest["stems"] else \
        np.zeros((0, manifest["source_frames"]), np.float32)
    return Stems(audio, manifest["sample_rate"], manifest)


def separate_file(model: Separator, path: str | Path, outdir: str | Path, opts: SeparateOptions,
                  name: str | None = None, on_progress: Callable[[float], None] | None = None,
                  info: AudioInfo | None = None) -> dict:
    """Separate one file into ``outdir/<name>/``; returns the manifest (also written as JSON).

    ``on_progress(seconds)`` is called with the seconds of input audio consumed since the last call.
    ``info``: the file's header when the caller has probed it already (:func:`check_input`).
    A full disk (or any failed write) is a one-line MacsError; nothing half-written stays.
    """
    path = Path(path)
    cfg = model.config
    opts.validate(cfg.num_sources)
    name = output_name(Path(name) if name else Path(path.name))
    target = Path(outdir) / name
    info = check_input(path, target, info)
    try:
        return _separate_into(model, path, info, target, opts, on_progress)
    except OSError as exc:   # placing the finished folder (fsync, rename)
        raise MacsError(f"{path} -> {describe_os_error(exc, target)}") from None


def check_input(path: Path, target: Path, info: AudioInfo | None = None) -> AudioInfo:
    """An input's audio header (``info``, or probed now), once it is known that its output
    ``target`` does not replace it."""
    info = probe(path) if info is None else info
    if is_inside(path, target):
        where = "the input itself" if path.resolve() == target.resolve() else "the folder that holds it"
        raise MacsError(f"{path}: its output {target} would replace {where}; choose another output folder")
    return info


def sf_errors() -> tuple[type[BaseException], ...]:
    """libsndfile's errors: a failed write comes without errno, so :func:`write_failure` diagnoses it."""
    import soundfile as sf

    return (sf.LibsndfileError,)


def write_failure(where: Path, exc: BaseException) -> str:
    """One line for a failed audio write: 'no space left on device' when the disk is full."""
    import errno
    import resource

    folder = Path(where)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
        free = (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize
    except OSError:
        free = None
    if free is not None and free < (1 << 20):
        return describe_os_error(OSError(errno.ENOSPC, "No space left on device"), where)
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        return describe_os_error(OSError(errno.EFBIG, "File too large"), where)
    detail = str(exc).strip() or "system error"
    return f"{where}: cannot write audio ({detail})"


def _separate_into(model: Separator, path: Path, info: AudioInfo, target: Path, opts: SeparateOptions,
                   on_progress: Callable[[float], None] | None) -> dict:
    """The file path: :func:`_separate_core` from the file into a temporary folder, then placed."""
    with atomic_dir(target, STEMS_OUTPUT, force=opts.force) as tmp:
        try:
            source = Source(info, lambda n: iter_blocks(path, block_frames=n), str(path.resolve()))
            manifest = _separate_core(model, source, FolderStore(tmp), opts, on_progress)
            if opts.spectrograms:
                from .plots import plot_separation

                plot_separation(tmp, manifest)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")  # inside the temporary folder
        except sf_errors() as exc:   # diagnosed while the temporary still fills the disk
            raise MacsError(f"{path} -> {write_failure(target, exc)}") from None
        except OSError as exc:
            raise MacsError(f"{path} -> {describe_os_error(exc, target)}") from None
    return manifest


def _separate_core(model: Separator, source: "Source", store: "FolderStore | MemoryStore", opts: SeparateOptions,
                   on_progress: Callable[[float], None] | None) -> dict:
    """Separate ``source`` into ``store`` (``stem_NN.wav`` tracks); returns the manifest. One code
    path for files and for arrays in memory, so both give the same stems."""
    cfg = model.config
    info = source.info
    out_rate = output_rate(opts, info, cfg.sample_rate)
    window = cfg.window_samples
    overlap = int(round(window * opts.overlap))
    t0 = time.time()
    m = cfg.num_sources
    raw_paths = [f".raw_{i:02d}.wav" for i in range(m)]
    writers = [store.writer(p, cfg.sample_rate, "FLOAT") for p in raw_paths]
    stats = _StemStats(m, cfg.sample_rate)
    if opts.num_sources is not None:
        default_net()   # a broken grouping-network file fails here, before the separation's work
    gstats = StemStatistics(m, cfg.sample_rate, cfg.n_fft) if opts.num_sources is not None else None
    window_fn = model_window_fn(model, opts.precision)
    ola = OverlapAdd(window_fn, window, overlap, opts.batch_size, opts.align)
    to_model = StreamResampler(info.sample_rate, cfg.sample_rate)
    stem_mode = stem_mode_for(opts.stem_mode, cfg.name)
    # clean stems without merging: rendered as they stream by (no second pass over the raw stems)
    cleaner = GroupRenderer(np.eye(m), cfg.n_fft) if stem_mode == "clean" and opts.num_sources is None else None

    def sink(blocks, cleaned: bool = False):
        for stems in blocks:
            if gstats is not None:
                gstats.add(stems)          # the grouping works on the raw stems
            if cleaner is not None and not cleaned:
                stems = cleaner.push(stems)
            stats.add(stems)
            for w, s in zip(writers, stems):
                w.write(s)

    decoded = 0
    try:
        for block in source.blocks(max(4096, info.sample_rate)):
            decoded += block.shape[0]
            sink(ola.push(to_model(block)))
            if on_progress:
                on_progress(block.shape[0] / info.sample_rate)
        tail = to_model(np.zeros(0, dtype=np.float32), last=True)
        sink(ola.push(tail))
        sink(ola.finish())
        if cleaner is not None:
            sink([cleaner.finish()], cleaned=True)
    finally:
        for w in writers:
            w.close()
    if decoded != info.frames:   # a header that over- or under-states the length: trust the decoder
        if not decoded:
            raise AudioError(f"{source.name}: empty audio (nothing decodes)")
        info = dataclasses.replace(info, frames=decoded)
        source = dataclasses.replace(source, info=info)
    if not stats.count:   # e.g. one sample at 48 kHz: nothing at the model's rate to separate
        raise AudioError(f"{source.name}: too short to separate ({decoded} sample(s) at {info.sample_rate} Hz, "
                         f"less than one at the model's {cfg.sample_rate} Hz)")
    env = stats.finish()
    activity = stem_activity(env)
    rms = np.sqrt(stats.sumsq / max(stats.count, 1))
    silent_input = stats.peak < 1e-6
    if silent_input:
        warnings.warn(f"{source.name}: input is silent; the stems are silent", SilentInputWarning,
                      stacklevel=2)
    plan = plan_grouping(gstats.finish(), opts.num_sources) if gstats is not None else \
        GroupingPlan(np.eye(m), None, m, audible=list(range(m)))
    groups = plan.hard_groups()
    mix_energy = stats.mix_sumsq / max(stats.count, 1)
    rendered = not plan.identity or (stem_mode == "clean" and cleaner is None)   # a second pass from clean shares
    if not rendered:   # which stems are active is decided on the model-rate stems
        group_rms = [float(r) for r in rms]
        group_act = [float(a) for a in activity]
    else:   # merged or clean outputs: decided on their model-rate rendering, described as written
        decide, written_levels = _write_merged(store, raw_paths, plan, source,
                                               cfg.sample_rate, out_rate, opts, cfg.n_fft)
        group_rms, group_act, mix_energy = decide
    active = [a >= MIN_ACTIVITY and r ** 2 >= mix_energy * 10 ** (ACTIVE_REL_DB / 10)
              for a, r in zip(group_act, group_rms)]
    drop = opts.drop_silent or opts.num_sources == "auto"   # auto: silent outputs never count
    keep = [i for i in range(len(groups)) if active[i] or not drop]
    if rendered:   # kept outputs are described as written; dropped ones by what dropped them
        for i in keep:
            group_rms[i], group_act[i] = written_levels[0][i], written_levels[1][i]
        if keep and len(keep) < len(groups) and out_rate == info.sample_rate:
            # made to sum to the input: the dropped outputs' part (their share of the band above
            # the model's Nyquist frequency, mostly) goes to the kept ones, which then still do
            for (r, a), i in zip(zip(*_fold_dropped(store, len(groups), keep, out_rate, opts.subtype)), keep):
                group_rms[i], group_act[i] = r, a
    if not rendered:
        written_levels = _write_outputs(store, raw_paths, groups, keep, source, cfg.sample_rate, out_rate, opts)
        if written_levels is not None:   # at another rate the files hold more (the band above 8 kHz)
            for (r, a), i in zip(zip(*written_levels), keep):
                group_rms[i], group_act[i] = r, a
    else:
        for j, i in enumerate(keep):
            store.rename(f".out_{i:02d}.wav", f"stem_{j:02d}.wav")
        for i in range(len(groups)):
            store.unlink(f".out_{i:02d}.wav")
    for p in raw_paths:
        store.unlink(p)
    seconds = time.time() - t0
    manifest = {
        "format": STEMS_FORMAT,
        "macs_version": __version__,
        "source": source.path,
        "source_sample_rate": info.sample_rate,
        "source_channels": info.channels,
        "source_frames": info.frames,
        "duration_s": info.duration,
        "sample_rate": out_rate,
        "model_sample_rate": cfg.sample_rate,
        "model": {"source": getattr(model, "source", "in-memory"), "name": cfg.name,
                  "num_sources": cfg.num_sources, "channels": cfg.channels,
                  "window_seconds": cfg.window_seconds},
        "settings": {**asdict(opts), "device": str(next(model.parameters()).device),
                     "precision_used": getattr(window_fn, "precision", opts.precision),
                     "stem_mode_used": stem_mode},
        "grouping": plan.to_dict(),
        "silent_input": bool(silent_input),
        "stems": [],
        "dropped": [],
        "timing": {"seconds": round(seconds, 3),
                   "real_time_factor": round(seconds / max(info.duration, 1e-9), 4)},
    }
    written = 0
    for gi, g in enumerate(groups):
        entry = {"model_stems": g, "stem_weights": np.round(plan.weights[:, gi], 4).tolist(),
                 "rms": group_rms[gi], "rms_db": _db(group_rms[gi] ** 2),
                 "activity": group_act[gi], "active": bool(active[gi])}
        if gi in keep:
            entry = {"file": f"stem_{written:02d}.wav", "index": written, **entry}
            manifest["stems"].append(entry)
            written += 1
        else:
            manifest["dropped"].append(entry)
    return manifest


def _output_blocks(store, raw_paths: list[str], combine: Callable[[np.ndarray, bool], np.ndarray], channels: int,
                   source: "Source", model_rate: int, out_rate: int) -> Iterator[np.ndarray]:
    """The second pass shared by every output layout: read the raw model-rate stems in blocks,
    ``combine(raw (M, n), last) -> (channels, n')``, resample to ``out_rate`` and, at the input's
    own rate, make the outputs sum exactly to the (mono) input; yields (n, channels) blocks."""
    info = source.info
    readers = [store.reader(p) for p in raw_paths]
    resampler = StreamResampler(model_rate, out_rate, channels=channels)
    reference = source.blocks(65536) if out_rate == info.sample_rate else None
    ref_buf = np.zeros(0, dtype=np.float32)
    expected = info.frames if out_rate == info.sample_rate else None
    written = 0
    try:
        while True:
            raw = np.stack([r.read(65536, dtype="float32") for r in readers])
            last = raw.shape[1] == 0
            block = resampler(np.ascontiguousarray(combine(raw, last).T), last=last)   # (n, channels)
            if expected is not None:
                block = block[: max(0, expected - written)]
                if last and written + block.shape[0] < expected:  # pad a short resampler tail
                    pad = np.zeros((expected - written - block.shape[0], channels), dtype=np.float32)
                    block = np.concatenate([block, pad])
            if reference is not None and block.shape[0]:
                while ref_buf.size < block.shape[0]:
                    more = next(reference, None)
                    if more is None:   # the input decoded shorter than on the first pass
                        raise AudioError(f"{source.name}: decoded to fewer samples on the second read "
                                         "than on the first")
                    ref_buf = np.concatenate([ref_buf, more])
                ref, ref_buf = ref_buf[: block.shape[0]], ref_buf[block.shape[0]:]
                block = block + ((ref - block.sum(1)) / channels)[:, None]
            written += block.shape[0]
            yield block
            if last:
                return
    finally:
        for r in readers:
            r.close()


def _write_outputs(store, raw_paths: list[str], groups: list[list[int]], keep: list[int],
                   source: "Source", model_rate: int, out_rate: int,
                   opts: SeparateOptions) -> tuple[list[float], list[float]] | None:
    """Second pass: group, drop and resample the raw model-rate stems into the final files. At the
    input's rate the kept outputs are made to sum to the input (what the dropped ones held at the
    model rate is below the silence bar; the band above the model's Nyquist frequency is shared
    among the kept ones). At another rate than the model's, returns the RMS and activity of each
    kept output measured on what was written; else None (the model-rate figures describe them)."""
    finals = [f"stem_{j:02d}.wav" for j in range(len(keep))]
    identity = all(g == [i] for i, g in enumerate(groups))
    if identity and len(keep) == len(groups) and out_rate == model_rate and opts.subtype == "FLOAT":
        for i, f in zip(keep, finals):
            store.rename(raw_paths[i], f)
        return None
    if not keep:
        return None
    kept = [groups[i] for i in keep]

    def combine(raw: np.ndarray, last: bool) -> np.ndarray:
        return np.stack([raw[g].sum(0) for g in kept]) if not last else np.zeros((len(kept), 0), np.float32)

    measured = _StemStats(len(kept), out_rate) if out_rate != model_rate else None
    writers = [store.writer(f, out_rate, opts.subtype) for f in finals]
    try:
        for block in _output_blocks(store, raw_paths, combine, len(kept), source, model_rate, out_rate):
            if measured is not None and block.shape[0]:
                measured.add(np.ascontiguousarray(block.T))
            for j in range(len(kept)):
                writers[j].write(block[:, j])
    finally:
        for w in writers:
            w.close()
    return None if measured is None else _levels(measured)[:2]


def _write_merged(store, raw_paths: list[str], plan: GroupingPlan, source: "Source",
                  model_rate: int, out_rate: int, opts: SeparateOptions,
                  n_fft: int) -> tuple[list[float], list[float], float]:
    """Second pass for ``--num-sources`` and clean stems: render the outputs (grouping.GroupRenderer) from
    the raw stems into ``.out_XX.wav``, resampled and made to sum to the input as in
    :func:`_write_outputs`; returns each output's RMS and activity and the mixture's mean square,
    measured on what was written."""
    k = plan.weights.shape[1]
    renderer = GroupRenderer(plan.weights, n_fft)
    at_model = _StemStats(k, model_rate) if model_rate != out_rate else None   # as rendered, before resampling
    measured = _StemStats(k, out_rate)

    def combine(raw: np.ndarray, last: bool) -> np.ndarray:
        out = renderer.finish() if last else renderer.push(raw)
        if at_model is not None and out.shape[1]:
            at_model.add(out)
        return out

    writers = [store.writer(f".out_{g:02d}.wav", out_rate, opts.subtype) for g in range(k)]
    try:
        for block in _output_blocks(store, raw_paths, combine, k, source, model_rate, out_rate):
            if block.shape[0]:
                measured.add(np.ascontiguousarray(block.T))
            for g in range(k):
                writers[g].write(block[:, g])
    finally:
        for w in writers:
            w.close()
    written = _levels(measured)
    return (_levels(at_model) if at_model is not None else written), written[:2]


def _levels(stats: "_StemStats") -> tuple[list[float], list[float], float]:
    """Each track's RMS and activity and the mixture's mean square, from streamed statistics."""
    env = stats.finish()
    rms = np.sqrt(stats.sumsq / max(stats.count, 1))
    return ([float(r) for r in rms], [float(a) for a in stem_activity(env)],
            stats.mix_sumsq / max(stats.count, 1))


def _fold_dropped(store, k: int, keep: list[int], rate: int, subtype: str) -> tuple[list[float], list[float]]:
    """Add the sum of the outputs that are dropped, in equal parts, to the kept ones (``.out_XX.wav``
    rewritten in place through ``.fold_XX.wav``), so the kept outputs sum to what all of them did;
    returns the kept outputs' RMS and activity as rewritten."""
    readers = [store.reader(f".out_{g:02d}.wav") for g in range(k)]
    writers = [store.writer(f".fold_{i:02d}.wav", rate, subtype) for i in keep]
    dropped = [g for g in range(k) if g not in keep]
    measured = _StemStats(len(keep), rate)
    try:
        while True:
            block = np.stack([r.read(65536, dtype="float32") for r in readers])
            if not block.shape[1]:
                break
            out = block[keep] + block[dropped].sum(0, keepdims=True) / len(keep)
            measured.add(out)
            for w, x in zip(writers, out):
                w.write(x)
    finally:
        for r in readers:
            r.close()
        for w in writers:
            w.close()
    for i in keep:
        store.unlink(f".out_{i:02d}.wav")
        store.rename(f".fold_{i:02d}.wav", f".out_{i:02d}.wav")
    return _levels(measured)[:2]


__all__ = ["SeparateOptions", "STEM_MODES", "stem_mode_for", "separate_file", "separate_to_memory", "separate_waveform", "Stems", "Source", "group_stems", "plan_grouping", "stem_activity",
           "SilentInputWarning", "MacsError"]
