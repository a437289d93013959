"""``macs separate``: audio files or folders -> stem WAVs + manifest.json per input."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional

import typer

from ..precision import PRECISION_HELP
from .batch import Batch
from .common import (output_path, DEVICE_HELP, Emitter, JSON_HELP, inference_device, one_line_errors, say_note,
                     say_warning, world)


def separate(
    inputs: List[Path] = typer.Argument(..., help="Audio files or folders (searched recursively): "
                                        "wav, flac, ogg, mp3, any length, rate or channel count."),
    output: Path = typer.Option(..., "-o", "--output", parser=output_path, help="Output folder: one sub-folder per input."),
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
    stem_mode: str = typer.Option("auto", "--stem-mode", help="clean: each stem re-rendered from the mixture "
                                  "with the non-negative part of its share of every time-frequency bin (still "
                                  "summing to the input); raw: the network's stems as they are; auto: clean "
                                  "for the built-in separator, raw for the others."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, notes or skip lines."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Separate audio into stems: OUTDIR/<name>/stem_00.wav ... + manifest.json.

    Prints each output folder on stdout (--json: one record each)."""
    from ..audio.io import find_audio_files
    from ..formats import STEMS, STEMS_OUTPUT
    from ..fsutil import OutputKind, check_writable_dir
    from ..separation.api import (SeparateOptions, SilentInputWarning, check_input, inside_output_warning,
                                  output_names, separate_file)
    from ..weights.separator import load_separator

    # --skip-existing keeps any stems folder; what --force may replace is checked when it is written
    kind = OutputKind(STEMS_OUTPUT.label, STEMS.owns if skip_existing else STEMS_OUTPUT.owns)
    batch = Batch("separate", lambda t: [(t, kind)], force, skip_existing, Emitter(as_json), quiet)
    with one_line_errors():
        batch.check_flags()
        opts = SeparateOptions.parse(sample_rate, num_sources, overlap=overlap, batch_size=batch_size,
                                     drop_silent=drop_silent, force=force, align=not no_align,
                                     spectrograms=spectrograms, precision=precision,
                                     stem_mode=stem_mode)
        dev, _ = inference_device(device, precision, warn_bf16=not quiet)
        notes: list[str] = []
        files, problems = find_audio_files(list(inputs), skip_outputs=True, notes=notes)
        batch.report(problems)
        check_writable_dir(output)
        net = load_separator(model, device=dev, allow_download=allow_download)
        opts.validate(net.config.num_sources)
    if world()[0] == 0:   # notes are given once, not by every process
        for line in [] if quiet else notes:
            say_note(line)
        for line in filter(None, [inside_output_warning(list(inputs), files, output)]):
            say_warning(line)
    for f, name in output_names(list(inputs), files).items():
        batch.add(str(f), f, output / name, skipped=lambda t, f=f: {"input": str(f)},
                  check=lambda f=f, t=output / name: check_input(f, t), shown=f.name)
    batch.share()

    def work(job):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SilentInputWarning)
                manifest = separate_file(net, job.where, output, opts, name=str(job.target.relative_to(output)),
                                         on_progress=job.advance, info=job.data)   # probed by check_input
        finally:   # said when the input fails too (where a previous output was kept, for one)
            for w in caught:
                say_warning(f"{w.message}")
        stems = [str(job.target / s["file"]) for s in manifest["stems"]]
        return {"input": str(job.where), "skipped": False, "stems": stems, "manifest": str(job.target / "manifest.json")}

    batch.run(work, amount=lambda job: job.data.duration)
    batch.finish(f"{len(batch.done)} separated into {output}"
                 + (f", {len(batch.problems)} failed" if batch.problems else ""))
