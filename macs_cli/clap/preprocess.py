"""Waveform preprocessing for CLAP: resample to 48 kHz and fit clips to CLAP's 10 s input.

Everything here is plain torch and differentiable with respect to the input waveform (training
back-propagates CLAP-space losses through it into the separator):

- :func:`resample_to_48k` uses ``torchaudio.functional.resample`` (a windowed-sinc FIR filter).
- :func:`repeat_pad` fits a clip of at most 10 s to exactly 480,000 samples the way laion-clap's
  ``get_audio_features(..., data_filling='repeatpad')`` does: the clip is tiled ``floor(N / T)``
  times and the remainder (shorter than one copy of the clip) is filled with zeros.
  ``mode='repeat'`` tiles and cuts instead (laion-clap's ``'repeat'``), ``mode='pad'`` only
  zero-pads.
- :func:`to_clap_input` = resample + repeat-pad, for clips of at most 10 s (the separator's 8 s
  windows, the labels' clips). Longer input is an error there: use :func:`chunk_10s`.
- :func:`chunk_10s` cuts longer clips into 10 s chunks for inference. laion-clap's non-fusion
  model crops a *random* 10 s window from long clips (``rand_trunc``); we want embeddings that do
  not change from run to run and that see the whole clip, so a clip of T > 10 s becomes
  ``ceil(T / 10 s)`` chunks: consecutive chunks starting at 0 s, 10 s, 20 s, ... and, when the
  length is not a multiple of 10 s, a last chunk aligned with the end of the clip (it overlaps
  the one before it), so that every chunk holds 10 s of real audio. Clips of at most 10 s give
  one repeat-padded chunk. An encoder averages the chunk embeddings
  (:meth:`~macs_cli.clap.encoders.ClapEncoder.embed_waveforms`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AudioError

CLAP_SAMPLE_RATE = 48_000
CLIP_SECONDS = 10
CLIP_SAMPLES = CLAP_SAMPLE_RATE * CLIP_SECONDS  # 480,000
PAD_MODES = ("repeatpad", "repeat", "pad")


def as_waveform_batch(wav: torch.Tensor | np.ndarray | Sequence[float]) -> tuple[torch.Tensor, bool]:
    """``(T,)`` or ``(B, T)`` audio as a floating ``(B, T)`` tensor, and whether the input was 1-D."""
    x = wav if isinstance(wav, torch.Tensor) else torch.as_tensor(np.asarray(wav))
    if not torch.is_floating_point(x):
        x = x.to(torch.float32)
    if x.dim() == 1:
        return x.unsqueeze(0), True
    if x.dim() == 2:
        return x, False
    raise ValueError(f"expected mono audio of shape (T,) or (B, T), got {tuple(x.shape)}")


def _check_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


def resampled_length(length: int, sample_rate: int, target_rate: int = CLAP_SAMPLE_RATE) -> int:
    """Number of samples ``torchaudio.functional.resample`` returns for ``length`` input samples."""
    g = math.gcd(int(sample_rate), int(target_rate))
    orig, new = int(sample_rate) // g, int(target_rate) // g
    return -(-new * int(length) // orig)  # ceil(new * length / orig)


def resample_to_48k(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Resample ``(..., T)`` audio from ``sample_rate`` to 48 kHz (differentiable)."""
    sample_rate = _check_rate(sample_rate)
    if sample_rate == CLAP_SAMPLE_RATE:
        return wav
    import torchaudio.functional as AF

    return AF.resample(wav, sample_rate, CLAP_SAMPLE_RATE)


