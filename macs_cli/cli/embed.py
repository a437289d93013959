"""``macs embed``: stems -> CLAP embeddings (.npy, one row per stem) + a JSON sidecar."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import MacsError
from .batch import Batch, output_folder_or_file, positive
from .common import (output_path, DEVICE_HELP, Emitter, download_option, fail, force_option, inference_device, json_option,
                     one_line_errors, quiet_option, say_warning, skip_existing_option)

CLAP_HELP = ("CLAP model: 'default' (laion-clap 630k-audioset-best, HTSAT-tiny), 'hf' or "
             "'hf:<repo or folder>' (transformers ClapModel), a laion-clap .pt, or an official MACS "
             "separator checkpoint (its embedded CLAP).")


STEMS_HELP = ("A stems folder written by `macs separate` (its manifest gives the order and the mixture), a "
              "folder of such folders, or audio files (one set, in the order given).")
OUTPUT_HELP = "OUT.npy for one set of stems; a folder (one <name>.npy each) for several."
LABELS_HELP = "Tag each stem with its best labels: 'fsd50k', 'audioset', a comma-separated list or a text file."
PRECISION_HELP = "CLAP's precision: auto (fp32), fp32, bf16 or fp16 (CUDA only); low precision is autocast."


def embed(
    stems: List[Path] = typer.Argument(..., help=STEMS_HELP),
    output: Path = typer.Option(..., "-o", "--output", parser=output_path, help=OUTPUT_HELP),
    clap: Optional[str] = typer.Option(None, "--clap", help=CLAP_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    batch_size: int = typer.Option(8, "--batch-size", help="10 s clips per CLAP forward pass."),
    labels: Optional[str] = typer.Option(None, "--labels", help=LABELS_HELP),
    top_labels: int = typer.Option(3, "--top-labels", help="Labels kept per stem."),
    allow_download: bool = download_option("Fetch missing CLAP weights from the Hugging Face hub into its cache."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    force: bool = force_option("Replace existing outputs."),
    skip_existing: bool = skip_existing_option("Skip sets whose .npy exists."),
    quiet: bool = quiet_option("No progress bar or skip lines."),
    as_json: bool = json_option(),
) -> None:
    """Embed stems with CLAP: OUT.npy (M x 512, stem order) + OUT.json.

    Prints each .npy written on stdout (--json: one record each)."""
    from ..clap import load_clap
    from ..clap.api import MissingMixtureWarning, embed_stems, find_stem_sets, sidecar_of
    from ..formats import EMBED_SIDECAR, EMBEDDINGS, write_npy_with_sidecar
    from ..precision import autocast

    batch = Batch("embed", lambda t: [(t, EMBEDDINGS), (t.with_suffix(".json"), EMBED_SIDECAR)], force,
                  skip_existing, Emitter(as_json), quiet)
    with one_line_errors():
        batch.check_flags()
        positive("--batch-size", batch_size)
        positive("--top-labels", top_labels)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MissingMixtureWarning)
            sets, problems = find_stem_sets(list(stems))
        batch.report(problems)
        for w in caught:
            say_warning(f"{w.message}")
        if not sets:
            fail(problems[0] if problems else "nothing to embed")
        if output.suffix.lower() == ".npy" and len(sets) > 1:
            fail(f"-o {output}: {len(sets)} stem sets need an output folder, not one .npy file", 2)
        single = len(sets) == 1 and output.suffix.lower() == ".npy"
        targets = output_folder_or_file(output, [name for name, _, _ in sets], ".npy", single)
        vocab = _vocabulary(labels)
        dev, used = inference_device(device, precision, "clap")
        batch.inputs = {Path(p).resolve() for _, files, mix in sets
                        for p in [*files, *(mix if isinstance(mix, list) else [mix] if mix else [])]}
        batch.inputs |= {Path(files[0]).parent.resolve() / "manifest.json" for _, files, _ in sets if files}
        for (name, files, mix), target in zip(sets, targets):
            batch.add(name, Path(files[0]).parent if files else name, target, (files, mix),
                      skipped=lambda t, w=(Path(files[0]).parent if files else name):
                      {"input": str(w), "sidecar": str(t.with_suffix(".json"))})
        encoder = load_clap(clap, device=dev, allow_download=allow_download) if batch.share() else None

    def work(job):
        files, mix = job.data
        if not files:
            raise MacsError(f"{job.name}: no stems to embed (all dropped as silent?)")
        t0 = time.time()
        with autocast(used, dev):
            res = embed_stems(encoder, files, mix, batch_size=batch_size, vocabulary=vocab, top_labels=top_labels)
        write_npy_with_sidecar(job.target, res.embeddings, sidecar_of(res, encoder, used, time.time() - t0, clap),
                               "embeddings", force=job.force)
        return {"input": str(Path(files[0]).parent), "sidecar": str(job.target.with_suffix(".json")),
                "skipped": False, "shape": list(res.embeddings.shape)}

    batch.run(work)
    batch.finish(f"{len(batch.done)} embedded into {output}")


def _vocabulary(labels: str | None):
    if labels is None:   # "" is a mistake (an unset variable), said by load_vocabulary
        return None
    from ..clap.labels import load_vocabulary

    return load_vocabulary(labels)
