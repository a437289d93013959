"""Audio input and output: probing, streaming reads, resampling and whole-file helpers.

All decoding goes through ``soundfile`` (wav, flac, ogg/vorbis/opus, mp3 and the other formats
libsndfile reads); resampling through ``soxr`` (streaming, high quality). Every failure becomes an
:class:`~macs_cli.errors.AudioError` with a one-line message naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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

    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{path}: cannot decode audio ({msg})") from None


def probe(path: Path) -> AudioInfo:
    """Header facts of an audio file; raises AudioError if it is missing, corrupt or empty."""
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
        while True:
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


def write_audio(path: Path, data: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> None:
    """Write (n,) or (n, channels) float audio. Callers handle atomic placement."""
    import soundfile as sf

    sf.write(str(path), np.asarray(data, dtype=np.float32), int(sample_rate), subtype=subtype)


def _walk(root: Path, skip: Path | None):
    """Every non-hidden entry below ``root`` (linked folders followed, each real folder once; the
    ``skip`` folder and hidden files and folders left out)."""
    seen: set[Path] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = Path(folder).resolve()
        if real in seen or (skip is not None and real.is_relative_to(skip)):
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if not name.startswith("."):
                yield Path(folder) / name


def find_audio_files(inputs: list[Path], exclude: Path | None = None) -> tuple[list[Path], list[str]]:
    """Expand files and folders (recursively) into audio files; returns (files, problems).

    Files below ``exclude`` (the output folder, when it lies inside an input folder) are not
    searched, so a rerun does not take earlier results for inputs."""
    files: list[Path] = []
    problems: list[str] = []
    skip = Path(exclude).resolve() if exclude is not None else None
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found, before = [], len(problems)
            for p in _walk(item, skip):
                if p.suffix.lower() not in AUDIO_SUFFIXES:
                    continue
                if p.is_file():
                    found.append(p)
                elif p.is_symlink():
                    problems.append(f"{p}: broken link")
            found.sort()
            if not found and len(problems) == before:
                problems.append(f"{item}: folder holds no audio files")
            files.extend(found)
        elif item.exists():
            files.append(item)
        else:
            problems.append(f"{item}: no such file")
    unique, seen = [], set()
    for f in files:                      # a file named twice (or by two routes) is separated once
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems
