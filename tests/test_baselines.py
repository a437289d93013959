"""Non-learned reference separators: band split, KL-NMF and the ideal ratio mask."""

from __future__ import annotations

import math

import pytest
import torch

from macs_cli.evaluation.baselines import (band_masks, band_split, ideal_ratio_mask, istft,
                                           kl_divergence, mel_band_edges, nmf, nmf_separate, stft)
from macs_cli.evaluation.sisdr import best_grouped_sisdr, best_one_to_one_sisdr, si_sdr

RATE = 16000


def tone(freq: float, seconds: float = 1.0, amp: float = 0.3, phase: float = 0.0) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE), dtype=torch.float64) / RATE
    return (amp * torch.sin(2 * math.pi * freq * t + phase)).float()


def noise_burst(seconds: float, start: float, stop: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.randn(int(seconds * RATE), generator=g)
    t = torch.arange(x.numel()) / RATE
    return x * ((t >= start) & (t < stop)).float()


def test_stft_matches_the_model_and_round_trips():
    from macs_cli.separation.config import SeparatorConfig
    from macs_cli.separation.model import Separator

    model = Separator(SeparatorConfig(channels=4, depth=2, window_seconds=1.0))
    x = torch.randn(2, RATE, generator=torch.Generator().manual_seed(0))
    spec = stft(x)
    assert spec.shape == (2, 201, RATE // 200 + 1)
    assert torch.allclose(spec, model.stft(x), atol=1e-5)
    assert torch.allclose(istft(spec, RATE), x, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 6, 16])
def test_mel_band_edges_are_contiguous_and_cover_all_bins(k):
    edges = mel_band_edges(k)
    assert edges[0] == 0 and edges[-1] == 201 and len(edges) == k + 1
    assert all(b > a for a, b in zip(edges, edges[1:]))
    widths = [b - a for a, b in zip(edges, edges[1:])]
    if k >= 3:  # mel spacing: the top band is wider than the bottom one
        assert widths[-1] > widths[0]
    masks = band_masks(k)
    assert torch.equal(masks.sum(0), torch.ones(201, 1))
    assert set(masks.unique().tolist()) <= {0.0, 1.0}


def test_shapes():
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(3, 8000, generator=g)
    refs = torch.randn(3, 2, 8000, generator=g)
    assert band_split(mix).shape == (3, 6, 8000)
    assert band_split(mix, num_bands=4).shape == (3, 4, 8000)
    assert nmf_separate(mix, num_components=5, iterations=5).shape == (3, 5, 8000)
    assert ideal_ratio_mask(refs.sum(1), refs).shape == (3, 2, 8000)
    with pytest.raises(ValueError):
        ideal_ratio_mask(mix, refs[:2])


@pytest.mark.parametrize("method", [band_split, nmf_separate])
def test_stems_sum_to_the_mixture(method):
    mix = torch.stack([tone(440) + noise_burst(1.0, 0.2, 0.6, 0), noise_burst(1.0, 0.0, 1.0, 1)])
    stems = method(mix)
    err = (stems.sum(1) - mix).square().mean().sqrt()
    assert err < 1e-5 * mix.square().mean().sqrt() + 1e-7


def test_band_split_separates_two_tones():
    low, high = tone(200), tone(4000, amp=0.2, phase=0.3)
    mix = (low + high)[None]
    stems = band_split(mix)                                       # 6 bands, edges 360 ... 5000 Hz
    energy = stems.square().sum(-1)[0]
    assert int(energy.argmax()) == 0                              # 200 Hz in the lowest band
    assert energy[4] > 0.2 * energy.sum()                         # 4 kHz in band 3040-5000 Hz
    core = slice(400, -400)                                       # away from the reflect-padded edges
    assert si_sdr(stems[0, 0, core], low[core]) > 30.0
    assert si_sdr(stems[0, 4, core], high[core]) > 30.0


def test_nmf_decreases_its_kl_objective():
    mix = (tone(300) * (torch.arange(RATE) < RATE // 2) + tone(2500, amp=0.2) * (torch.arange(RATE) >= RATE // 3))
    v = stft(mix[None]).abs()
    w, h, trace = nmf(v, 4, iterations=40, seed=3, history=True)
    assert trace.shape == (41, 1)
    assert (w >= 0).all() and (h >= 0).all()
    steps = trace[1:, 0] - trace[:-1, 0]
    assert (steps <= 1e-3 * trace[0, 0]).all()                    # monotone up to float rounding
    assert trace[-1, 0] < 0.5 * trace[0, 0]
    assert torch.allclose(kl_divergence(v, w @ h), trace[-1])
    # deterministic from the seed
    w2, h2 = nmf(v, 4, iterations=40, seed=3)
    assert torch.equal(w, w2) and torch.equal(h, h2)


def test_nmf_separates_two_notes_that_play_at_different_times():
    a = tone(300) * (torch.arange(RATE) < RATE // 2)
    b = tone(2500, amp=0.2) * (torch.arange(RATE) >= RATE // 2)
    refs = torch.stack([a, b])[None]
    stems = nmf_separate(refs.sum(1), num_components=2, iterations=100)
    score, _ = best_one_to_one_sisdr(stems, refs)
    assert score.item() > 15.0


def test_irm_on_well_separated_sources_is_near_perfect():
    # a low tone and a high-passed noise burst: almost disjoint in time-frequency
    low = tone(250, amp=0.3)
    noise = noise_burst(1.0, 0.3, 0.7, 2)
    spec = stft(noise)
    spec[:40] = 0                                                 # nothing below 1.6 kHz
    high = istft(spec, RATE)
    refs = torch.stack([low, high])[None]
    mix = refs.sum(1)
    stems = ideal_ratio_mask(mix, refs)
    assert (stems.sum(1) - mix).abs().max() < 1e-5
    score, assign = best_one_to_one_sisdr(stems, refs)
    assert score.item() > 40.0
    assert torch.equal(assign[0], torch.eye(2))                   # stem j is reference j
    grouped, _ = best_grouped_sisdr(stems, refs)
    assert torch.allclose(grouped, score)
