"""Fixed-window processing of arbitrarily long streams with overlap-add.

All chunking of the project lives here. A model that only takes windows of ``window`` samples is
applied to a stream of any length: windows start every ``hop = window - overlap`` samples, the last
one zero-padded; consecutive windows are cross-faded over the overlap with weights that sum to one
(so stems that sum to their window's mixture sum to the whole mixture), and the stem order of each
window is aligned to the previous window's on the overlap, so a source stays on the same stem.

Memory stays bounded: only ``batch_size`` windows plus one window of output are held at a time.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
from scipy.optimize import linear_sum_assignment

WindowFn = Callable[[np.ndarray], np.ndarray]  # (B, window) -> (B, M, window)


def align_permutation(previous: np.ndarray, current: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Permutation ``p`` such that ``current[p]`` best matches ``previous`` stem by stem.

    Both are (M, V) stems on the same overlap. The score is the normalised correlation; stems that
    are silent on the overlap carry no information and keep their places where possible.
    """
    m = previous.shape[0]
    e_prev = np.sqrt((previous ** 2).sum(axis=1)) + eps
    e_cur = np.sqrt((current ** 2).sum(axis=1)) + eps
    corr = (previous @ current.T) / (e_prev[:, None] * e_cur[None, :])
    # small bonus for keeping the same index, so ties (silence) resolve to the identity
    cost = -(corr + 1e-3 * np.eye(m))
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(m, dtype=np.int64)
    perm[rows] = cols
    return perm


def crossfade(overlap: int) -> np.ndarray:
    """Fade-in weights over ``overlap`` samples (raised cosine); the fade-out is ``1 - fade_in``."""
    if overlap <= 0:
        return np.zeros(0, dtype=np.float32)
    t = (np.arange(overlap, dtype=np.float64) + 0.5) / overlap
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


class OverlapAdd:
    """Feed mono samples in, get stitched (M, n) stems out, in order, with bounded memory."""

    def __init__(self, window_fn: WindowFn, window: int, overlap: int, batch_size: int = 1,
                 align: bool = True):
        if not 0 <= overlap < window:
            raise ValueError("overlap must be in [0, window)")
        self.window_fn, self.window, self.overlap = window_fn, window, overlap
        self.hop = window - overlap
        self.batch_size = max(1, int(batch_size))
        self.align = align
        self.fade_in = crossfade(overlap)
        self._buffer = np.zeros(0, dtype=np.float32)  # input not yet consumed by a window start
        self._queue: list[np.ndarray] = []            # full windows waiting for the model
        self._pending: np.ndarray | None = None       # (M, window) output not yet final
        self._total_in = 0
        self._total_out = 0
        self.permutations: list[np.ndarray] = []      # per window, for inspection and tests

    # -- input side -------------------------------------------------------------------------
    def push(self, samples: np.ndarray) -> Iterator[np.ndarray]:
        """Add samples; yields (M, n) stem blocks that are final."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._total_in += samples.size
        self._buffer = np.concatenate([self._buffer, samples])
        while self._buffer.size >= self.window:
            self._queue.append(self._buffer[: self.window].copy())
            self._buffer = self._buffer[self.hop:]
            if len(self._queue) >= self.batch_size:
                yield from self._run_queue()

    def finish(self) -> Iterator[np.ndarray]:
        """Flush: pad the tail into a last window, and yield the remaining output."""
        # the tail still needs a window if some input is not covered by a window yet
        covered = self._windows_started() * self.hop + (self.overlap if self._windows_started() else 0)
        if self._total_in > covered or self._windows_started() == 0:
            tail = np.zeros(self.window, dtype=np.float32)
            tail[: self._buffer.size] = self._buffer[: self.window]
            self._queue.append(tail)
        self._buffer = np.zeros(0, dtype=np.float32)
        yield from self._run_queue()
        if self._pending is not None:
            remaining = self._total_in - self._total_out
            if remaining > 0:
                yield self._emit(self._pending[:, :remaining])
            self._pending = None

    # -- internals --------------------------------------------------------------------------
    def _windows_started(self) -> int:
        return len(self.permutations) + len(self._queue)

    def _emit(self, block: np.ndarray) -> np.ndarray:
        self._total_out += block.shape[1]
        return block

    def _run_queue(self) -> Iterator[np.ndarray]:
        if not self._queue:
            return
        batch = np.stack(self._queue)
        self._queue = []
        stems = np.asarray(self.window_fn(batch), dtype=np.float32)  # (B, M, window)
        for current in stems:
            yield from self._stitch(current)

    def _stitch(self, current: np.ndarray) -> Iterator[np.ndarray]:
        m = current.shape[0]
        if self._pending is None:
            self.permutations.append(np.arange(m))
            self._pending = current
            return
        v = self.overlap
        prev_tail = self._pending[:, self.hop:]
        if self.align and v > 0:
            perm = align_permutation(prev_tail, current[:, :v])
            current = current[perm]
        else:
            perm = np.arange(m)
        self.permutations.append(perm)
        final = self._pending[:, : self.hop]
        blended = prev_tail * (1.0 - self.fade_in) + current[:, :v] * self.fade_in
        self._pending = np.concatenate([blended, current[:, v:]], axis=1)
        remaining = self._total_in - self._total_out
        if remaining > 0:
            yield self._emit(final[:, :remaining])


def process_stream(window_fn: WindowFn, blocks: Iterable[np.ndarray], window: int, overlap: int,
                   batch_size: int = 1, align: bool = True) -> Iterator[np.ndarray]:
    """Convenience wrapper: stitched (M, n) stem blocks for an iterable of mono sample blocks."""
    ola = OverlapAdd(window_fn, window, overlap, batch_size=batch_size, align=align)
    for block in blocks:
        yield from ola.push(block)
    yield from ola.finish()
