"""Pictures of a separation: the mixture's and each stem's spectrogram, one row each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fsutil import atomic_path

MAX_FRAMES = 1500


def _spectrogram(x: np.ndarray, rate: int, n_fft: int = 512) -> tuple[np.ndarray, float]:
    """Log-power STFT (dB) with a hop chosen so that at most MAX_FRAMES frames come out."""
    hop = max(n_fft // 4, int(np.ceil(len(x) / MAX_FRAMES)))
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft), axis=1)) ** 2
    return 10 * np.log10(spec.T + 1e-10), hop / rate


def plot_separation(folder: Path, manifest: dict, out_name: str = "spectrograms.png") -> Path:
    """Write ``folder/spectrograms.png`` from the stems listed in ``manifest``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    stems = [(s["file"], sf.read(folder / s["file"], dtype="float32")[0]) for s in manifest["stems"]]
    rate = manifest["sample_rate"]
    mix = np.sum([x for _, x in stems], axis=0) if stems else np.zeros(rate)
    rows = [("mixture (sum of stems)", mix)] + [(f"{f}  ({s['rms_db']:.0f} dB, activity "
                                                 f"{s['activity']:.0%})", x)
                                                for (f, x), s in zip(stems, manifest["stems"])]
    specs = [(_spectrogram(x, rate), title) for title, x in rows]
    top = max(s.max() for (s, _), _ in specs)
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.6 * len(rows)), sharex=True, squeeze=False)
    for ax, ((spec, dt), title) in zip(axes[:, 0], specs):
        ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                  extent=(0, spec.shape[1] * dt, 0, rate / 2000))
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("kHz")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(Path(manifest["source"]).name, fontsize=10)
    fig.tight_layout()
    target = folder / out_name
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return target
