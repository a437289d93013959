"""``macs train-sep``: train the separator with MixIT from a YAML recipe and overrides."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import (DEVICE_HELP, JSON_HELP, Emitter, console, one_line_errors, resolve_device, run_config,
                     with_shortcuts)


def train_sep(
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (checkpoints, logs, model)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML recipe (see recipes/)."),
    data: Optional[str] = typer.Option(None, "--data", help="Training clips: a folder (labels from "
                                       "sub-folder names), a CSV manifest, an FSD50K root or a "
                                       "corpus .npz. Overrides data.train."),
    overrides: List[str] = typer.Option([], "--set", help="Override a config value, e.g. "
                                        "--set optim.lr=3e-4 (repeatable)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Overrides train.steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Overrides optim.batch_size."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the output folder."),
    force: bool = typer.Option(False, "--force", help="Start afresh, deleting the run in the output folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Train a separator with unsupervised MixIT (mixtures of mixtures)."""
    from ..training.config import load_config
    from ..training.data import data_kind
    from ..training.run import hold_run_folder
    from ..training.trainer import Trainer

    with one_line_errors(), hold_run_folder(output):   # one run at a time in a run folder
        Trainer.check_run_folder(output, resume, force)    # before anything loads
        sets = with_shortcuts(overrides, {"data.train": data, "train.steps": steps, "optim.batch_size": batch_size})
        cfg = load_config(run_config(output, config, resume), sets)
        dev = resolve_device(device)
        for key in ("train", "heldout"):   # the data exist and have the right form, before anything is written
            if cfg["data"][key] is not None:
                data_kind(cfg["data"][key], cfg["data"]["kind"])
        trainer = Trainer(cfg, output, device=dev, console=console, progress=not quiet)
        result = trainer.run(resume=resume, fresh=force)
    if not trainer.accel.is_main_process:
        return
    Emitter(as_json)(output / "separator.safetensors", run=str(output), step=result["step"],
                     **({"validation": result.get("validation")} if result.get("validation") else {}))
    val = result.get("validation") or {}
    msg = f"trained to step {result['step']}; model: {output / 'separator.safetensors'}"
    if val:
        msg += (f"; held-out SI-SDRi {val['grouped']:.2f} dB (best grouping), "
                f"{val['one_to_one']:.2f} dB (one-to-one)")
    console.print(msg, highlight=False)
