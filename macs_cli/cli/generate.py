"""``macs generate``: ranked stem embeddings (or a mixture file) -> image(s) + JSON sidecars."""

from __future__ import annotations

import secrets
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from ..precision import PRECISION_HELP
from .common import (DEVICE_HELP, Emitter, JSON_HELP, console, fail, gpu_memory_errors, inference_device,
                     one_line_errors)

SD_HELP = ("Stable Diffusion v1.x backbone: a hub id (CompVis/stable-diffusion-v1-4, "
           "stable-diffusion-v1-5/stable-diffusion-v1-5), read from the Hugging Face cache, or a local "
           "diffusers pipeline folder. Default: the backbone the adapter was trained on; else v1-4 for "
           "official adapters, v1-5 otherwise.")
ADAPTER_HELP = ("MACS adapter: a .safetensors from `macs train-gen` (or its run folder), an official "
                "<Dataset>_mlp.pt (with <Dataset>_unet.pt beside it), a folder holding such a pair, or "
                "official:<Dataset> (the authors' files in the Hugging Face cache).")
OFFICIAL_SEPARATOR_HINT = ("with an official adapter --separator defaults to official, the separator its adapters "
                           "were trained on; pass --separator default for the built-in one")


def generate(
    embeddings: List[Path] = typer.Option([], "--embeddings", "-e", help="Ranked stem embeddings: an (M, 512) "
                                          ".npy from `macs rank` (or `macs embed`: ranked here), or (N, M, 512) "
                                          "for a batch. Repeatable."),
    audio: List[Path] = typer.Option([], "--audio", "-a", help="Mixture audio file(s): separated, embedded and "
                                     "ranked here (--separator, --clap). Repeatable."),
    interpolate: Optional[Tuple[Path, Path]] = typer.Option(None, "--interpolate", help="Two embedding files A "
                                                            "B: images along the straight line from A to B, plus "
                                                            "contact_sheet.png."),
    frames: int = typer.Option(8, "--frames", help="Images along an --interpolate path (both ends included)."),
    output: Path = typer.Option(..., "-o", "--output", help="OUT.png for one image; else a folder."),
    sd_model: Optional[str] = typer.Option(None, "--sd-model", help=SD_HELP),
    adapter: Optional[str] = typer.Option(None, "--adapter", help=ADAPTER_HELP),
    adapter_mlp: Optional[Path] = typer.Option(None, "--adapter-mlp", help="Official <Dataset>_mlp.pt (with "
                                               "--adapter-unet)."),
    adapter_unet: Optional[Path] = typer.Option(None, "--adapter-unet", help="Official <Dataset>_unet.pt (with "
                                                "--adapter-mlp)."),
    steps: int = typer.Option(20, "--steps", help="DPM-Solver multistep denoising steps."),
    guidance: float = typer.Option(7.5, "--guidance", help="Classifier-free guidance scale (<= 1: off)."),
    prompt: str = typer.Option("", "--prompt", help="Text prompt beside the audio (default: empty, as MACS)."),
    negative_prompt: str = typer.Option("", "--negative-prompt", help="Text of the unconditional branch."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the first image (image k uses seed + k); "
                                       "default: random, recorded in the sidecar."),
    num_images: int = typer.Option(1, "--num-images", "-n", help="Images per embedding set."),
    height: int = typer.Option(512, "--height", help="Image height in pixels (a multiple of 8)."),
    width: int = typer.Option(512, "--width", help="Image width in pixels (a multiple of 8)."),
    audio_scale: float = typer.Option(1.0, "--audio-scale", help="Weight of the audio attention branch "
                                      "(0: text only)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", "-k", help="Use the k most significant stems."),
    attention_maps: bool = typer.Option(False, "--attention-maps", help="Also write <image>_attention.png (per-stem "
                                        "cross-attention heat maps) and <image>_attention.npy."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("auto", "--dtype", help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16."),
    batch_size: int = typer.Option(1, "--batch-size", help="Images per denoising batch."),
    separator: Optional[str] = typer.Option(None, "--separator", help="Separator for --audio (as `macs separate "
                                            "--model`; default: official with an official adapter, the one "
                                            "its adapters were trained on, else the built-in one)."),
    order: Optional[str] = typer.Option(None, "--order", help="Stem order given to the adapter: separator (the "
                                        "separator's own output order) or significance (cosine to the mixture, "
                                        "best first). Default: the order the adapter was trained on (official "
                                        "adapters: separator)."),
    precision: str = typer.Option("auto", "--precision", help="Separator and CLAP for --audio: "
                                  + PRECISION_HELP + " (--dtype sets the diffusion model's.)"),
    clap: Optional[str] = typer.Option(None, "--clap", help="CLAP model for --audio (as `macs embed --clap`)."),
    allow_download: bool = typer.Option(False, "--allow-download", help="Fetch missing weights from the Hugging "
                                        "Face hub into its cache."),
    force: bool = typer.Option(False, "--force", help="Replace existing outputs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Generate images from ranked stem embeddings or mixture audio (MACS stage 2).

    Prints each image written on stdout (--json: one record each)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..generation.backbone import resolve_dtype
    from ..generation.checkpoints import resolve_adapter
    from ..generation.files import GenerateInputs, GenerateJob, check_options, stem_order_for
    from ..generation.pipeline import GenerationSettings, MacsGenerator
    from ..precision import check_precision

    emit = Emitter(as_json)
    with one_line_errors():
        if sum([bool(embeddings), bool(audio), interpolate is not None]) != 1:
            fail("give exactly one input: --embeddings, --audio or --interpolate", 2)
        seed = secrets.randbelow(2 ** 31) if seed is None else seed
        settings = GenerationSettings(steps=steps, guidance=guidance, prompt=prompt, negative_prompt=negative_prompt,
                                      height=height, width=width, audio_scale=audio_scale, seed=seed,
                                      num_images=num_images, batch_size=batch_size, top_k=top_k).validate()
        check_options(interpolate is not None, frames, num_images, attention_maps, order)
        precision = check_precision(precision)
        source = resolve_adapter(adapter, adapter_mlp, adapter_unet, allow_download)   # it fixes the stem order
        stem_order, order_record = stem_order_for(source, order)
        job = GenerateJob.plan(GenerateInputs(list(embeddings), list(audio), interpolate, frames), output,
                               num_images, seed, stem_order, attention_maps, force)   # before any model loads
        dev, _ = inference_device(device, precision)   # --precision fp16 on a CPU: an option error
        resolve_dtype(dtype, dev)             # so is a bad --dtype, before anything loads
        if audio:
            from ..generation.audio import AudioEmbedder

            official = source.kind == "official"
            # official adapters see what the official pipeline gives them: its separator, and a clip
            # shorter than the window padded to one window before separation (8 s stems)
            embedder = AudioEmbedder(separator or ("official" if official else "default"), clap, dev, allow_download,
                                     precision=precision, window_pad=source.window_pad)
            job.embed_audio(embedder, stem_order, top_k, OFFICIAL_SEPARATOR_HINT if official and separator is None else None)
        gen = MacsGenerator.load(sd_model, device=dev, dtype=dtype, allow_download=allow_download, source=source)
        job.check_fits(gen, top_k)
        common = {"settings": {k: v for k, v in settings.to_dict().items() if k not in ("seed", "num_images")},
                  "order": order_record, **gen.describe(), "command": "macs " + " ".join(shlex.quote(a) for a in sys.argv[1:])}

    progress = Progress(TextColumn("[bold]generate[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, disable=quiet)
    with one_line_errors(), gpu_memory_errors("try a smaller --batch-size, --height/--width or --dtype fp16"), \
            progress:
        task = progress.add_task("images", total=len(job.targets))
        written = job.write(gen, settings, common, top_k, emit, lambda: progress.advance(task))
    if not quiet:
        console.print(f"{len(written)} image(s) written to {output if job.single else f'{output}/'} (seed {settings.seed})",
                      highlight=False)
