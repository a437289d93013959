"""``macs train-sep``: train the separator with MixIT from a YAML recipe and overrides."""

from __future__ import annotations

from typing import Optional

import typer

from .training import report, run_training, training_options


@training_options(contents="checkpoints, logs, model", recipes="recipes/", example="optim.lr=3e-4")
def train_sep(
    *, output, config,
    data: Optional[str] = typer.Option(None, "--data", help="Training clips: a folder (labels from "
                                       "sub-folder names), a CSV manifest, an FSD50K root or a "
                                       "corpus .npz. Overrides data.train."),
    overrides, steps, batch_size, device, resume, force, quiet, as_json,
) -> None:
    """Train a separator with unsupervised MixIT (mixtures of mixtures)."""
    from ..training.config import load_config
    from ..training.data import data_kind
    from ..training.trainer import Trainer

    def check_data(cfg: dict) -> None:
        for key in ("train", "heldout"):   # the data exist and have the right form, before anything is written
            if cfg["data"][key] is not None:
                data_kind(cfg["data"][key], cfg["data"]["kind"])

    trainer, result = run_training(Trainer, load_config, output, config, overrides,
                                   {"data.train": data, "train.steps": steps, "optim.batch_size": batch_size},
                                   device, resume, force, quiet, check=check_data)
    val = result.get("validation") or {}
    detail = (f"; held-out SI-SDRi {val['grouped']:.2f} dB (best grouping), "
              f"{val['one_to_one']:.2f} dB (one-to-one)") if val else ""
    report(trainer, result, output, "separator.safetensors", "model", detail, as_json)
