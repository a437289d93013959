"""``macs embed``: stems -> CLAP embeddings (.npy, one row per stem) + a JSON sidecar."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from .common import (DEVICE_HELP, JSON_HELP, Emitter, console, fail, my_share, one_line_errors, plan_output,
                     process_device, report_interrupt, say_error, say_note, say_warning, shard_note,
                     threads_for_cpu, world)

CLAP_HELP = ("CLAP model: 'default' (laion-clap 630k-audioset-best, HTSAT-tiny), 'hf' or "
             "'hf:<repo or folder>' (transformers ClapModel), a laion-clap .pt, or an official MACS "
             "separator checkpoint (its embedded CLAP).")


def _folder_name(folder: Path) -> str:
    """A folder's own name, also when it is given as ``.`` or ``..`` (whose output would else be the
    hidden ``..npy``)."""
    name = folder.name if folder.name not in ("", ".", "..") else folder.resolve().name
    return name or "stems"


def expand_stem_sets(inputs: list[Path]) -> tuple[list[tuple[str, list[Path], Path | None]], list[str]]:
    """Inputs -> [(name, stem files, mixture)]: a folder with manifest.json is one set; a folder
    without one is searched for such folders (recursively), or else taken as a set of audio files;
    loose audio files together form one set."""
    from ..audio.io import AUDIO_SUFFIXES
    from ..clap.api import stems_of
    from ..errors import MacsError

    sets, problems, loose = [], [], []
    for item in inputs:
        if item.is_file():
            loose.append(item)
        elif item.is_dir():
            if (item / "manifest.json").exists():
                found = [item]
            else:
                found = sorted(p.parent for p in item.rglob("manifest.json")
                               if not any(part.startswith(".") for part in p.relative_to(item).parts))
            if found:
                for folder in found:
                    try:
                        files, mix = stems_of(folder)
                    except MacsError as exc:
                        problems.append(str(exc))
                        continue
                    rel = folder.relative_to(item) if folder != item else Path(_folder_name(folder))
                    sets.append((str(rel), files, mix))
            elif any(p.suffix.lower() in AUDIO_SUFFIXES for p in item.iterdir() if p.is_file()):
                files, mix = stems_of(item)
                sets.append((_folder_name(item), files, mix))
            else:
                problems.append(f"{item}: holds no stems (no manifest.json and no audio files)")
        elif os.path.lexists(item):
            from ..fsutil import require_regular_file

            try:
                require_regular_file(item, "stem file")
            except MacsError as exc:
                problems.append(str(exc))
        else:
            problems.append(f"{item}: no such file or folder")
    if loose:
        sets.append((_folder_name(loose[0].parent), loose, None))
    return sets, problems


def embed(
    stems: List[Path] = typer.Argument(..., help="A stems folder written by `macs separate` (its "
                                       "manifest gives the order and the mixture), a folder of such "
                                       "folders, or audio files (one set, in the order given)."),
    output: Path = typer.Option(..., "-o", "--output", help="OUT.npy for one set of stems; a folder "
                                "(one <name>.npy each) for several."),
    clap: Optional[str] = typer.Option(None, "--clap", help=CLAP_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    batch_size: int = typer.Option(8, "--batch-size", help="10 s clips per CLAP forward pass."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Tag each stem with its best labels: "
                                         "'fsd50k', 'audioset', a comma-separated list or a text file."),
    top_labels: int = typer.Option(3, "--top-labels", help="Labels kept per stem."),
    allow_download: bool = typer.Option(False, "--allow-download", help="Fetch missing CLAP weights "
                                        "from the Hugging Face hub into its cache."),
    precision: str = typer.Option("auto", "--precision", help="CLAP's precision: auto (fp32), fp32, bf16 "
                                  "or fp16 (CUDA only); low precision is autocast."),
    force: bool = typer.Option(False, "--force", help="Replace existing outputs."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip sets whose .npy exists."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or skip lines."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Embed stems with CLAP: OUT.npy (M x 512, stem order) + OUT.json.

    Prints each .npy written on stdout (--json: one record each)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..clap import load_clap
    from ..clap.api import MissingMixtureWarning, embed_stems, write_npy_with_sidecar
    from ..errors import MacsError
    from ..formats import EMBED_SIDECAR, EMBEDDINGS
    from ..fsutil import describe_os_error, file_sha256

    emit = Emitter(as_json)

    with one_line_errors():
        if force and skip_existing:
            fail("--force and --skip-existing contradict each other", 2)
        if batch_size < 1:
            fail(f"--batch-size must be >= 1 (got {batch_size})", 2)
        if top_labels < 1:
            fail(f"--top-labels must be >= 1 (got {top_labels})", 2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MissingMixtureWarning)
            sets, problems = expand_stem_sets(list(stems))
        for w in caught:
            say_warning(f"{w.message}")
        if not sets:
            fail(problems[0] if problems else "nothing to embed")
        is_npy = output.suffix.lower() == ".npy"
        if is_npy and len(sets) > 1:
            fail(f"-o {output}: {len(sets)} stem sets need an output folder, not one .npy file", 2)
        single = len(sets) == 1 and is_npy
        targets = [output if single else output / f"{name}.npy" for name, _, _ in sets]
        if not single and output.exists() and not output.is_dir():
            fail(f"{output}: exists and is not a folder" + (" (several stem sets need an output folder)"
                                                            if len(sets) > 1 else " (give OUT.npy or a folder)"))
        vocab = None
        if labels:
            from ..clap.labels import load_vocabulary

            vocab = load_vocabulary(labels)
        dev = process_device(device)
        from ..precision import autocast, resolve_precision

        used = resolve_precision(precision, dev, "clap")
        if dev == "cpu":
            threads_for_cpu()
        jobs, claimed = [], {}
        inputs_used = {Path(p).resolve() for _, files, mix in sets for p in
                       [*files, *(mix if isinstance(mix, list) else [mix] if mix else [])]}
        inputs_used |= {Path(files[0]).parent.resolve() / "manifest.json" for _, files, _ in sets if files}
        for (name, files, mix), target in zip(sets, targets):
            where = Path(files[0]).parent if files else name
            if target in claimed:
                problems.append(f"{where}: its output {target} clashes with that of {claimed[target]} "
                                "(embed them into separate folders)")
                continue
            claimed[target] = where
            side = target.with_suffix(".json")
            clash = next((p for p in (target, side) if p.resolve() in inputs_used), None)
            if clash is not None:
                problems.append(f"{where}: its output {clash} is one of the inputs (choose another -o)")
                continue
            try:
                action, job_force = plan_output([(target, EMBEDDINGS), (side, EMBED_SIDECAR)], force, skip_existing)
            except MacsError as exc:
                problems.append(str(exc))
                continue
            if action == "skip":
                if not quiet:
                    say_note(f"skip {where} ({target} exists)")
                emit(target, input=str(where), sidecar=str(side), skipped=True)
                continue
            jobs.append((name, files, mix, target, job_force))
        jobs = my_share(jobs)
        if world()[0] != 0:
            problems = []
        encoder = load_clap(clap, device=dev, allow_download=allow_download) if jobs else None
    done = 0
    finished: list[str] = []
    with report_interrupt(finished, len(jobs)), \
            Progress(TextColumn("[bold]embed[/] {task.fields[name]}"), BarColumn(), MofNCompleteColumn(),
                     TimeRemainingColumn(), console=console, disable=quiet) as progress:
        task = progress.add_task("sets", total=len(jobs), name="")
        for name, files, mix, target, job_force in jobs:
            progress.update(task, name=name)
            t0 = time.time()
            try:
                if not files:
                    raise MacsError(f"{name}: no stems to embed (all dropped as silent?)")
                with autocast(used, dev):
                    res = embed_stems(encoder, files, mix, batch_size=batch_size, vocabulary=vocab,
                                      top_labels=top_labels)
                side = {"stems": res.files, "model": getattr(encoder, "source", str(clap or "default")),
                        "backend": type(encoder).__name__, "sample_rate": encoder.sample_rate,
                        "shape": list(res.embeddings.shape), "normalized": True,
                        "stem_sha256": [file_sha256(Path(f)) for f in res.files],
                        "mixture": res.mixture_file,
                        "mixture_embedding": None if res.mixture is None else [float(v) for v in res.mixture],
                        "precision": used,
                        "seconds": round(time.time() - t0, 3)}
                if res.labels is not None:
                    side["labels"] = res.labels
                write_npy_with_sidecar(target, res.embeddings, side, "embeddings", force=job_force)
                done += 1
                finished.append(name)
                emit(target, input=str(Path(files[0]).parent), sidecar=str(target.with_suffix(".json")),
                     skipped=False, shape=list(res.embeddings.shape))
            except MacsError as exc:
                problems.append(str(exc))
            except OSError as exc:
                problems.append(describe_os_error(exc, target))
            progress.advance(task)
    for msg in problems:
        say_error(f"{msg}")
    if not quiet:
        console.print(f"{done} embedded into {output}" + shard_note(), highlight=False)
    if problems:
        raise typer.Exit(1)
