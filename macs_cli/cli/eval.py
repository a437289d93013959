"""``macs eval``: image-set metrics (FID, KID, CLIP-FID, AIS, IIS) or separation metrics -> a report.

    macs eval --dataset llp-multi --pred gen/ --gt frames/ --audio audio/ -o report/ --folds 5
    macs eval --task separation --pred stems/ --ref refs/ -o report/

Writes ``REPORT_DIR/report.json``, ``report.md`` (the paper's table layout) and ``report.png``;
embeddings are cached by file content in ``REPORT_DIR/cache/`` (``--cache-dir``) so a rerun only
embeds new or changed files.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from .common import (output_path, DEVICE_HELP, JSON_HELP, Emitter, console, fail, one_line_errors, resolve_device, say_error,
                     say_warning, threads_for_cpu)


def _progress_bar(quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]eval[/] {task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console, disable=quiet, transient=False)


def _stage_callback(progress):
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=max(total, 1))
        progress.update(tasks[stage], completed=done, total=max(total, 1))

    return update


def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Generated images (task images) or stem folders "
                                                   "<name>/stem_XX.wav (task separation)."),
    output: Path = typer.Option(..., "-o", "--output", parser=output_path, help="Report folder: report.json, report.md, "
                                                            "report.png (and cache/)."),
    task: str = typer.Option("images", "--task", help="images (FID, KID, CLIP-FID, AIS, IIS) or "
                                                       "separation (SI-SDRi)."),
    dataset: str = typer.Option("folder", "--dataset",
                                help="File naming: landscape, llp-multi, audioset-eval or folder "
                                     "(same name in every folder)."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="Ground-truth frames (task images)."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Audio clips for AIS (landscape: "
                                                               "default --gt)."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Reference sources <name>/*.wav "
                                                           "(task separation)."),
    metrics: Optional[str] = typer.Option(None, "--metrics",
                                          help="Comma list of fid, kid, clip-fid, ais, iis "
                                               "(default: all; ais only when audio is found)."),
    folds: int = typer.Option(1, "--folds", help="K-fold cross-validation by clip id: mean and "
                                                 "std over K folds."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per forward pass."),
    workers: int = typer.Option(0, "--workers", help="Image decoding processes (0: in the main one)."),
    weights_dir: Optional[Path] = typer.Option(
        None, "--weights-dir", envvar="MACS_EVAL_WEIGHTS",
        help="Folder with inception-2015-12-05.pt, ViT-B-32.pt, Wav2CLIP.pt (else the libraries' "
             "caches: /tmp, ~/.cache/clip, ~/.cache/torch/hub/checkpoints). Nothing is downloaded."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir",
                                             help="Embedding cache (default: OUTPUT/cache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Keep no embedding cache."),
    seed: int = typer.Option(0, "--seed", help="Seed of KID's random subsets."),
    ais_average: str = typer.Option("clips", "--ais-average", help="AIS/AIS-z averaged over audio clips "
                                    "(the official ais.py, the paper's table) or over pairs (frames)."),
    name: Optional[str] = typer.Option(None, "--name", help="Row label in the table "
                                                            "(default: the --pred folder's name)."),
    sample_rate: int = typer.Option(16000, "--sample-rate", help="Common rate for separation "
                                                                 "metrics (Hz)."),
    mixture: str = typer.Option("auto", "--mixture", help="Separation: the mixture of SI-SDRi: "
                                                          "auto (manifest source, else sum of "
                                                          "references), refs or manifest."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing report."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Evaluate generated images against ground-truth frames (and audio), or separated stems."""
    import torch
    from rich.text import Text

    from ..evaluation.report import write_report
    from ..evaluation.run import EvalRequest, evaluate as run_evaluation, skipped_items, summary_lines

    req = EvalRequest(task, pred, output, dataset, gt, audio, ref, metrics, folds, batch_size, workers, weights_dir,
                      cache_dir, no_cache, seed, ais_average, name, sample_rate, mixture, force)

    @contextmanager
    def stages():
        with _progress_bar(quiet) as progress:
            yield _stage_callback(progress)

    def device_for_networks() -> str:
        dev = resolve_device(device)
        if dev == "cpu":
            threads_for_cpu()
        return dev

    def note(msg: str) -> None:
        console.print(Text.assemble(("note:", "yellow"), " ", msg), highlight=False)

    with one_line_errors():
        try:
            report = run_evaluation(req, stages, say_warning, note, device_for_networks)
            for is_error, line in skipped_items(report):   # the report is still written; an error exits 1
                (say_error if is_error else say_warning)(line)
            paths = write_report(output, report, force=force)
        except torch.OutOfMemoryError:
            fail("out of memory on the device (try a smaller --batch-size)")
    emit = Emitter(as_json)
    for part, path in paths.items():
        emit(path, kind=part.split(".")[1], task=report["task"])
    if not quiet:
        for line in summary_lines(report, paths["report.md"]):
            console.print(line, highlight=False, markup=False)
    if report["pairing"].get("failed"):
        raise typer.Exit(1)
