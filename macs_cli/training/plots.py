"""The training runs' plots: ``curves.png`` from a run's ``metrics.csv`` (train-sep: loss and
held-out SI-SDR improvement; train-gen: the noise-prediction loss)."""

from __future__ import annotations

import csv
from pathlib import Path


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


def plot_curves(metrics_csv: Path, out_png: Path) -> None:
    """Training loss and validation SI-SDR improvement against step, as a PNG."""
    plt = pyplot()
    rows = metric_rows(metrics_csv) if plt is not None else []
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(steps, [float(r["loss"]) for r in rows])
    a.set_xlabel("step")
    a.set_ylabel("loss")
    a.set_title("training loss")
    vs = [(int(r["step"]), float(r["val_grouped"]), float(r["val_one_to_one"]))
          for r in rows if r.get("val_grouped")]
    if vs:
        b.plot([s for s, _, _ in vs], [g for _, g, _ in vs], "o-", label="best grouping")
        b.plot([s for s, _, _ in vs], [x for _, _, x in vs], "s-", label="one-to-one")
        b.legend()
    b.set_xlabel("step")
    b.set_ylabel("SI-SDR improvement (dB)")
    b.set_title("held-out validation")
    save_png(fig, out_png)


def plot_loss(metrics_csv: Path, out_png: Path) -> None:
    """The training loss against step, as a PNG."""
    plt = pyplot()
    rows = metric_rows(metrics_csv) if plt is not None else []
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel("noise MSE")
    ax.set_title("train-gen loss")
    save_png(fig, out_png)
