"""``macs train-gen``: train the MACS adapter on paired audio/images from a YAML recipe."""

from __future__ import annotations

from typing import Optional

import typer

from .generate import gpu_memory_errors
from .training import report, run_training, training_options


@training_options(contents="checkpoint, adapter, logs, samples", recipes="recipes/landscape", example="optim.lr=5e-5")
def train_gen(
    *, output, config,
    data: Optional[str] = typer.Option(None, "--data", help="Paired data: a CSV manifest (audio, image[, labels, "
                                       "embedding]) or a Landscape / LLP-multi folder "
                                       "(<root>/<split>/audio, <root>/<split>/image). Overrides data.train."),
    overrides,
    sd_model: Optional[str] = typer.Option(None, "--sd-model", help="Stable Diffusion v1.x hub id or pipeline "
                                           "folder. Overrides model.sd_model."),
    steps, batch_size, device,
    allow_download: bool = typer.Option(False, "--allow-download", help="Fetch missing Stable Diffusion / CLAP "
                                        "weights from the Hugging Face hub into its cache."),
    resume, force, quiet, as_json,
) -> None:
    """Train MACS's audio adapter (MLP, positional encoding, audio key/value projections) on a frozen SD v1.x."""
    from ..training.config import load_gen_config
    from ..training.gen_trainer import GenTrainer

    download = True if allow_download else None
    trainer, result = run_training(
        GenTrainer, load_gen_config, output, config, overrides,
        {"data.train": data, "model.sd_model": sd_model, "train.steps": steps, "optim.batch_size": batch_size,
         "model.allow_download": download, "data.clap_download": download},
        device, resume, force, quiet,
        guard=lambda: gpu_memory_errors("try a smaller optim.batch_size with a larger optim.grad_accum, or "
                                        "--set train.gradient_checkpointing=true"))
    report(trainer, result, output, "adapter.safetensors", "adapter",
           f"; samples: {result['sample']}" if result.get("sample") else "", as_json)
