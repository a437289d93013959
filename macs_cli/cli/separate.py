"""``macs separate``: audio files or folders -> stem WAVs + manifest.json per input."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional

import typer

from ..precision import PRECISION_HELP
from .common import (DEVICE_HELP, JSON_HELP, Emitter, console, fail, my_share, one_line_errors, process_device,
                     report_interrupt, say_error, say_note, say_warning, shard_note, threads_for_cpu, world)


def _parse_rate(value: str) -> int | str:
    v = value.strip().lower()
    if v in ("model", "input"):
        return v
    try:
        return int(v)
    except ValueError:
        from ..errors import ConfigError

        raise ConfigError(f"--sample-rate must be 'model', 'input' or a rate in Hz (got {value!r})") from None


def _parse_num_sources(value: str | None) -> int | str | None:
    from ..errors import ConfigError
    from ..separation.grouping import parse_num_sources

    try:
        return parse_num_sources(value)
    except ValueError as exc:
        raise ConfigError(f"--num-sources {exc}") from None


def _output_names(inputs: list[Path], files: list[Path]) -> dict[Path, str]:
    """Output folder name per file: its stem, or its path below an input folder (no suffix)."""
    from ..separation.api import output_name

    names: dict[Path, str] = {}
    for f in files:
        root = next((i for i in inputs if i.is_dir() and f.is_relative_to(i)), None)
        names[f] = output_name(f.relative_to(root) if root else Path(f.name))
    return names


def separate(
    inputs: List[Path] = typer.Argument(..., help="Audio files or folders (searched recursively): "
                                        "wav, flac, ogg, mp3, any length, rate or channel count."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder: one sub-folder per input."),
    model: str = typer.Option("default", "--model", "-m",
                              help="'default' (built in), 'official' (the MACS authors' checkpoint from "
                                   "the Hugging Face cache), or a checkpoint file or folder."),
    num_sources: Optional[str] = typer.Option(None, "--num-sources", "-n",
                                              help="Merge the model's stems into this many sources, "
                                                   "or 'auto' to estimate how many there are."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    batch_size: int = typer.Option(1, "--batch-size", help="Windows per forward pass."),
    overlap: float = typer.Option(0.25, "--overlap", help="Fraction of each 8 s window shared with "
                                                          "the next (0 to 0.75)."),
    sample_rate: str = typer.Option("model", "--sample-rate",
                                    help="Stem sample rate: 'model' (16 kHz), 'input', or Hz."),
    drop_silent: bool = typer.Option(False, "--drop-silent", help="Omit inactive stems."),
    force: bool = typer.Option(False, "--force", help="Replace existing output folders."),
    skip_existing: bool = typer.Option(False, "--skip-existing",
                                       help="Skip inputs whose output folder exists (resume a batch)."),
    no_align: bool = typer.Option(False, "--no-align", help="Do not align stem order across windows."),
    spectrograms: bool = typer.Option(False, "--spectrograms",
                                      help="Also write spectrograms.png (mixture and each stem)."),
    allow_download: bool = typer.Option(False, "--allow-download",
                                        help="Fetch --model official from the Hugging Face hub if not cached."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, notes or skip lines."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Separate audio into stems: OUTDIR/<name>/stem_00.wav ... + manifest.json.

    Prints each output folder on stdout (--json: one record each)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ..audio.io import find_audio_files, probe
    from ..errors import MacsError, OutputExistsError
    from ..formats import STEMS
    from ..fsutil import check_writable_dir, is_inside
    from ..separation.api import SeparateOptions, SilentInputWarning, separate_file
    from ..weights.separator import load_separator

    emit = Emitter(as_json)
    with one_line_errors():
        if force and skip_existing:
            fail("--force and --skip-existing contradict each other", 2)
        opts = SeparateOptions(overlap=overlap, batch_size=batch_size,
                               sample_rate=_parse_rate(sample_rate),
                               num_sources=_parse_num_sources(num_sources),
                               drop_silent=drop_silent, force=force, align=not no_align,
                               spectrograms=spectrograms, precision=precision)
        dev = process_device(device)
        from ..precision import resolve_precision

        resolve_precision(precision, dev)   # fp16 on a CPU is an option error, before the model loads
        if dev == "cpu" and precision == "bf16" and not quiet:
            from .. import precision as _precision

            if not _precision.cpu_bf16_native():
                say_warning("--precision bf16: this CPU has no native bf16 (AVX512-BF16/AMX), so bf16 is "
                            "emulated and much slower than fp32 (over 10x per window measured on an "
                            "AVX2 CPU; benchmarks/README.md section 2)")
        notes: list[str] = []
        files, problems = find_audio_files(list(inputs), skip_outputs=True, notes=notes)
        check_writable_dir(output)
        net = load_separator(model, device=dev, allow_download=allow_download)
        opts.validate(net.config.num_sources)
        if dev == "cpu":
            threads_for_cpu()
    first = world()[0] == 0   # notes and input problems are reported once, not by every process
    given = {Path(i).resolve() for i in inputs}
    inside = [f for f in files if f.resolve() not in given and is_inside(f, output)]   # found by a folder search
    if first and not quiet:
        for n in notes:
            say_note(n)
    if first and inside:
        say_warning(f"{len(inside)} file(s) found inside the output folder {output} (e.g. {inside[0]}) "
                    "are separated like the other inputs")
    names = _output_names(list(inputs), files)
    mine = set(my_share(files))  # under accelerate/torchrun each process takes its share
    seen: dict[str, Path] = {}
    jobs = []
    failed = list(problems) if first else []
    for f in files:
        name = names[f]
        if name in seen:
            failed.append(f"{f}: output name '{name}' clashes with {seen[name]}")
            continue
        seen[name] = f
        if f not in mine:
            continue
        try:
            info = probe(f)
        except MacsError as exc:
            failed.append(str(exc))
            continue
        if skip_existing and STEMS.owns(output / name):
            if not quiet:
                say_note(f"skip {f} (output exists)")
            emit(output / name, input=str(f), skipped=True)
            continue
        jobs.append((f, name, info))
    total = sum(i.duration for _, _, i in jobs)
    done: list[Path] = []
    with report_interrupt(done, len(jobs)), \
            Progress(TextColumn("[bold]separate[/] {task.fields[file]}"), BarColumn(),
                     TextColumn("{task.completed:.1f}/{task.total:.1f} s of audio"),
                     TimeRemainingColumn(), console=console, disable=quiet, transient=False) as progress:
        task = progress.add_task("audio", total=max(total, 1e-9), file="")
        for f, name, info in jobs:
            progress.update(task, file=f.name)
            start = progress.tasks[0].completed
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", SilentInputWarning)
                    manifest = separate_file(net, f, output, opts, name=name,
                                             on_progress=lambda s: progress.advance(task, s))
                for w in caught:
                    say_warning(f"{w.message}")
                done.append(f)
                emit(output / name, input=str(f), skipped=False,
                     stems=[str(output / name / s["file"]) for s in manifest["stems"]],
                     manifest=str(output / name / "manifest.json"))
            except OutputExistsError as exc:
                failed.append(str(exc).replace("(use --force to replace it)",
                                               "(use --force to replace it, or --skip-existing to keep it)"))
            except MacsError as exc:
                failed.append(str(exc))
            except OSError as exc:
                failed.append(f"{f}: {exc.strerror or exc}")
            progress.update(task, completed=start + info.duration)
    for msg in failed:
        say_error(f"{msg}")
    if not quiet:
        console.print(f"{len(done)} separated into {output}" + (f", {len(failed)} failed" if failed else "")
                      + shard_note(), highlight=False)
    if failed:
        raise typer.Exit(1)
