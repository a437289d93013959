"""``macs generate``: ranked stem embeddings (or a mixture file) -> image(s) + JSON sidecars."""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import typer

from ..fsutil import file_sha256
from ..precision import PRECISION_HELP
from ..formats import STEM_ORDERS
from .common import (DEVICE_HELP, JSON_HELP, Emitter, console, fail, one_line_errors, plan_output, process_device,
                     threads_for_cpu)

SD_HELP = ("Stable Diffusion v1.x backbone: a hub id (CompVis/stable-diffusion-v1-4, "
           "stable-diffusion-v1-5/stable-diffusion-v1-5), read from the Hugging Face cache, or a local "
           "diffusers pipeline folder. Default: the backbone the adapter was trained on; else v1-4 for "
           "official adapters, v1-5 otherwise.")
ADAPTER_HELP = ("MACS adapter: a .safetensors from `macs train-gen` (or its run folder), an official "
                "<Dataset>_mlp.pt (with <Dataset>_unet.pt beside it), a folder holding such a pair, or "
                "official:<Dataset> (the authors' files in the Hugging Face cache).")


@contextlib.contextmanager
def gpu_memory_errors(hint: str) -> Iterator[None]:
    """A CUDA out-of-memory error as a one-line MacsError (inside ``one_line_errors``)."""
    import torch

    from ..errors import MacsError

    try:
        yield
    except torch.OutOfMemoryError:
        raise MacsError(f"out of GPU memory ({hint})") from None


def _load_embeddings(path: Path, order: str = "significance") -> tuple[Any, dict, dict]:
    """An embeddings file -> (array (N, K, 512) in ``order``, its sidecar, a record of what was done);
    the order rules are :func:`macs_cli.ranking.ensure_order`'s."""
    from ..formats import EmbeddingSet
    from ..generation.pipeline import as_batch

    found = EmbeddingSet.read(path)
    record: dict[str, Any] = {"file": str(path.resolve()), "sha256": file_sha256(path), "shape": list(found.array.shape)}
    ordered, done = found.ordered(order)
    record.update(done)
    return as_batch(ordered.array, str(path)), ordered.meta, record


