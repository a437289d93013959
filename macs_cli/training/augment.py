"""Training-time augmentation of the sources of a mixture of mixtures: random EQ and synthetic reverb.

Applied to each placed source before m1 and m2 are summed, so MixIT's references (m1, m2) hold
the augmented sources and the model learns to separate coloured, reverberant sounds:

* **EQ** (probability ``eq_prob`` per source): a low shelf (80-400 Hz), a high shelf (2-6 kHz) and
  one peaking filter (200 Hz - 5 kHz, Q 0.5-2), each with a gain drawn in +-``eq_db`` dB; the
  RBJ-cookbook biquads, applied as their exact frequency response in one FFT.
* **Reverb** (probability ``reverb_prob``): convolution with a synthetic room impulse response,
  a direct path plus exponentially decaying Gaussian noise whose energy falls by 60 dB in RT60
  seconds (drawn in ``rt60``), at a direct-to-reverberant ratio drawn in ``drr_db``; the tail is
  causal (what falls past the window is dropped).

Every augmented source is scaled back to its RMS before augmentation, so levels (and the
``mix.gain_db`` spread) are kept. Everything runs batched on the training device with the
batch's ``torch.Generator``; with both probabilities at 0 nothing is drawn, so the batch stream is
exactly that of a run without augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError

LOW_SHELF_HZ = (80.0, 400.0)
HIGH_SHELF_HZ = (2000.0, 6000.0)
PEAK_HZ = (200.0, 5000.0)
PEAK_Q = (0.5, 2.0)
EQ_PAD = 2048          # FFT padding for the (decaying) IIR responses of the EQ


@dataclass
class AugmentSpec:
    eq_prob: float = 0.0
    eq_db: float = 6.0
    reverb_prob: float = 0.0
    rt60: tuple[float, float] = (0.2, 0.8)
    drr_db: tuple[float, float] = (0.0, 10.0)

    @property
    def active(self) -> bool:
        return self.eq_prob > 0 or self.reverb_prob > 0

    def validate(self) -> "AugmentSpec":
        def num(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def pair(v) -> bool:
            return isinstance(v, (list, tuple)) and len(v) == 2 and all(num(x) for x in v) and v[0] <= v[1]

        if not (num(self.eq_prob) and 0 <= self.eq_prob <= 1):
            raise ConfigError(f"augment.eq_prob must be in [0, 1] (got {self.eq_prob!r})")
        if not (num(self.eq_db) and 0 <= self.eq_db <= 24):
            raise ConfigError(f"augment.eq_db must be in [0, 24] dB (got {self.eq_db!r})")
        if not (num(self.reverb_prob) and 0 <= self.reverb_prob <= 1):
            raise ConfigError(f"augment.reverb_prob must be in [0, 1] (got {self.reverb_prob!r})")
        if not (pair(self.rt60) and 0.05 <= self.rt60[0] and self.rt60[1] <= 3.0):
            raise ConfigError(f"augment.rt60 must be two numbers lo, hi (seconds) with 0.05 <= lo <= hi <= 3 "
                              f"(got {self.rt60!r})")
        if not (pair(self.drr_db) and -20 <= self.drr_db[0] and self.drr_db[1] <= 40):
            raise ConfigError(f"augment.drr_db must be two numbers lo, hi (dB) with -20 <= lo <= hi <= 40 "
                              f"(got {self.drr_db!r})")
        return self


def _uniform(lo: float, hi: float, shape, gen: torch.Generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)


def _log_uniform(lo: float, hi: float, shape, gen: torch.Generator, device) -> torch.Tensor:
    return torch.exp(_uniform(math.log(lo), math.log(hi), shape, gen, device))


def biquad_response(kind: str, f0: torch.Tensor, gain_db: torch.Tensor, q: torch.Tensor | None,
                    freqs: torch.Tensor, rate: int) -> torch.Tensor:
    """The complex frequency response at ``freqs`` (Hz, (F,)) of RBJ-cookbook biquads with
    parameters of shape (...): ``kind`` is ``lowshelf``, ``highshelf`` (slope 1) or ``peak``.
    Returns (..., F) complex64."""
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2 * math.pi * f0 / rate
    cos, sin = torch.cos(w0), torch.sin(w0)
    if kind == "peak":
        alpha = sin / (2 * q)
        b = (1 + alpha * a, -2 * cos, 1 - alpha * a)
        den = (1 + alpha / a, -2 * cos, 1 - alpha / a)
    else:
        alpha = sin / 2 * math.sqrt(2.0)
        sa = 2 * torch.sqrt(a) * alpha
        if kind == "lowshelf":
            b = (a * ((a + 1) - (a - 1) * cos + sa), 2 * a * ((a - 1) - (a + 1) * cos),
                 a * ((a + 1) - (a - 1) * cos - sa))
            den = ((a + 1) + (a - 1) * cos + sa, -2 * ((a - 1) + (a + 1) * cos), (a + 1) + (a - 1) * cos - sa)
        elif kind == "highshelf":
            b = (a * ((a + 1) + (a - 1) * cos + sa), -2 * a * ((a - 1) + (a + 1) * cos),
                 a * ((a + 1) + (a - 1) * cos - sa))
            den = ((a + 1) - (a - 1) * cos + sa, 2 * ((a - 1) - (a + 1) * cos), (a + 1) - (a - 1) * cos - sa)
        else:
            raise ValueError(f"unknown biquad kind {kind!r}")
    w = 2 * math.pi * freqs / rate
    z1 = torch.polar(torch.ones_like(w), -w)      # e^{-jw}
    z2 = z1 * z1

    def poly(c):
        return c[0][..., None] + c[1][..., None] * z1 + c[2][..., None] * z2

    return (poly(b) / poly(den)).to(torch.complex64)


def synthetic_rir(count: tuple[int, ...], rate: int, rt60: torch.Tensor, drr_db: torch.Tensor,
                  gen: torch.Generator, length: int) -> torch.Tensor:
    """(*count, length) impulse responses: 1 at t = 0 (the direct path), then Gaussian noise under
    an envelope falling 60 dB in ``rt60`` seconds, scaled so that direct / tail energy is
    ``drr_db`` dB."""
    device = rt60.device
    t = torch.arange(1, length, device=device, dtype=torch.float32) / rate
    env = torch.exp(-3 * math.log(10) * t / rt60[..., None])            # amplitude: -60 dB at rt60
    tail = torch.randn((*count, length - 1), generator=gen, device=device) * env
    energy = tail.square().sum(-1, keepdim=True).clamp_min(1e-12)
    tail = tail * torch.sqrt(10 ** (-drr_db[..., None] / 10) / energy)
    return torch.cat([torch.ones((*count, 1), device=device), tail], dim=-1)


def augment_sources(sources: torch.Tensor, present: torch.Tensor, gen: torch.Generator,
                    spec: AugmentSpec, rate: int) -> torch.Tensor:
    """EQ and reverb on (B, S, L) ``sources`` (``present`` (B, S): which slots hold a source);
    returns a tensor of the same shape with each augmented source at its original RMS."""
    if not spec.active:
        return sources
    b, s, length = sources.shape
    device = sources.device
    shape = (b, s)
    eq_on = (torch.rand(shape, generator=gen, device=device) < spec.eq_prob) & present
    rev_on = (torch.rand(shape, generator=gen, device=device) < spec.reverb_prob) & present
    rir_len = int(math.ceil(spec.rt60[1] * rate)) if spec.reverb_prob > 0 else 1
    n = 1 << int(math.ceil(math.log2(length + rir_len + EQ_PAD)))
    freqs = torch.fft.rfftfreq(n, 1.0 / rate).to(device)
    response = torch.ones((b, s, freqs.numel()), dtype=torch.complex64, device=device)
    if spec.eq_prob > 0:
        g = spec.eq_db
        low = biquad_response("lowshelf", _log_uniform(*LOW_SHELF_HZ, shape, gen, device),
                              _uniform(-g, g, shape, gen, device), None, freqs, rate)
        high = biquad_response("highshelf", _log_uniform(*HIGH_SHELF_HZ, shape, gen, device),
                               _uniform(-g, g, shape, gen, device), None, freqs, rate)
        peak = biquad_response("peak", _log_uniform(*PEAK_HZ, shape, gen, device),
                               _uniform(-g, g, shape, gen, device),
                               _uniform(*PEAK_Q, shape, gen, device), freqs, rate)
        response = torch.where(eq_on[..., None], low * high * peak, response)
    if spec.reverb_prob > 0:
        rir = synthetic_rir(shape, rate, _uniform(*spec.rt60, shape, gen, device),
                            _uniform(*spec.drr_db, shape, gen, device), gen, rir_len)
        response = torch.where(rev_on[..., None], response * torch.fft.rfft(rir, n), response)
    on = eq_on | rev_on
    if not bool(on.any()):
        return sources
    y = torch.fft.irfft(torch.fft.rfft(sources, n) * response, n)[..., :length]
    before = sources.square().mean(-1).sqrt()
    after = y.square().mean(-1).sqrt()
    y = y * (before / after.clamp_min(1e-12))[..., None]
    return torch.where(on[..., None], y, sources)
