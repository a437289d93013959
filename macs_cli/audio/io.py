"""Audio input and output: probing, streaming reads, resampling and whole-file helpers.

All decoding goes through ``soundfile`` (wav, flac, ogg/vorbis/opus, mp3 and the other formats
libsndfile reads); resampling through ``soxr`` (streaming, high quality). Every failure becomes an
:class:`~macs_cli.errors.AudioError` with a one-line message naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import AudioError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au")


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _open(path: Path):
    import soundfile as sf

    from ..errors import MacsError
    from ..fsutil import require_regular_file

    path = Path(path)
    try:
        require_regular_file(path, "audio file")
    except AudioError:
        raise
    except MacsError as exc:
        raise AudioError(str(exc)) from None
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{path}: cannot decode audio ({msg})") from None


# Formats libsndfile (1.2) decodes wrongly when they are read in more than one call (MP3: from the
# third block on, the samples differ from the file's by up to full scale), and whose header length
# is an estimate (a VBR or truncated MP3 can decode to half of it). They are decoded in one read.
WHOLE_READ_FORMATS = frozenset({"MP3"})


def _decoded_frames(f) -> int:
    """Frames an open file really decodes to, whatever its header says (the count of block reads
    is right; their samples are not needed). Reads into a buffer: ``read(n)`` would stop at the
    header's count."""
    buf = np.empty((1 << 16, f.channels), dtype=np.int16)
    n = 0
    while True:
        got = len(f.read(out=buf))
        if not got:
            return n
        n += got


def probe(path: Path) -> AudioInfo:
    """Header facts of an audio file (an MP3's frame count is the header's estimate: the readers
    below count what decodes); raises AudioError if it is missing, corrupt or empty."""
    with _open(path) as f:
        info = AudioInfo(Path(path), int(f.samplerate), int(f.channels), int(f.frames),
                         str(f.format), str(f.subtype))
    if info.sample_rate <= 0:
        raise AudioError(f"{path}: invalid sample rate {info.sample_rate}")
    if info.frames <= 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    return info


def iter_blocks(path: Path, block_frames: int = 1 << 16, mono: bool = True) -> Iterator[np.ndarray]:
    """Yield float32 blocks of the file: (n,) when ``mono`` (channel mean), else (n, channels).

    Raises AudioError on decoding errors or non-finite samples, naming the file.
    """
    import soundfile as sf

    with _open(path) as f:
        whole = None
        if str(f.format) in WHOLE_READ_FORMATS:   # one read: see WHOLE_READ_FORMATS
            try:
                frames = _decoded_frames(f)   # not the header's count: it may promise far more
                with _open(path) as again:
                    whole = np.empty((frames, again.channels), dtype=np.float32)
                    whole = whole[: again.read(out=whole).shape[0]]
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(f"{path}: decoding failed mid-file ({exc})") from None
            except MemoryError:
                raise AudioError(f"{path}: too long to decode in memory ({frames} frames)") from None
        start = 0
        while True:
            if whole is not None:
                block, start = whole[start:start + block_frames], start + block_frames
            else:
                try:
                    block = f.read(block_frames, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise AudioError(f"{path}: decoding failed mid-file ({exc})") from None
            if block.shape[0] == 0:
                return
            if not np.isfinite(block).all():
                raise AudioError(f"{path}: contains NaN or infinite samples")
            yield block.mean(axis=1) if mono else block


class StreamResampler:
    """Streaming resampler (soxr) for (n,) or (n, channels) float32 blocks; identity if rates match."""

    def __init__(self, in_rate: int, out_rate: int, channels: int = 1, quality: str = "HQ"):
        self.in_rate, self.out_rate, self.channels = int(in_rate), int(out_rate), channels
        self._stream = None
        if self.in_rate != self.out_rate:
            import soxr

            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, channels,
                                               dtype="float32", quality=quality)

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        return self._stream.resample_chunk(np.ascontiguousarray(block, dtype=np.float32), last=last)


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a whole (n,) or (n, channels) array."""
    if int(in_rate) == int(out_rate):
        return x.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(np.asarray(x, dtype=np.float32), in_rate, out_rate, quality="HQ")


def read_audio(path: Path, sample_rate: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Read a whole file as float32 (mono by default), resampled to ``sample_rate`` if given."""
    info = probe(path)
    data = np.concatenate(list(iter_blocks(path, mono=mono)), axis=0)
    rate = info.sample_rate
    if sample_rate is not None and sample_rate != rate:
        data, rate = resample(data, rate, sample_rate), sample_rate
    return data, rate


def _walk(root: Path, skip: Path | None, prune: Callable[[Path], bool] | None = None,
          pruned: list[Path] | None = None):
    """Every non-hidden entry below ``root`` (linked folders followed, each real folder once; the
    ``skip`` folder, hidden files and folders, and folders for which ``prune`` is true left out;
    those are appended to ``pruned``)."""
    seen: set[Path] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = Path(folder).resolve()
        if real in seen or (skip is not None and real.is_relative_to(skip)):
            dirs[:] = []
            continue
        seen.add(real)
        if prune is not None and Path(folder) != Path(root) and prune(Path(folder)):
            dirs[:] = []
            if pruned is not None:
                pruned.append(Path(folder))
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if not name.startswith("."):
                yield Path(folder) / name


def _entry_problem(p: Path) -> str | None:
    """Why a found entry with an audio suffix cannot be read, or None if it is a regular file."""
    from ..errors import MacsError
    from ..fsutil import require_regular_file

    try:
        require_regular_file(p, "audio file")
    except MacsError as exc:
        return str(exc)
    return None


def find_audio_files(inputs: list[Path], exclude: Path | None = None, skip_outputs: bool = False,
                     notes: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """Expand files and folders (recursively) into audio files; returns (files, problems).

    Files below ``exclude`` are not searched. With ``skip_outputs``, folders that are ``macs
    separate`` outputs (they hold our manifest) are not searched either, so separating a folder
    again does not take earlier results for inputs; ``notes`` gets one line saying how many were
    left out. Entries that are not regular files (FIFOs, devices, broken links) are problems."""
    from ..formats import STEMS

    files: list[Path] = []
    problems: list[str] = []
    skip = Path(exclude).resolve() if exclude is not None else None
    pruned: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            if skip_outputs and STEMS.owns(item):
                problems.append(f"{item}: is a macs separate output (its stems were not separated again; "
                                "give the stem files themselves to do that)")
                continue
            found, before = [], len(problems)
            for p in _walk(item, skip, STEMS.owns if skip_outputs else None, pruned):
                if p.suffix.lower() not in AUDIO_SUFFIXES:
                    continue
                problem = _entry_problem(p)
                if problem is None:
                    found.append(p)
                else:
                    problems.append(problem)
            found.sort()
            if not found and len(problems) == before:
                problems.append(f"{item}: folder holds no audio files")
            files.extend(found)
        elif os.path.lexists(item):
            problem = _entry_problem(item)
            if problem is None:
                files.append(item)
            else:
                problems.append(problem)
        else:
            problems.append(f"{item}: no such file")
    if pruned and notes is not None:
        notes.append(f"left out {len(pruned)} folder(s) holding macs separate output "
                     f"(e.g. {pruned[0]}): earlier results are not inputs")
    unique, seen = [], set()
    for f in files:                      # a file named twice (or by two routes) is separated once
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems
