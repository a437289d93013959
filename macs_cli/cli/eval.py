"""``macs eval``: image-set metrics (FID, KID, CLIP-FID, AIS, IIS) or separation metrics -> a report.

    macs eval --dataset llp-multi --pred gen/ --gt frames/ --audio audio/ -o report/ --folds 5
    macs eval --task separation --pred stems/ --ref refs/ -o report/

Writes ``REPORT_DIR/report.json``, ``report.md`` (the paper's table layout) and ``report.png``;
embeddings are cached by file content in ``REPORT_DIR/cache/`` (``--cache-dir``) so a rerun only
embeds new or changed files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from .common import (DEVICE_HELP, JSON_HELP, Emitter, console, fail, one_line_errors, resolve_device, say_error,
                     say_warning,
                     threads_for_cpu)

TASKS = ("images", "separation")


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


_UNPAIRED = {
    "images": (("unpaired_pred", "generated images without a ground-truth match"),
               ("unpaired_gt", "ground-truth images without a generated image"),
               ("without_audio", "pairs without audio (left out of AIS)")),
    "separation": (("unpaired_pred", "stem folders without a reference folder"),
                   ("unpaired_ref", "reference folders without stems")),
}


def _report_unpaired(summary: dict, task: str) -> None:
    """One warning line per kind of unpaired file (the full lists go to report.json)."""
    for key, what in _UNPAIRED[task]:
        items = summary.get(key) or []
        if items:
            shown = ", ".join(Path(str(x)).name for x in items[:3]) + (", ..." if len(items) > 3 else "")
            say_warning(f"{len(items)} {what} ({shown})")


def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Generated images (task images) or stem folders "
                                                   "<name>/stem_XX.wav (task separation)."),
    output: Path = typer.Option(..., "-o", "--output", help="Report folder: report.json, report.md, "
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

    from ..errors import ConfigError, MacsError
    from ..evaluation import encoders as enc_mod
    from ..evaluation.embedding import EmbeddingCache
    from ..evaluation.report import check_report_dir, write_report

    with one_line_errors():
        try:
            t = task.strip().lower()
            if t not in TASKS:
                raise ConfigError(f"--task {task}: expected images or separation")
            if output.exists() and not output.is_dir():
                raise MacsError(f"{output}: output path exists and is not a folder")
            check_report_dir(output, force)
            label = name or Path(pred).resolve().name
            if t == "separation":
                from ..evaluation.separation_eval import evaluate_separation, pair_separation

                pairing = pair_separation(pred, ref)
                _report_unpaired({"unpaired_pred": pairing.unpaired_pred,
                                  "unpaired_ref": pairing.unpaired_ref}, t)
                with _progress_bar(quiet) as progress:
                    report = evaluate_separation(pairing, sample_rate, mixture.strip().lower(),
                                                 _stage_callback(progress), name=label)
            else:
                from ..evaluation.image_eval import ImageEvalOptions, evaluate_images, parse_metrics
                from ..evaluation.pairing import check_dataset, pair_files

                chosen = parse_metrics(metrics)
                ds = check_dataset(dataset)
                opts = ImageEvalOptions(metrics=chosen, folds=folds, batch_size=batch_size,
                                        num_workers=workers, kid_seed=seed,
                                        ais_average=ais_average.strip().lower()).validate()
                pairing = pair_files(ds, pred, gt, audio, want_audio="ais" in chosen)
                if metrics is None and "ais" in chosen and not any(p.audio for p in pairing.pairs):
                    if audio is not None and pairing.unpaired_audio:
                        console.print(f"[yellow]note:[/] none of the {len(pairing.unpaired_audio)} audio files in "
                                      f"{escape(str(audio))} matches an image's name, AIS skipped", highlight=False)
                    else:
                        console.print("[yellow]note:[/] no audio found, AIS skipped (pass --audio DIR)",
                                      highlight=False)
                    opts.metrics = [m for m in chosen if m != "ais"]
                    pairing.without_audio = []
                _report_unpaired(pairing.summary(), t)
                opts.device = resolve_device(device)
                if opts.device == "cpu":
                    threads_for_cpu()
                encoders = enc_mod.build_encoders(opts.metrics, opts.device, weights_dir)
                cache = EmbeddingCache(None if no_cache else (cache_dir or output / "cache"))
                with _progress_bar(quiet) as progress:
                    report = evaluate_images(pairing, encoders, opts, cache,
                                             _stage_callback(progress), name=label)
            for skipped in (report["pairing"].get("skipped") or []) if t == "separation" else []:
                if skipped.get("kind") == "error":  # report still written; exit 1
                    say_error(f"{skipped['name']}: skipped ({skipped['reason']})")
                else:
                    say_warning(f"{skipped['name']}: skipped ({skipped['reason']})")
            paths = write_report(output, report, force=force)
        except torch.OutOfMemoryError:
            fail("out of memory on the device (try a smaller --batch-size)")
    emit = Emitter(as_json)
    for name, path in paths.items():
        emit(path, kind=name.split(".")[1], task=report["task"])
    if not quiet:
        _print_summary(report, paths["report.md"])
    if report["pairing"].get("failed"):
        raise typer.Exit(1)


def _print_summary(report: dict, md: Path) -> None:
    from ..evaluation.report import DECIMALS

    if report["task"] == "images":
        res = report["results"]
        std = (report.get("folds") or {}).get("std") or {}
        parts = []
        for c in report["columns"]:
            if res.get(c) is not None:
                d = DECIMALS.get(c, 4)
                parts.append(f"{c} {res[c]:.{d}f}" + (f"±{std[c]:.{d}f}" if std.get(c) is not None
                                                       else ""))
        console.print("  ".join(parts), highlight=False)
    else:
        r = report["results"]
        g, o = r["sisdri_grouped"], r["sisdri_one_to_one"]
        console.print(f"SI-SDRi best grouping: mean {_num(g['mean'])} dB, median {_num(g['median'])}"
                      f" dB; best one-to-one: mean {_num(o['mean'])} dB, median {_num(o['median'])} dB"
                      f" ({report['pairing']['scored']} items)", highlight=False)
    console.print(f"report: {md}", highlight=False)


def _num(x) -> str:
    return "–" if x is None else f"{x:.2f}"
