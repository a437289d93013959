"""``macs train-gen``: train the MACS adapter on paired audio/images from a YAML recipe."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import (DEVICE_HELP, JSON_HELP, Emitter, console, one_line_errors, resolve_device, run_config,
                     with_shortcuts)
from .generate import gpu_memory_errors


def train_gen(
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (checkpoint, adapter, logs, samples)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML recipe (see recipes/landscape)."),
    data: Optional[str] = typer.Option(None, "--data", help="Paired data: a CSV manifest (audio, image[, labels, "
                                       "embedding]) or a Landscape / LLP-multi folder "
                                       "(<root>/<split>/audio, <root>/<split>/image). Overrides data.train."),
    overrides: List[str] = typer.Option([], "--set", help="Override a config value, e.g. --set optim.lr=5e-5 "
                                        "(repeatable)."),
    sd_model: Optional[str] = typer.Option(None, "--sd-model", help="Stable Diffusion v1.x hub id or pipeline "
                                           "folder. Overrides model.sd_model."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Overrides train.steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Overrides optim.batch_size."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    allow_download: bool = typer.Option(False, "--allow-download", help="Fetch missing Stable Diffusion / CLAP "
                                        "weights from the Hugging Face hub into its cache."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the output folder."),
    force: bool = typer.Option(False, "--force", help="Start afresh, deleting the run in the output folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Train MACS's audio adapter (MLP, positional encoding, audio key/value projections) on a frozen SD v1.x."""
    from ..training.gen_trainer import GenTrainer, load_gen_config
    from ..training.run import hold_run_folder

    with one_line_errors(), hold_run_folder(output):   # one run at a time in a run folder
        download = True if allow_download else None
        sets = with_shortcuts(overrides, {"data.train": data, "model.sd_model": sd_model, "train.steps": steps,
                                          "optim.batch_size": batch_size, "model.allow_download": download,
                                          "data.clap_download": download})
        GenTrainer.check_run_folder(output, resume, force)    # before anything loads
        cfg = load_gen_config(run_config(output, config, resume), sets)
        dev = resolve_device(device)
        trainer = GenTrainer(cfg, output, device=dev, console=console, progress=not quiet)
        with gpu_memory_errors("try a smaller optim.batch_size with a larger optim.grad_accum, or "
                               "--set train.gradient_checkpointing=true"):
            result = trainer.run(resume=resume, fresh=force)
    if not trainer.accel.is_main_process:
        return
    Emitter(as_json)(output / "adapter.safetensors", run=str(output), step=result["step"],
                     **({"validation": result.get("validation")} if result.get("validation") else {}))
    msg = f"trained to step {result['step']}; adapter: {output / 'adapter.safetensors'}"
    if result.get("sample"):
        msg += f"; samples: {result['sample']}"
    console.print(msg, highlight=False)
