"""``macs generate``: ranked stem embeddings (or a mixture file) -> image(s) + JSON sidecars."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from ..precision import PRECISION_HELP
from .batch import Batch
from .common import output_path, DEVICE_HELP, Emitter, JSON_HELP, fail, gpu_memory_errors, inference_device, one_line_errors

SD_HELP = ("Stable Diffusion v1.x backbone: a hub id (CompVis/stable-diffusion-v1-4, "
           "stable-diffusion-v1-5/stable-diffusion-v1-5), read from the Hugging Face cache, or a local "
           "diffusers pipeline folder. Default: the backbone the adapter was trained on; else v1-4 for "
           "official adapters, v1-5 otherwise.")
ADAPTER_HELP = ("MACS adapter: a .safetensors from `macs train-gen` (or its run folder), an official "
                "<Dataset>_mlp.pt (with <Dataset>_unet.pt beside it), a folder holding such a pair, or "
                "official:<Dataset> (the authors' files in the Hugging Face cache).")


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
    output: Path = typer.Option(..., "-o", "--output", parser=output_path, help="OUT.png for one image; else a folder."),
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
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Keep an input's images that are already "
                                       "there (all of them, with their sidecars) and go on with the others."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Generate images from ranked stem embeddings or mixture audio (MACS stage 2).

    Prints each image written on stdout (--json: one record each)."""
    from ..generation.backbone import resolve_dtype
    from ..generation.checkpoints import resolve_adapter
    from ..generation.files import (GenerateInputs, GenerateJob, audio_embedder, check_options, run_record,
                                    stem_order_for)
    from ..generation.pipeline import GenerationSettings, MacsGenerator
    from ..precision import check_precision

    emit, parts, written = Emitter(as_json), {}, []
    batch = Batch("generate", lambda t: parts[t], force, skip_existing, emit, quiet)
    with one_line_errors():
        batch.check_flags()
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
        problems: list = []           # inputs that cannot be read: told, and the others go on
        job = GenerateJob.plan(GenerateInputs(list(embeddings), list(audio), interpolate, frames), output, num_images,
                               seed, stem_order, attention_maps, force, problems, check_outputs=False)
        batch.report(problems)
        batch.inputs = job.input_files()
        for s, where, files in job.outputs():   # outputs are planned before any model loads
            parts[files[0][0]] = files
            batch.add(where, where, files[0][0], s, skipped=lambda t, s=s: job.existing(s))
        dev, _ = inference_device(device, precision)   # --precision fp16 on a CPU: an option error
        resolve_dtype(dtype, dev)             # so is a bad --dtype, before anything loads
        if batch.jobs:   # nothing left to do (every input kept or failed): no model loads
            embedder = audio_embedder(source, separator, clap, dev, allow_download, precision) if audio else None
            gen = MacsGenerator.load(sd_model, device=dev, dtype=dtype, allow_download=allow_download, source=source)
            job.check_fits(gen, top_k)
            common = run_record(settings, order_record, gen, sys.argv[1:])

    def work(j):
        step = lambda: j.advance(1)   # noqa: E731
        if j.data is None:
            written.extend(job.write_frames(gen, settings, common, emit, step, j.force))
            return
        if j.data.array is None:      # a mixture: separated, embedded and ordered now
            job.embed_audio(embedder, j.data, stem_order, top_k)
            job.check_fits(gen, top_k, [j.data])
        written.extend(job.write_input(gen, j.data, settings, common, top_k, emit, step, j.force))

    with one_line_errors(), gpu_memory_errors("try a smaller --batch-size, --height/--width or --dtype fp16"):
        batch.run(work, amount=lambda j: len(job.image_names(j.data)), unit="images", decimals=0)
    batch.finish(f"{len(written)} image(s) written to {output if job.single else f'{output}/'} (seed {settings.seed})"
                 + (f", {len(batch.problems)} failed" if batch.problems else ""))
