"""Grouping the separator's stems into sources, and counting the sources: behind ``--num-sources``.

The separator gives M stems (6 for the built-in model) and a sound usually lands on several of them.
``--num-sources K`` merges them into K outputs, ``--num-sources auto`` estimates how many sources
there are and merges to that. Everything here works on a stream: :class:`StemStatistics` takes the
stitched stems window by window (as ``separate_file`` streams them to disk) and keeps compact
statistics; :func:`plan_grouping` decides from them; :class:`GroupRenderer` then turns the raw
stems, read back block by block, into the merged outputs.

How (the parts, in order):

1. **Clean stems.** The separator's masks are independent sigmoids and its mixture-consistency
   step adds (mixture - sum of stems) / M to every stem, so where the masks sum to more than one
   every stem carries a *negative* copy of the mixture. In each time-frequency bin the stem's signed
   share of the mixture is m_i = Re(S_i X*) / |X|^2 (they sum to one); the clean share is
   c_i = max(m_i, 0) / sum_j max(m_j, 0) (also summing to one). Statistics and merged outputs use
   c_i X. (Measured on real-condition mixtures: features of the raw stems carry next to no
   information about which stems share a source; those of the clean stems do.)
2. **Statistics**, accumulated while streaming: for every stem, its clean power in 32 mel bands per
   50 ms frame, and the M x M matrix of clean cross-power sum_tf c_i c_j |X|^2.
3. **Pair scores.** For every pair of stems ten features (co-activation of their time-frequency
   energy, cross-stem coherence, spectral similarity, correlation of their envelopes, of their
   onsets, of their log spectrograms and of each band's envelope, the overlap of their active
   frames, and their energy shares) and the two stems' band power go through a small learned
   model, :class:`PairNet` (a logistic term of the features plus a 1-D CNN over the band power
   of the pair, ``weights/default/grouping_net.safetensors``, trained by
   ``benchmarks/fit_grouping_net.py``), that gives the log-odds that the two stems carry the same
   source. Where that file is absent, the logistic model of the features alone decides
   (:data:`PAIR_MODEL`, ``benchmarks/fit_grouping.py``). Both are fitted on mixtures of the
   corpus's training split only; a pair counts as the same source when the two stems go to the
   same source in the best grouping of the clean stems, by SI-SDR.
4. **Partition.** The partition of the (audible) stems with the largest sum of within-group
   log-odds: with exactly K groups for ``--num-sources K``; over any number of groups for ``auto``
   (a pair goes together when its odds are better than even: that is the count estimate). Exhaustive
   for M <= 8 (4,140 partitions of 8), greedy merging above.
5. **Soft memberships.** Each stem then goes to the groups in proportion to exp(mean log-odds to
   the group's other stems) (a stem that clearly belongs to one group goes there; an ambiguous one
   is shared), so a wrong call costs less. The weights of a stem sum to one, so the outputs still
   sum to the mixture.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

METHOD = "clean-stem pair model v2"   # v2: best-grouping labels, temperature 0.5 (2026-12-03)
NET_METHOD = "clean-stem pair network v4"   # the learned pair model (PairNet) with the same partition; v4 (2026-12-04): 8100 training mixtures, 900 of them with sources taking turns
BANDS = 32                # mel bands of the statistics
POOL = 4                  # STFT hops per statistics frame (4 x 12.5 ms = 50 ms at the default STFT)
MAX_FRAMES = 32768        # above this the frames are pooled in pairs (bounded memory on long files)
AUDIBLE_SHARE = 1e-3      # a stem with less than 0.1 % (-30 dB) of the clean energy is silent
TEMPERATURE = 0.5         # of the soft memberships (log-odds units; 0.5 chosen by benchmarks/fit_grouping.py CV)
NET_TEMPERATURE = 0.5     # the same for the pair network's log-odds
EXHAUSTIVE_MAX = 8        # partitions searched exhaustively up to this many stems

FEATURES = ("tf", "xcoh", "spec", "env", "logtf", "bandcomod", "lminsh", "lmaxsh", "onset", "span")

# Logistic model of "same source" from the standardised FEATURES: written by
# benchmarks/fit_grouping.py (see there for the data: real-condition mixtures of the corpus's
# *training* split, never the held-out split).
PAIR_MODEL = {  # fitted by benchmarks/fit_grouping.py --seed 300 --mixtures 250 --labels optimal (training split)
    "mean": [0.482542, 0.298976, 0.688512, 0.694926, 0.486025, 0.501853, -1.72931, -0.757355, 0.603822, 0.644142],
    "scale": [0.298741, 0.291007, 0.241672, 0.390544, 0.43836, 0.41653, 0.884966, 0.497317, 0.333911, 0.289403],
    "coef": [-0.685466, 0.920657, 0.228153, 0.18004, 0.312762, -0.404608, -0.410816, 0.144489, 0.0953008, 0.37579],
    "intercept": -0.897834,
}


# -- the STFT used here: sqrt-Hann, hop n_fft / 2 (perfect reconstruction) ----------------------------
def _window(n_fft: int) -> np.ndarray:
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft))


def clean_shares(spec: np.ndarray) -> np.ndarray:
    """Clean time-frequency shares c (..., M, F) of stems with spectra ``spec`` (..., M, F): the
    non-negative part of each stem's signed share of the mixture, renormalised to sum to one over
    the stems (an equal split where no stem has a positive share)."""
    mix = spec.sum(-2, keepdims=True)
    power = mix.real ** 2 + mix.imag ** 2
    signed = (spec.real * mix.real + spec.imag * mix.imag) / np.maximum(power, 1e-30)
    pos = np.maximum(signed, 0.0)
    total = pos.sum(-2, keepdims=True)
    m = spec.shape[-2]
    return np.where(total > 1e-12, pos / np.maximum(total, 1e-30), 1.0 / m)


class _Framer:
    """Cuts a (C, n) stream into frames of ``n_fft`` every ``n_fft // 2`` samples, with half a
    frame of zeros in front, so that every sample is covered by exactly two frames."""

    def __init__(self, channels: int, n_fft: int):
        self.n_fft, self.hop = n_fft, n_fft // 2
        self.buf = np.zeros((channels, self.hop), dtype=np.float64)
        self.pushed = 0

    def push(self, block: np.ndarray) -> np.ndarray:
        """(C, n) samples in -> (frames, C, n_fft) complete frames out."""
        self.pushed += block.shape[1]
        return self._cut(block)

    def _cut(self, block: np.ndarray) -> np.ndarray:
        self.buf = np.concatenate([self.buf, block.astype(np.float64, copy=False)], axis=1)
        count = (self.buf.shape[1] - self.n_fft) // self.hop + 1 if self.buf.shape[1] >= self.n_fft else 0
        if count <= 0:
            return np.zeros((0, self.buf.shape[0], self.n_fft))
        idx = np.arange(count)[:, None] * self.hop + np.arange(self.n_fft)[None, :]
        frames = self.buf[:, idx].transpose(1, 0, 2)
        self.buf = self.buf[:, count * self.hop:]
        return frames

    def finish(self) -> np.ndarray:
        """The remaining frames (zero-padded) until every pushed sample is covered by two."""
        padded = self.hop + self.pushed                 # samples so far, leading zeros included
        last = (padded - 1) // self.hop                 # index of the last frame a sample needs
        need = (last + 2) * self.hop                    # where that frame ends
        consumed = padded - self.buf.shape[1]
        return self._cut(np.zeros((self.buf.shape[0], need - consumed - self.buf.shape[1])))


def mel_weights(n_fft: int, rate: int, bands: int = BANDS) -> np.ndarray:
    """(bands, n_fft // 2 + 1) triangular mel filters; every bin's weights sum to one."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    imel = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = imel(np.linspace(0.0, mel(rate / 2.0), bands + 2))
    w = np.zeros((bands, freqs.size))
    for b in range(bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        w[b] = np.clip(np.minimum((freqs - lo) / max(mid - lo, 1e-9), (hi - freqs) / max(hi - mid, 1e-9)), 0, None)
    nearest = np.argmin(np.abs(freqs[None, :] - edges[1:-1, None]), axis=0)
    empty = w.sum(0) == 0
    w[nearest[empty], np.where(empty)[0]] = 1.0
    return w / w.sum(0, keepdims=True)


# -- 1-2. statistics while streaming ---------------------------------------------------------------
class StemStatistics:
    """Accumulates, from stitched (M, n) stem blocks at the model rate, each stem's clean power in
    :data:`BANDS` mel bands per frame of :data:`POOL` STFT hops, and the clean cross-power matrix.
    Memory is bounded: past :data:`MAX_FRAMES` frames, frames are pooled in pairs."""

    def __init__(self, stems: int, rate: int, n_fft: int = 400):
        self.m, self.rate, self.n_fft = stems, rate, n_fft
        self._framer = _Framer(stems, n_fft)
        self._win = _window(n_fft)
        self._mel = mel_weights(n_fft, rate)
        self.cross = np.zeros((stems, stems))
        self._frames: list[np.ndarray] = []       # (frames, M, BANDS) float32
        self._pending = np.zeros((0, stems, BANDS))  # hops not yet pooled
        self.pool = POOL
        self._count = 0

    def add(self, stems: np.ndarray) -> None:
        self._consume(self._framer.push(np.asarray(stems)))

    def finish(self) -> "StemStatistics":
        self._consume(self._framer.finish())
        if self._pending.shape[0]:
            self._append(self._pending.sum(0, keepdims=True))
            self._pending = self._pending[:0]
        return self

    def _consume(self, frames: np.ndarray) -> None:
        if not frames.shape[0]:
            return
        spec = np.fft.rfft(frames * self._win, axis=-1)          # (T, M, F)
        c = clean_shares(spec)
        mix = spec.sum(1)
        power = mix.real ** 2 + mix.imag ** 2                      # (T, F)
        cp = c * power[:, None, :]                                 # clean stem power (T, M, F)
        m = self.m
        self.cross += c.transpose(1, 0, 2).reshape(m, -1) @ cp.transpose(1, 0, 2).reshape(m, -1).T
        band = cp @ self._mel.T                                    # (T, M, B)
        data = np.concatenate([self._pending, band])
        full = data.shape[0] // self.pool * self.pool
        if full:
            self._append(data[:full].reshape(-1, self.pool, self.m, BANDS).sum(1))
        self._pending = data[full:]

    def _append(self, frames: np.ndarray) -> None:
        self._frames.append(frames.astype(np.float32))
        self._count += frames.shape[0]
        if self._count > MAX_FRAMES:   # pool pairs of frames: half the time resolution
            allf = np.concatenate(self._frames)
            even = allf.shape[0] // 2 * 2
            pooled = allf[:even].reshape(-1, 2, self.m, BANDS).sum(1)
            self._frames = [pooled] + ([allf[even:]] if even < allf.shape[0] else [])
            self._count = sum(f.shape[0] for f in self._frames)
            self.pool *= 2

    @property
    def band_power(self) -> np.ndarray:
        """(frames, M, BANDS) clean power per frame and band."""
        return np.concatenate(self._frames) if self._frames else np.zeros((0, self.m, BANDS), np.float32)

    @property
    def shares(self) -> np.ndarray:
        """Each stem's share of the clean energy (sums to one; equal shares for silence)."""
        e = np.clip(np.diag(self.cross), 0, None)
        return e / e.sum() if e.sum() > 0 else np.full(self.m, 1.0 / self.m)


def statistics_of(stems: np.ndarray, rate: int, n_fft: int = 400) -> StemStatistics:
    """The statistics of one (M, T) array of stems (as if streamed in one block)."""
    stats = StemStatistics(stems.shape[0], rate, n_fft)
    stats.add(stems)
    return stats.finish()


# -- 3. pair features and scores -------------------------------------------------------------------
def _corr_rows(x: np.ndarray) -> np.ndarray:
    """Correlation matrix of the rows of x (K, N); zero where N is 0 (nothing to correlate)."""
    if x.shape[1] == 0:
        return np.zeros((x.shape[0], x.shape[0]))
    x = x - x.mean(1, keepdims=True)
    x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-20)
    return x @ x.T


def pair_features(stats: StemStatistics) -> dict[str, np.ndarray]:
    """Name -> (M, M) symmetric matrix of each pair feature (see the module docstring)."""
    e = stats.band_power.astype(np.float64).transpose(1, 2, 0)       # (M, B, T)
    m = stats.m
    if e.shape[-1] == 0:
        e = np.zeros((m, BANDS, 2))
    floor = 1e-8 * max(float(e.sum(0).mean()), 1e-30)
    env = np.log(e.sum(1) + floor * BANDS)                            # (M, T)
    logtf = np.log(e + floor).reshape(m, -1)
    spec = e.sum(2)
    spec = spec / np.maximum(spec.sum(1, keepdims=True), 1e-30)
    tfd = e.reshape(m, -1)
    tfd = tfd / np.maximum(tfd.sum(1, keepdims=True), 1e-30)
    logb = np.log(e + floor)                                          # (M, B, T)
    bandc = np.mean([_corr_rows(logb[:, b]) for b in range(BANDS)], axis=0)
    diag = np.sqrt(np.clip(np.diag(stats.cross), 1e-30, None))
    sh = stats.shares
    lo, hi = np.minimum.outer(sh, sh), np.maximum.outer(sh, sh)
    onset = np.maximum(np.diff(env, axis=1), 0.0)
    act = (env > env.max(1, keepdims=True) - np.log(100.0)).astype(float)
    inter = act @ act.T
    union = act.sum(1)[:, None] + act.sum(1)[None, :] - inter
    return {"onset": _corr_rows(onset), "span": inter / np.maximum(union, 1.0),
            "tf": np.sqrt(tfd) @ np.sqrt(tfd).T, "xcoh": stats.cross / np.outer(diag, diag),
            "spec": np.sqrt(spec) @ np.sqrt(spec).T, "env": _corr_rows(env), "logtf": _corr_rows(logtf),
            "bandcomod": bandc, "lminsh": np.log10(lo + 1e-4), "lmaxsh": np.log10(hi + 1e-4)}


def feature_rows(feats: dict[str, np.ndarray]) -> np.ndarray:
    """(pairs, len(FEATURES)) for the pairs i < j, in np.triu_indices order."""
    m = next(iter(feats.values())).shape[0]
    iu = np.triu_indices(m, 1)
    return np.stack([feats[k][iu] for k in FEATURES], axis=1)


def pair_logits(stats: StemStatistics, model: dict | None = None) -> np.ndarray:
    """(M, M) log-odds that stems i and j carry the same source (0 on the diagonal)."""
    model = model or PAIR_MODEL
    rows = feature_rows(pair_features(stats))
    z = (rows - np.asarray(model["mean"])) / np.asarray(model["scale"])
    logit = z @ np.asarray(model["coef"]) + float(model["intercept"])
    out = np.zeros((stats.m, stats.m))
    out[np.triu_indices(stats.m, 1)] = logit
    return out + out.T


# -- 3b. the learned pair model (used where its weights are present) ------------------------------
NET_FILE = "grouping_net.safetensors"   # beside the default separator's weights (macs_cli/weights/default)
NET_CHANNELS = 4                         # per pair: max / min of the two log shares, log share of the sum, log level
NET_CHUNK = 2048                         # statistics frames per chunk at run time (bounded memory on long files)
NET_HALO = 8                             # frames of context each side of a chunk: the CNN's receptive field


def pair_inputs(band_power: np.ndarray, floor: float | None = None, level_mean: float | None = None) -> np.ndarray:
    """(frames, M, BANDS) clean band power -> (pairs, NET_CHANNELS, BANDS, frames) float32 for the
    pairs i < j in np.triu_indices order. Channels (log units / 5): the larger and the smaller of the
    two stems' log shares of the total power, the log share of their sum, and the total's log level
    relative to its mean. Symmetric in i and j by construction. ``floor`` and ``level_mean`` (the
    whole input's, from :func:`input_levels`) let a long input be converted a chunk at a time."""
    e = np.asarray(band_power, dtype=np.float32)
    t, m, b = e.shape
    if floor is None or level_mean is None:
        floor, level_mean = input_levels(e)
    total = e.sum(1)                                                   # (T, B)
    denom = np.log(total + floor)                                       # (T, B)
    share = np.log(e + floor) - denom[:, None, :]                       # (T, M, B)
    iu = np.triu_indices(m, 1)
    a, c = share[:, iu[0]], share[:, iu[1]]                             # (T, P, B)
    both = np.log(e[:, iu[0]] + e[:, iu[1]] + floor) - denom[:, None, :]
    level = np.broadcast_to((denom - level_mean)[:, None, :], a.shape)
    x = np.stack([np.maximum(a, c), np.minimum(a, c), both, level], axis=1) / 5.0   # (T, C, P, B)
    return np.ascontiguousarray(x.transpose(2, 1, 3, 0), dtype=np.float32)          # (P, C, B, T)


def input_levels(band_power: np.ndarray) -> tuple[float, float]:
    """The power floor (1e-6 of the mean total power) and the mean log level of the whole input."""
    total = np.asarray(band_power, dtype=np.float64).sum(1)
    floor = 1e-6 * max(float(total.mean()) if total.size else 0.0, 1e-30)
    return floor, float(np.log(total + floor).mean()) if total.size else 0.0


class PairNet(torch.nn.Module):
    """Log-odds that two stems carry the same source, from their clean band power (a 1-D CNN over
    time, bands as channels, mean- and max-pooled) and the ten hand-made pair features
    (standardised with the training set's mean and scale, kept in the weights): a logistic term of
    the features (``skip``, started from the logistic fit) plus what the CNN and an MLP add."""

    def __init__(self, hidden: int = 64, bands: int = BANDS, features: int = len(FEATURES)):
        super().__init__()
        self.hidden, self.bands, self.features = hidden, bands, features
        c = NET_CHANNELS * bands
        self.conv = torch.nn.Sequential(
            torch.nn.Conv1d(c, hidden, 5, padding=2), torch.nn.GELU(),
            torch.nn.Conv1d(hidden, hidden, 3, padding=2, dilation=2), torch.nn.GELU(),
            torch.nn.Conv1d(hidden, hidden, 3, padding=4, dilation=4), torch.nn.GELU())
        self.head = torch.nn.Sequential(torch.nn.Linear(2 * hidden + features, 64), torch.nn.GELU(),
                                        torch.nn.Linear(64, 1))
        self.skip = torch.nn.Linear(features, 1)   # a logistic model of the features; the rest learns the residual
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_scale", torch.ones(features))

    def set_feature_norm(self, mean, scale) -> None:
        self.feature_mean.copy_(torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.feature_scale.copy_(torch.as_tensor(np.asarray(scale), dtype=torch.float32))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(P, C, B, T) -> (P, 2 * hidden): mean and max over time of the convolution's output
        (in one piece: for training; :func:`net_logits` chunks long inputs)."""
        h = self.conv(x.flatten(1, 2))
        return torch.cat([h.mean(-1), h.amax(-1)], dim=-1)

    def head_logits(self, pooled: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """(P, 2 * hidden) pooled CNN output and (P, features) raw features -> (P,) log-odds."""
        z = (feats - self.feature_mean) / self.feature_scale
        return (self.head(torch.cat([pooled, z], dim=-1)) + self.skip(z)).squeeze(-1)

    def forward(self, x: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """x (P, C, B, T), feats (P, features) -> (P,) log-odds."""
        return self.head_logits(self.pooled(x), feats)

    def save(self, path) -> None:
        from safetensors.torch import save_file
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(path), metadata={"kind": "macs-grouping-net", "hidden": str(self.hidden),
                                                "bands": str(self.bands), "features": ",".join(FEATURES)})

    @staticmethod
    def tensor_shapes(hidden: int, bands: int = BANDS, features: int = len(FEATURES)) -> dict[str, tuple]:
        """The name and shape of every tensor of a PairNet of this size (what :meth:`load` expects)."""
        h, c, f = hidden, NET_CHANNELS * bands, features
        return {"conv.0.weight": (h, c, 5), "conv.0.bias": (h,), "conv.2.weight": (h, h, 3), "conv.2.bias": (h,),
                "conv.4.weight": (h, h, 3), "conv.4.bias": (h,), "head.0.weight": (64, 2 * h + f),
                "head.0.bias": (64,), "head.2.weight": (1, 64), "head.2.bias": (1,), "skip.weight": (1, f),
                "skip.bias": (1,), "feature_mean": (f,), "feature_scale": (f,)}

    @classmethod
    def load(cls, path) -> "PairNet":
        """Weights written by :meth:`save`. The metadata (kind, feature list, bands, size) and every
        tensor's name and shape are checked before any tensor is read or anything is built; then
        the tensors must be finite floats and the feature scales positive. Any failure is one
        ModelError line."""
        from safetensors import safe_open

        from ..errors import ModelError
        bad = f"{path}: not a grouping model for this version of macs"
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                try:
                    hidden = int(meta.get("hidden", ""))
                except ValueError:
                    hidden = -1
                if (meta.get("kind") != "macs-grouping-net" or meta.get("features") != ",".join(FEATURES)
                        or meta.get("bands") != str(BANDS) or not 1 <= hidden <= 1024):
                    raise ModelError(bad)
                want = cls.tensor_shapes(hidden)
                if {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()} != want:
                    raise ModelError(f"{path}: the grouping model's tensors do not match its architecture")
                tensors = {k: f.get_tensor(k) for k in want}
        except ModelError:
            raise
        except Exception as exc:
            why = (str(exc).strip() or type(exc).__name__).splitlines()[0][:120]
            raise ModelError(f"{path}: cannot read the grouping model ({why})") from None
        if not all(t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in tensors.values()) \
                or not bool((tensors["feature_scale"] > 0).all()):
            raise ModelError(f"{path}: the grouping model holds non-finite, non-float32 or invalid values")
        net = cls(hidden=hidden)
        net.load_state_dict(tensors)
        return net.eval()


@lru_cache(maxsize=1)
def default_net() -> "PairNet | None":
    """The shipped pair network, or None where its weights file is absent (then the logistic
    :data:`PAIR_MODEL` decides alone)."""
    from pathlib import Path
    from ..errors import ModelError
    path = Path(__file__).resolve().parents[1] / "weights" / "default" / NET_FILE
    if not path.is_file():
        return None
    try:
        return PairNet.load(path)
    except ModelError as exc:
        raise ModelError(f"{exc} (reinstall macs to restore it, or remove it to group with the "
                         "logistic model)") from None


def net_logits(stats: StemStatistics, net: PairNet) -> np.ndarray:
    """(M, M) log-odds from the pair network (0 on the diagonal). Long inputs go through in chunks
    of NET_CHUNK frames with NET_HALO frames of context on each side (the CNN's receptive field),
    so the result does not depend on the chunking and memory stays bounded."""
    m = stats.m
    feats = torch.from_numpy(feature_rows(pair_features(stats)).astype(np.float32))
    bp = stats.band_power
    if bp.shape[0] == 0:
        bp = np.zeros((1, m, BANDS), np.float32)
    floor, level_mean = input_levels(bp)
    n = bp.shape[0]
    total, peak = None, None
    with torch.inference_mode():
        for start in range(0, n, NET_CHUNK):
            lo, hi = max(0, start - NET_HALO), min(n, start + NET_CHUNK + NET_HALO)
            x = torch.from_numpy(pair_inputs(bp[lo:hi], floor, level_mean)).flatten(1, 2)
            h = net.conv(x)[..., start - lo: start - lo + min(NET_CHUNK, n - start)]
            s, mx = h.sum(-1), h.amax(-1)
            total = s if total is None else total + s
            peak = mx if peak is None else torch.maximum(peak, mx)
        logit = net.head_logits(torch.cat([total / n, peak], dim=-1), feats).double().numpy()
    out = np.zeros((m, m))
    out[np.triu_indices(m, 1)] = logit
    return out + out.T


# -- 4. partitions -----------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def set_partitions(n: int) -> np.ndarray:
    """Every partition of n items as restricted growth strings, (Bell(n), n)."""
    out: list[tuple[int, ...]] = []

    def rec(prefix: list[int], top: int) -> None:
        if len(prefix) == n:
            out.append(tuple(prefix))
            return
        for g in range(top + 2):
            rec(prefix + [g], max(top, g))

    if n == 0:
        return np.zeros((1, 0), dtype=np.int64)
    rec([0], 0)
    return np.array(out, dtype=np.int64)


def best_partition(logits: np.ndarray, k: int | None) -> np.ndarray:
    """Labels (n,) of the partition maximising the sum of within-group log-odds: exactly ``k``
    groups, or any number if ``k`` is None."""
    n = logits.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if k is not None and k >= n:
        return np.arange(n)
    if n <= EXHAUSTIVE_MAX:
        parts = set_partitions(n)
        iu = np.triu_indices(n, 1)
        same = parts[:, iu[0]] == parts[:, iu[1]]
        score = same @ logits[iu]
        if k is not None:
            score = np.where(parts.max(1) + 1 == k, score, -np.inf)
        return parts[int(np.argmax(score))].copy()
    # greedy: merge the two groups with the largest total between-group log-odds
    groups = [[i] for i in range(n)]
    while len(groups) > (k or 1):
        best, pair = -np.inf, None
        for a, b in itertools.combinations(range(len(groups)), 2):
            gain = logits[np.ix_(groups[a], groups[b])].sum()
            if gain > best:
                best, pair = gain, (a, b)
        if k is None and best <= 0:
            break
        a, b = pair
        groups[a] = groups[a] + groups[b]
        del groups[b]
    labels = np.zeros(n, dtype=np.int64)
    for g, members in enumerate(groups):
        labels[members] = g
    return labels


def soft_memberships(logits: np.ndarray, labels: np.ndarray, k: int,
                     temperature: float | None = None) -> np.ndarray:
    """(M, k) weights: stem i's affinity to group g is its mean log-odds with the group's other
    stems (0 for its own group when it is alone there); weights = softmax(affinity / temperature)
    over the groups, so every stem's weights sum to one."""
    temperature = TEMPERATURE if temperature is None else temperature
    m = logits.shape[0]
    aff = np.full((m, k), -10.0)
    for i in range(m):
        for g in range(k):
            members = [j for j in range(m) if labels[j] == g and j != i]
            if members:
                aff[i, g] = logits[i, members].mean()
            elif labels[i] == g:
                aff[i, g] = 0.0
    if temperature <= 0:
        return np.eye(k)[labels]
    z = aff / temperature
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


@dataclass
class GroupingPlan:
    """How M stems become the outputs: ``weights`` (M, K), every row summing to one."""

    weights: np.ndarray
    requested: int | str | None       # K, "auto" or None (no merging)
    estimated: int                    # the number of outputs
    method: str = METHOD
    audible: list[int] = field(default_factory=list)

    @property
    def identity(self) -> bool:
        w = self.weights
        return w.shape[0] == w.shape[1] and np.array_equal(w, np.eye(w.shape[0]))

    def hard_groups(self) -> list[list[int]]:
        """Per output, the stems whose largest weight is on it."""
        top = self.weights.argmax(1)
        return [[int(i) for i in np.where(top == g)[0]] for g in range(self.weights.shape[1])]

    def to_dict(self) -> dict:
        return {"method": self.method if self.requested is not None else "none",
                "requested": self.requested, "estimated_sources": int(self.estimated),
                "audible_stems": [int(i) for i in self.audible],
                "weights": np.round(self.weights, 4).tolist()}


def plan_grouping(stats: StemStatistics, num_sources: int | str | None,
                  model: dict | None = None, net: "PairNet | bool | None" = None) -> GroupingPlan:
    """Decide the outputs: ``None`` keeps every stem, an int K merges to K, ``"auto"`` estimates
    the number of sources (silent stems never count as one) and merges to it.

    The pair log-odds come from ``net`` when it is a :class:`PairNet`; with ``net=None`` from the
    shipped network (:func:`default_net`) unless a logistic ``model`` is given, and from the
    logistic model (``model`` or :data:`PAIR_MODEL`) when ``net`` is False or no network is shipped."""
    m = stats.m
    if num_sources is None:
        return GroupingPlan(np.eye(m), None, m, audible=list(range(m)))
    if num_sources != "auto" and int(num_sources) >= m:
        return GroupingPlan(np.eye(m), int(num_sources), m, audible=list(range(m)))
    shares = stats.shares
    silent = float(np.clip(np.diag(stats.cross), 0, None).sum()) <= 1e-20
    audible = [] if silent else [i for i in range(m) if shares[i] >= AUDIBLE_SHARE]
    if net is None and model is None:
        net = default_net()
    elif not (net is None or net is False or isinstance(net, PairNet)):
        raise TypeError("net must be a PairNet, None or False")
    logits = net_logits(stats, net) if isinstance(net, PairNet) else pair_logits(stats, model)
    if num_sources == "auto":
        if not audible:                      # a silent input: one (silent) output
            return GroupingPlan(np.ones((m, 1)), "auto", 1, audible=[])
        sub = best_partition(logits[np.ix_(audible, audible)], None)
        k = int(sub.max()) + 1
    else:
        k = int(num_sources)
        if len(audible) < k:                 # too few audible stems: group them all
            audible = list(range(m))
        sub = best_partition(logits[np.ix_(audible, audible)], k)
    labels = np.full(m, -1)
    labels[audible] = sub
    weights = soft_memberships(logits, _attach(labels, logits, k), k,
                               NET_TEMPERATURE if isinstance(net, PairNet) else TEMPERATURE)
    order = np.argsort(-(weights * shares[:, None]).sum(0), kind="stable")   # loudest output first
    return GroupingPlan(weights[:, order], num_sources, k, audible=audible,
                        method=NET_METHOD if isinstance(net, PairNet) else METHOD)


def _attach(labels: np.ndarray, logits: np.ndarray, k: int) -> np.ndarray:
    """Give each unlabelled (silent) stem the group it has the largest mean log-odds with."""
    labels = labels.copy()
    known = labels >= 0
    for i in np.where(~known)[0]:
        scores = [logits[i, known & (labels == g)].mean() if (known & (labels == g)).any() else -np.inf
                  for g in range(k)]
        labels[i] = int(np.argmax(scores))
    return labels


# -- merged outputs ------------------------------------------------------------------------------------
class GroupRenderer:
    """Raw (M, n) stem blocks in (model rate), (K, n) merged outputs out: output g is the inverse
    STFT of sum_i w_ig c_i X (clean shares c, mixture X). The outputs sum to the sum of the stems
    (the mixture) up to float rounding. Output lags input by up to one frame; :meth:`finish` flushes."""

    def __init__(self, weights: np.ndarray, n_fft: int = 400):
        self.w = np.asarray(weights, dtype=np.float64)          # (M, K)
        self.n_fft, self.hop = n_fft, n_fft // 2
        self._framer = _Framer(self.w.shape[0], n_fft)
        self._win = _window(n_fft)
        self._carry = np.zeros((self.w.shape[1], n_fft // 2))    # second half of the last frame
        self._skip = self.hop                                     # the framer's leading zeros
        self._emitted = 0

    def _render(self, frames: np.ndarray) -> np.ndarray:
        if not frames.shape[0]:
            return np.zeros((self.w.shape[1], 0))
        spec = np.fft.rfft(frames * self._win, axis=-1)            # (T, M, F)
        c = clean_shares(spec)
        mix = spec.sum(1)                                          # (T, F)
        out_spec = np.einsum("tmf,mk->tkf", c, self.w) * mix[:, None, :]
        y = np.fft.irfft(out_spec, n=self.n_fft, axis=-1) * self._win   # (T, K, n_fft)
        h = self.hop
        # frames overlap by half: hop i = first half of frame i + second half of frame i - 1
        second = np.concatenate([self._carry[None], y[:-1, :, h:]])   # (T, K, hop)
        seg = y[:, :, :h] + second
        self._carry = y[-1, :, h:].copy()
        return seg.transpose(1, 0, 2).reshape(y.shape[1], -1)

    def _emit(self, block: np.ndarray, limit: int | None = None) -> np.ndarray:
        if self._skip:
            cut = min(self._skip, block.shape[1])
            block, self._skip = block[:, cut:], self._skip - cut
        if limit is not None:
            block = block[:, : max(0, limit - self._emitted)]
        self._emitted += block.shape[1]
        return block.astype(np.float32)

    def push(self, stems: np.ndarray) -> np.ndarray:
        return self._emit(self._render(self._framer.push(np.asarray(stems))))

    def finish(self) -> np.ndarray:
        total = self._framer.pushed
        return self._emit(self._render(self._framer.finish()), limit=total)


def clean_stems(stems: np.ndarray, n_fft: int = 400) -> np.ndarray:
    """(M, T) stems -> the clean stems (M, T) ``macs separate --stem-mode clean`` writes: each one
    re-rendered from its clean shares of the mixture (GroupRenderer with identity weights)."""
    r = GroupRenderer(np.eye(stems.shape[0]), n_fft)
    return np.concatenate([r.push(stems), r.finish()], axis=1)


def render(stems: np.ndarray, plan: GroupingPlan, n_fft: int = 400) -> np.ndarray:
    """The merged outputs (K, T) of one (M, T) array of stems (as if streamed in one block)."""
    if plan.identity:
        return np.asarray(stems, dtype=np.float32)
    r = GroupRenderer(plan.weights, n_fft)
    return np.concatenate([r.push(stems), r.finish()], axis=1)


def parse_num_sources(value: str | int | None) -> int | str | None:
    """``--num-sources`` text -> a positive int, ``"auto"`` or None; a ValueError otherwise."""
    if value is None or isinstance(value, int):
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be a positive integer or 'auto' (got {value})")
        return value
    v = str(value).strip().lower()
    if v == "auto":
        return "auto"
    try:
        k = int(v)
    except ValueError:
        raise ValueError(f"must be a positive integer or 'auto' (got {value!r})") from None
    if k < 1 or not math.isfinite(k):
        raise ValueError(f"must be a positive integer or 'auto' (got {value!r})")
    return k


__all__ = ["METHOD", "NET_METHOD", "PairNet", "default_net", "net_logits", "pair_inputs", "clean_stems", "StemStatistics", "statistics_of", "pair_features", "pair_logits", "best_partition",
           "soft_memberships", "plan_grouping", "GroupingPlan", "GroupRenderer", "render", "clean_shares",
           "set_partitions", "parse_num_sources", "PAIR_MODEL", "FEATURES"]
