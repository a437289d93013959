"""Non-learned reference separators at the model's STFT (16 kHz, n_fft 400, hop 200, Hann, centred).

Each takes mono mixtures ``mix`` (B, T) and returns stems (B, K, T):

* :func:`band_split` -- the floor: K contiguous mel-spaced frequency bands, binary masks;
* :func:`nmf_separate` -- KL-NMF of the magnitude spectrogram with K components, each stem by the
  soft mask W_k H_k / sum_j W_j H_j (the classic unsupervised spectrogram factorisation);
* :func:`ideal_ratio_mask` -- the oracle: given the true sources, the power-ratio mask
  |S_j|^2 / sum_i |S_i|^2 of each, applied to the mixture STFT (the usual ceiling for a model that
  masks this STFT; not a strict bound on SI-SDR, but rarely beaten).

The masks of every method sum to one in every time-frequency bin, so (the ISTFT being linear) the
stems sum to the mixture up to float rounding -- for the IRM when the mixture is the sum of the
references, which is how the evaluation sets are built.
"""

from __future__ import annotations

import math

import torch

N_FFT = 400
HOP = 200
SAMPLE_RATE = 16000
EPS = 1e-10

__all__ = ["stft", "istft", "apply_masks", "mel_band_edges", "band_masks", "band_split", "nmf",
           "kl_divergence", "nmf_separate", "ideal_ratio_mask", "N_FFT", "HOP", "SAMPLE_RATE"]


# -- the model's STFT -------------------------------------------------------------------------------
def _window(device: torch.device) -> torch.Tensor:
    return torch.hann_window(N_FFT, device=device)


def stft(wav: torch.Tensor) -> torch.Tensor:
    """(..., T) real -> (..., F, N) complex, F = 201 (the separator's STFT)."""
    shape = wav.shape
    spec = torch.stft(wav.reshape(-1, shape[-1]).float(), n_fft=N_FFT, hop_length=HOP,
                      win_length=N_FFT, window=_window(wav.device), center=True,
                      pad_mode="reflect", return_complex=True)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    """(..., F, N) complex -> (..., length) real."""
    shape = spec.shape
    wav = torch.istft(spec.reshape(-1, *shape[-2:]), n_fft=N_FFT, hop_length=HOP, win_length=N_FFT,
                      window=_window(spec.device), center=True, length=length)
    return wav.reshape(*shape[:-2], length)


def apply_masks(mix: torch.Tensor, masks: torch.Tensor, spec: torch.Tensor | None = None) -> torch.Tensor:
    """Masks (B, K, F, N) (or (K, F, 1) etc., broadcastable) times the mixture STFT -> (B, K, T)."""
    if mix.dim() != 2:
        raise ValueError(f"mix must be (B, T), got shape {tuple(mix.shape)}")
    spec = stft(mix) if spec is None else spec
    return istft(masks * spec.unsqueeze(1), mix.shape[-1])


# -- (a) fixed band split -------------------------------------------------------------------------
def _hz_to_mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


