"""Pieces both training loops share: the learning-rate schedule, the mixed-precision choice and
the plumbing of their metric plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch


def lr_factor(step: int, total: int, warmup_frac: float) -> float:
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine decay to 0."""
    warm = int(total * warmup_frac)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def mixed_precision(name: str, device: torch.device, cpu_allowed: bool = True) -> str:
    """accelerate's ``mixed_precision`` for a config value (auto, fp32, bf16, fp16): ``auto`` is
    bf16 (fp16 where bf16 is unsupported) on CUDA and fp32 on the CPU; with ``cpu_allowed=False``
    the CPU always trains in fp32."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"
    if device.type != "cuda" and not cpu_allowed:
        return "no"
    return {"fp32": "no"}.get(name, name)


def metric_rows(metrics_csv: Path) -> list[dict[str, str]]:
    with open(metrics_csv, newline="") as f:
        return list(csv.DictReader(f))


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or None where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_png(fig, out_png: Path) -> None:
    """Write ``fig`` to ``out_png`` atomically and free it."""
    from ..fsutil import atomic_path

    from ..formats import PNG_MARK

    fig.tight_layout()
    with atomic_path(out_png, overwrite=True) as tmp:   # the run's own plot, redrawn as it goes
        fig.savefig(tmp, dpi=100, format="png", metadata={PNG_MARK: "1"})
    import matplotlib.pyplot as plt

    plt.close(fig)