def repeat_pad(wav: torch.Tensor, length: int = CLIP_SAMPLES, mode: str = "repeatpad") -> torch.Tensor:
    """Fit ``(B, T)`` audio with ``0 < T <= length`` to exactly ``length`` samples (see module doc)."""
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}")
    t = wav.shape[-1]
    if t == 0:
        raise AudioError("empty clip: there is no audio to embed")
    if t > length:
        raise ValueError(f"clip has {t} samples, more than {length}: use chunk_10s for long audio")
    if t == length:
        return wav
    if mode == "repeatpad":
        wav = wav.repeat(*([1] * (wav.dim() - 1)), length // t)
    elif mode == "repeat":
        wav = wav.repeat(*([1] * (wav.dim() - 1)), -(-length // t))[..., :length]
    return F.pad(wav, (0, length - wav.shape[-1]))


def to_clap_input(wav: torch.Tensor, sample_rate: int, mode: str = "repeatpad") -> torch.Tensor:
    """``(B, T)`` or ``(T,)`` audio of at most 10 s at ``sample_rate`` -> ``(B, 480000)`` at 48 kHz.

    Resamples with ``torchaudio.functional.resample`` (its default sinc settings: the official MACS
    resampler, and the one CLAP input of training and inference alike) and repeat-pads like laion-clap
    (``mode``: ``'repeatpad'``, ``'repeat'`` or ``'pad'``). Differentiable; silent input gives
    zeros. A 1-D input gives a batch of one. Clips longer than 10 s raise ``ValueError``: use
    :func:`chunk_10s`.
    """
    x, _ = as_waveform_batch(wav)
    sample_rate = _check_rate(sample_rate)
    if x.shape[-1] == 0:
        raise AudioError("empty clip: there is no audio to embed")
    if x.shape[-1] > CLIP_SECONDS * sample_rate:
        raise ValueError(f"clip is {x.shape[-1] / sample_rate:.2f} s long, more than {CLIP_SECONDS} s: "
                         "use chunk_10s for long audio")
    x = resample_to_48k(x, sample_rate)
    return repeat_pad(x[..., :CLIP_SAMPLES], CLIP_SAMPLES, mode)


def chunk_starts(length: int, size: int = CLIP_SAMPLES) -> list[int]:
    """Start offsets of the 10 s chunks of a clip of ``length > size`` samples (see module doc)."""
    starts = list(range(0, length - size + 1, size))
    if starts[-1] + size < length:
        starts.append(length - size)  # the tail, aligned with the end of the clip
    return starts


def chunk_10s(wav: torch.Tensor, sample_rate: int, lengths: Sequence[int] | torch.Tensor | None = None,
              mode: str = "repeatpad") -> tuple[torch.Tensor, torch.Tensor]:
    """Cut audio of any length into CLAP inputs: ``(B, C, 480000)`` chunks and a ``(B, C)`` mask.

    ``wav``: ``(B, T)`` or ``(T,)`` at ``sample_rate``; ``lengths`` (optional, in input samples)
    gives each row's valid length when rows of different lengths were zero-padded into one
    batch. Row ``b`` gives ``ceil(T_b / 10 s)`` chunks (one repeat-padded chunk when
    ``T_b <= 10 s``; the layout is described in the module doc); ``mask[b, c]`` is True for the
    real chunks and the others are zeros. Averaging the embeddings of the masked chunks gives one
    deterministic embedding per clip. Differentiable like :func:`to_clap_input`.
    """
    x, _ = as_waveform_batch(wav)
    sample_rate = _check_rate(sample_rate)
    b, t = x.shape
    if lengths is None:
        lens = [t] * b
    else:
        lens = [int(v) for v in (lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)]
        if len(lens) != b or any(v < 0 or v > t for v in lens):
            raise ValueError(f"lengths must hold {b} values between 0 and {t}, got {lens}")
    if any(v == 0 for v in lens):
        raise AudioError("empty clip: there is no audio to embed")
    x48 = resample_to_48k(x, sample_rate)
    lens48 = [min(resampled_length(v, sample_rate), x48.shape[-1]) for v in lens]
    rows: list[list[torch.Tensor]] = []
    for i, n in enumerate(lens48):
        row = x48[i, :n]
        if n <= CLIP_SAMPLES:
            rows.append([repeat_pad(row.unsqueeze(0), CLIP_SAMPLES, mode)[0]])
        else:
            rows.append([row[s:s + CLIP_SAMPLES] for s in chunk_starts(n)])
    c = max(len(r) for r in rows)
    zeros = x48.new_zeros(CLIP_SAMPLES)
    chunks = torch.stack([torch.stack(r + [zeros] * (c - len(r))) for r in rows])
    mask = torch.tensor([[j < len(r) for j in range(c)] for r in rows], device=x48.device)
    return chunks, mask