def _mel_to_hz(m: float) -> float:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_band_edges(num_bands: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> list[int]:
    """STFT bin indices [e_0 = 0, ..., e_K = F] of K contiguous bands with mel-spaced edges; every
    band holds at least one bin. Band k is bins e_k <= f < e_{k+1}."""
    bins = n_fft // 2 + 1
    if not 1 <= num_bands <= bins:
        raise ValueError(f"num_bands must be in 1..{bins} (got {num_bands})")
    top = _hz_to_mel(sample_rate / 2)
    edges = [0]
    for k in range(1, num_bands):
        hz = _mel_to_hz(top * k / num_bands)
        e = int(round(hz / sample_rate * n_fft))
        # at least one bin per band, and room for the bands still to come
        edges.append(min(max(e, edges[-1] + 1), bins - (num_bands - k)))
    edges.append(bins)
    return edges


def band_masks(num_bands: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(K, F, 1) binary masks, one band each, summing to one in every bin."""
    edges = mel_band_edges(num_bands)
    masks = torch.zeros(num_bands, edges[-1], 1, device=device)
    for k in range(num_bands):
        masks[k, edges[k]: edges[k + 1]] = 1.0
    return masks


def band_split(mix: torch.Tensor, num_bands: int = 6) -> torch.Tensor:
    """The floor: split the mixture STFT into ``num_bands`` mel-spaced bands. (B, T) -> (B, K, T)."""
    return apply_masks(mix, band_masks(num_bands, mix.device))


# -- (b) KL-NMF -----------------------------------------------------------------------------------
def kl_divergence(v: torch.Tensor, approx: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Generalised KL divergence D(V | V_hat) summed over the last two axes: (B,)."""
    return (v * torch.log((v + eps) / (approx + eps)) - v + approx).sum(dim=(-2, -1))


def nmf(v: torch.Tensor, num_components: int, iterations: int = 200, seed: int = 0,
        history: bool = False, eps: float = EPS):
    """Batched KL-NMF, V (B, F, N) >= 0 ~ W (B, F, K) @ H (B, K, N), by the Lee-Seung
    multiplicative updates (each update does not increase the KL divergence).

    Returns (W, H), plus the per-iteration KL divergences (iterations + 1, B) if ``history``.
    The initialisation is uniform random from ``seed`` (on the CPU, so results do not depend on
    the device), scaled to the data's mean.
    """
    if v.dim() != 3:
        raise ValueError(f"V must be (B, F, N), got shape {tuple(v.shape)}")
    b, f, n = v.shape
    k = int(num_components)
    if k < 1:
        raise ValueError("num_components must be >= 1")
    v = v.float()
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    scale = (v.mean(dim=(-2, -1), keepdim=True) / k).clamp_min(eps).sqrt()      # (B, 1, 1)
    w = (torch.rand(b, f, k, generator=gen) + 0.1).to(v.device) * scale
    h = (torch.rand(b, k, n, generator=gen) + 0.1).to(v.device) * scale
    trace = [kl_divergence(v, w @ h, eps)] if history else None
    for _ in range(int(iterations)):
        ratio = v / (w @ h + eps)
        h = h * (w.transpose(1, 2) @ ratio) / (w.sum(dim=1)[:, :, None] + eps)
        ratio = v / (w @ h + eps)
        w = w * (ratio @ h.transpose(1, 2)) / (h.sum(dim=2)[:, None, :] + eps)
        if history:
            trace.append(kl_divergence(v, w @ h, eps))
    if history:
        return w, h, torch.stack(trace)
    return w, h


def nmf_separate(mix: torch.Tensor, num_components: int = 6, iterations: int = 200,
                 seed: int = 0) -> torch.Tensor:
    """KL-NMF of |STFT| with K components; stem k = ISTFT(W_k H_k / sum_j W_j H_j * X).

    (B, T) -> (B, K, T); the stems sum to the mixture.
    """
    spec = stft(mix)
    w, h = nmf(spec.abs(), num_components, iterations, seed)
    parts = w.transpose(1, 2)[..., None] * h[:, :, None, :] + EPS / num_components   # (B, K, F, N)
    masks = parts / parts.sum(dim=1, keepdim=True)
    return apply_masks(mix, masks, spec)


# -- (c) the oracle ---------------------------------------------------------------------------------
def ideal_ratio_mask(mix: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Oracle power-ratio masks |S_j|^2 / sum_i |S_i|^2 from the references (B, S, T), applied to
    the mixture STFT: (B, S, T). Bins where every reference is silent are shared equally."""
    if refs.dim() != 3 or refs.shape[0] != mix.shape[0] or refs.shape[-1] != mix.shape[-1]:
        raise ValueError(f"refs must be (B, S, T) matching mix {tuple(mix.shape)}, "
                         f"got {tuple(refs.shape)}")
    power = stft(refs).abs().square() + EPS / refs.shape[1]                        # (B, S, F, N)
    masks = power / power.sum(dim=1, keepdim=True)
    return apply_masks(mix, masks)