def _labels_of(meta: dict, k: int) -> list[str]:
    """Titles for the attention maps: rank and best label of each stem (labels as `macs embed`
    writes them; anything else in a hand-edited sidecar is ignored)."""
    labels = meta.get("labels")
    labels = labels if isinstance(labels, list) else []
    out = []
    for i in range(k):
        row = labels[i] if i < len(labels) else None
        best = row[0].get("label") if isinstance(row, list) and row and isinstance(row[0], dict) else None
        out.append(f"#{i + 1} {best}" if isinstance(best, str) and best else f"#{i + 1}")
    return out


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

    from ..errors import ConfigError, MacsError
    from ..formats import PICTURE
    from ..generation.pipeline import GenerationSettings, MacsGenerator

    emit = Emitter(as_json)

    with one_line_errors():
        if sum([bool(embeddings), bool(audio), interpolate is not None]) != 1:
            fail("give exactly one input: --embeddings, --audio or --interpolate", 2)
        if seed is None:
            seed = secrets.randbelow(2 ** 31)
        settings = GenerationSettings(steps=steps, guidance=guidance, prompt=prompt, negative_prompt=negative_prompt,
                                      height=height, width=width, audio_scale=audio_scale, seed=seed,
                                      num_images=num_images, batch_size=batch_size, top_k=top_k).validate()
        if interpolate is not None and frames < 2:
            raise ConfigError(f"--frames must be >= 2 (got {frames})")
        if interpolate is not None and (num_images != 1 or attention_maps):
            fail("--interpolate makes one image per frame from one seed: --num-images and --attention-maps "
                 "do not apply", 2)
        if order is not None and order not in STEM_ORDERS:
            raise ConfigError(f"--order must be separator or significance (got {order!r})")
        from ..precision import check_precision

        precision = check_precision(precision)

        # the adapter (its files are read, the backbone is not loaded): it fixes the stem order
        from ..generation.checkpoints import resolve_adapter

        source = resolve_adapter(adapter, adapter_mlp, adapter_unet, allow_download)
        stem_order = order or (source.stem_order if source.stem_order in STEM_ORDERS else "significance")
        order_record = {"stem_order": stem_order, "from": "--order" if order else "adapter",
                        "adapter_stem_order": source.stem_order}

        # inputs and output names, checked before any model is loaded
        sets: list[InputSet] = []
        for path in list(embeddings) + list(interpolate or ()):
            arr, meta, rec = _load_embeddings(path, stem_order)
            sets.append(InputSet(path.stem, arr, meta, rec))
        for path in audio:
            if not path.is_file():
                raise MacsError(f"{path}: no such audio file")
            record = {"file": str(path.resolve()), "sha256": file_sha256(path), "kind": "audio"}
            sets.append(InputSet(path.stem, None, {}, record, audio=path))
        if interpolate is not None:
            names = [f"frame_{i:03d}" for i in range(frames)]
            planned = names + ["contact_sheet"]
        else:
            for s in sets:
                s.plan(num_images, seed)
            planned = [n for s in sets for n in s.names.values()]
        single = output.suffix.lower() == ".png"
        if output.suffix.lower() in (".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"):
            fail(f"-o {output}: images are written as PNG: name the output OUT.png, or give a folder", 2)
        if single and len(planned) != 1:
            fail(f"-o {output}: one PNG holds one image but this run writes {len(planned)}: pass a folder", 2)
        if not single and output.exists() and not output.is_dir():
            fail(f"{output}: exists and is not a folder")
        if len(set(planned)) != len(planned):
            fail("two inputs have the same file name: run them separately or rename one", 2)
        targets = {n: output if single else output / f"{n}.png" for n in planned}
        inputs_used = {Path(p).resolve() for p in [*embeddings, *(interpolate or ()), *audio]}
        inputs_used |= {p.with_suffix(".json") for p in inputs_used}
        for n, t in targets.items():      # nothing there, or (with --force) a previous image of ours
            parts = [(t, PICTURE)] if n == "contact_sheet" else image_parts(t, attention_maps)
            clash = next((p for p, _ in parts if p.resolve() in inputs_used), None)
            if clash is not None:
                raise MacsError(f"{clash}: is one of the inputs; choose another -o")
            plan_output(parts, force)

        # models
        dev = process_device(device)
        from ..generation.backbone import resolve_dtype

        resolve_dtype(dtype, dev)             # a bad --dtype is an option error, before anything loads
        from ..precision import resolve_precision

        resolve_precision(precision, dev)     # so is --precision fp16 on a CPU
        if dev == "cpu":
            threads_for_cpu()
        if audio:
            from ..generation.audio import AudioEmbedder

            official = source.kind == "official"
            sep_spec = separator or ("official" if official else "default")
            # official adapters see what the official pipeline gives them: its separator, and a clip
            # shorter than the window padded to one window before separation (8 s stems)
            embedder = AudioEmbedder(sep_spec, clap, dev, allow_download, precision=precision,
                                     window_pad=source.window_pad)
            for s in sets:
                try:
                    stems = embedder.embed(s.audio)
                except MacsError as exc:
                    if separator is None and official and embedder._separator is None:
                        raise MacsError(f"{exc} [with an official adapter --separator defaults to official, the "
                                        "separator its adapters were trained on; pass --separator default for "
                                        "the built-in one]") from None
                    raise
                arr, rank_info = stems.ordered(stem_order, top_k)
                s.array = arr[None]
                s.record.update(embedder.describe(), **rank_info, **stems.info)
        gen = MacsGenerator.load(sd_model, device=dev, dtype=dtype, allow_download=allow_download, source=source)
        if interpolate is None:
            for s in sets:                    # every input fits the adapter before the first image is written
                try:
                    gen.prepare(s.array, top_k)
                except ConfigError as exc:
                    raise ConfigError(f"{s.record.get('file', s.name)}: {exc}") from None
        common = {"settings": {k: v for k, v in settings.to_dict().items() if k not in ("seed", "num_images")},
                  "order": order_record, **gen.describe(), "command": "macs " + " ".join(shlex.quote(a) for a in sys.argv[1:])}

    written: list[Path] = []
    progress = Progress(TextColumn("[bold]generate[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, disable=quiet)
    with one_line_errors(), gpu_memory_errors("try a smaller --batch-size, --height/--width or --dtype fp16"), \
            progress:
        task = progress.add_task("images", total=len(planned))
        if not single:
            output.mkdir(parents=True, exist_ok=True)

        def write(item, name: str, record: dict, titles: list[str] | None = None) -> None:
            files = _write_image(targets[name], item, {**record, **common}, titles, force)
            written.append(targets[name])
            emit(targets[name], sidecar=str(files[1]), seed=item.seed,
                 **({"attention": [str(f) for f in files[2:]]} if len(files) > 2 else {}))
            progress.advance(task)

        if interpolate is not None:
            a, b = sets
            positions = [i / (frames - 1) for i in range(frames)]

            def on_frame(item) -> None:
                i = item.source_index
                write(item, names[i], {"seed": item.seed, "input": {"kind": "interpolation", "a": a.record,
                                                                    "b": b.record, "t": positions[i], "frame": i}})

            images, t = gen.interpolate(a.array, b.array, frames, settings, on_image=on_frame)
            from ..generation.visual import contact_sheet, save_png

            save_png(contact_sheet([im.image for im in images], [f"t={x:.2f}" for x in t]), targets["contact_sheet"],
                     force=force)
            written.append(targets["contact_sheet"])
            emit(targets["contact_sheet"], kind="contact_sheet", frames=frames)
        else:
            for s in sets:
                k = min(s.array.shape[1], top_k or s.array.shape[1])
                titles = _labels_of(s.meta, k)

                def on_image(item, s=s, k=k, titles=titles) -> None:
                    write(item, s.names[(item.source_index, item.seed)],
                          {"seed": item.seed, "input": {**s.record, "row": item.source_index, "stems_used": k}}, titles)

                gen.generate(s.array, settings, attention_maps=attention_maps, on_image=on_image)
    if not quiet:
        console.print(f"{len(written)} image(s) written to {output if single else f'{output}/'} (seed {settings.seed})",
                      highlight=False)


@dataclass
class InputSet:
    """One input: its embeddings (N, K, 512) (filled later for --audio), sidecar, record, output names."""

    name: str
    array: Any
    meta: dict
    record: dict
    audio: Path | None = None
    names: dict = field(default_factory=dict)   # (row, seed) -> output name

    def plan(self, num_images: int, seed: int) -> None:
        rows = 1 if self.array is None else self.array.shape[0]
        for row in range(rows):
            for k in range(num_images):
                parts = [self.name] + ([f"{row:03d}"] if rows > 1 else []) + ([f"{k:02d}"] if num_images > 1 else [])
                self.names[(row, seed + k)] = "_".join(parts)


def image_parts(path: Path, attention_maps: bool) -> list:
    """The files of one image record with their kinds: the PNG, its sidecar, its attention maps."""
    from ..formats import ATTENTION_NPY, ATTENTION_PNG, IMAGE, IMAGE_SIDECAR

    parts = [(path, IMAGE), (path.with_suffix(".json"), IMAGE_SIDECAR)]
    if attention_maps:
        parts += [(path.with_name(f"{path.stem}_attention.png"), ATTENTION_PNG),
                  (path.with_name(f"{path.stem}_attention.npy"), ATTENTION_NPY)]
    return parts


def _write_image(path: Path, item, record: dict, titles: list[str] | None, force: bool = False) -> list[Path]:
    """PNG + JSON sidecar (+ attention grid and maps when the item has them), written together:
    all complete under temporary names, then placed (the sidecar first); returns the files."""
    import numpy as np

    from ..formats import IMAGE_FORMAT
    from ..fsutil import OutputSet
    from ..generation.visual import attention_grid, write_png

    side = {"format": IMAGE_FORMAT, "image": path.name, **record, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    parts = image_parts(path, item.attention is not None)
    with OutputSet(force) as out:
        tmp = [None] * len(parts)
        for i in [1, 0, *range(2, len(parts))]:      # the sidecar is placed first: it makes the rest ours
            tmp[i] = out.path(*parts[i])
        tmp = dict(zip([p for p, _ in parts], tmp))
        mark = {"macs": json.dumps({"seed": item.seed, "sidecar": path.with_suffix(".json").name})}
        write_png(item.image, tmp[path], mark)
        tmp[path.with_suffix(".json")].write_text(json.dumps(side, indent=2, default=str) + "\n")
        if item.attention is not None:
            attention_grid(item.image, item.attention, titles or [], tmp[parts[2][0]])
            with open(tmp[parts[3][0]], "wb") as f:
                np.save(f, item.attention.astype(np.float32))
    return [p for p, _ in parts]
