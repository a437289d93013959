"""A differentiable torch log-mel front end equal to ``transformers.ClapFeatureExtractor``.

The feature extractor of the Hugging Face CLAP port is numpy code, so no gradient reaches the
waveform through it. For an unfused model (``truncation='rand_trunc'``, ``padding='repeatpad'``)
it computes, per 10 s clip at 48 kHz:

- a centred STFT (reflect padding) with a periodic Hann window of ``fft_window_size`` (1024)
  samples and hop ``hop_length`` (480): 1001 frames;
- the power spectrum |X|^2 through a Slaney-scale, Slaney-normalised mel filter bank of
  ``feature_size`` (64) bands between ``frequency_min`` and ``frequency_max`` (50 Hz and 14 kHz
  for ``laion/clap-htsat-unfused``; the class defaults are 0 Hz and 14 kHz);
- decibels, ``10 * log10(max(mel, 1e-10))`` (no ``top_db`` clipping on this path).

:class:`ClapLogMel` does the same with ``torch.stft`` and ``torchaudio``'s mel filter bank, so the
audio branch can be trained through; ``tests/test_clap.py`` checks it against the extractor.
Silent input gives -100 dB everywhere, never NaN (the power is computed as re^2 + im^2, whose
gradient is finite at zero, not as ``abs(X) ** 2``).
"""

from __future__ import annotations

import torch
from torch import nn

from .preprocess import CLAP_SAMPLE_RATE


class ClapLogMel(nn.Module):
    """``(B, T)`` waveform -> ``(B, 1, frames, n_mels)`` log-mel in dB, as ClapFeatureExtractor."""

    def __init__(self, sample_rate: int = CLAP_SAMPLE_RATE, n_fft: int = 1024, hop_length: int = 480,
                 n_mels: int = 64, f_min: float = 50.0, f_max: float = 14_000.0, amin: float = 1e-10):
        super().__init__()
        import torchaudio.functional as AF

        self.sample_rate, self.n_fft, self.hop_length = int(sample_rate), int(n_fft), int(hop_length)
        self.n_mels, self.f_min, self.f_max, self.amin = int(n_mels), float(f_min), float(f_max), float(amin)
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64)
                             .to(torch.float32), persistent=False)
        fb = AF.melscale_fbanks(self.n_fft // 2 + 1, self.f_min, self.f_max, self.n_mels, self.sample_rate,
                                norm="slaney", mel_scale="slaney")
        self.register_buffer("mel_fb", fb.to(torch.float32), persistent=False)  # (freqs, mels)

    @classmethod
    def from_feature_extractor(cls, fe) -> "ClapLogMel":
        """The front end matching a loaded ``ClapFeatureExtractor``'s settings."""
        return cls(sample_rate=fe.sampling_rate, n_fft=fe.fft_window_size, hop_length=fe.hop_length,
                   n_mels=fe.feature_size, f_min=fe.frequency_min, f_max=fe.frequency_max)

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
                f"n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}")

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        spec = torch.stft(wav.to(self.window.dtype), self.n_fft, hop_length=self.hop_length,
                          win_length=self.n_fft, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True)  # (B, freqs, frames)
        power = torch.view_as_real(spec).pow(2).sum(-1)
        mel = torch.matmul(power.transpose(1, 2), self.mel_fb)  # (B, frames, mels)
        return (10.0 * torch.log10(mel.clamp(min=self.amin))).unsqueeze(1)
