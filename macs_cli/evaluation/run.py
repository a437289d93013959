"""One ``macs eval`` run: pair the files, drop what cannot be scored (AIS without audio), score,
and say what happened (unpaired files, skipped items, the summary line). The verb only parses
options, prints what :func:`evaluate` reports through its callbacks and writes the report."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, MacsError

TASKS = ("images", "separation")

UNPAIRED = {
    "images": (("unpaired_pred", "generated images without a ground-truth match"),
               ("unpaired_gt", "ground-truth images without a generated image"),
               ("without_audio", "pairs without audio (left out of AIS)")),
    "separation": (("unpaired_pred", "stem folders without a reference folder"),
                   ("unpaired_ref", "reference folders without stems")),
}


@dataclass
class EvalRequest:
    """What to evaluate (the options of ``macs eval``)."""

    task: str
    pred: Path
    output: Path
    dataset: str = "folder"
    gt: Path | None = None
    audio: Path | None = None
    ref: Path | None = None
    metrics: str | None = None
    folds: int = 1
    batch_size: int = 32
    workers: int = 0
    weights_dir: Path | None = None
    cache_dir: Path | None = None      # None: output/cache
    no_cache: bool = False
    seed: int = 0
    ais_average: str = "clips"
    name: str | None = None
    sample_rate: int = 16000
    mixture: str = "auto"
    force: bool = False

    def check(self) -> str:
        """The task, once the output folder may take a report (checked before any work)."""
        from .report import check_report_dir

        t = self.task.strip().lower()
        if t not in TASKS:
            raise ConfigError(f"--task {self.task}: expected images or separation")
        if self.output.exists() and not self.output.is_dir():
            raise MacsError(f"{self.output}: output path exists and is not a folder")
        check_report_dir(self.output, self.force)
        return t


def unpaired_warnings(summary: dict, task: str) -> list[str]:
    """One line per kind of unpaired file (the full lists go to report.json)."""
    out = []
    for key, what in UNPAIRED[task]:
        items = summary.get(key) or []
        if items:
            shown = ", ".join(Path(str(x)).name for x in items[:3]) + (", ..." if len(items) > 3 else "")
            out.append(f"{len(items)} {what} ({shown})")
    return out


Stages = Callable[[], AbstractContextManager]   # a context giving the callback stage(name, done, total)


def evaluate(req: EvalRequest, stages: Stages, warn: Callable[[str], None], note: Callable[[str], None],
             device: Callable[[], str]) -> dict:
    """The report of ``req`` (not written); ``device()`` is asked only when a network runs."""
    t = req.check()
    label = req.name or Path(req.pred).resolve().name
    if t == "separation":
        from .separation_eval import evaluate_separation, pair_separation

        pairing = pair_separation(req.pred, req.ref)
        for line in unpaired_warnings({"unpaired_pred": pairing.unpaired_pred,
                                       "unpaired_ref": pairing.unpaired_ref}, t):
            warn(line)
        with stages() as stage:
            return evaluate_separation(pairing, req.sample_rate, req.mixture.strip().lower(), stage, name=label)
    from . import encoders as enc_mod
    from .embedding import EmbeddingCache
    from .image_eval import ImageEvalOptions, evaluate_images, parse_metrics
    from .pairing import check_dataset, pair_files

    chosen = parse_metrics(req.metrics)
    ds = check_dataset(req.dataset)
    opts = ImageEvalOptions(metrics=chosen, folds=req.folds, batch_size=req.batch_size, num_workers=req.workers,
                            kid_seed=req.seed, ais_average=req.ais_average.strip().lower()).validate()
    pairing = pair_files(ds, req.pred, req.gt, req.audio, want_audio="ais" in chosen)
    if req.metrics is None and "ais" in chosen and not any(p.audio for p in pairing.pairs):
        if req.audio is not None and pairing.unpaired_audio:
            note(f"none of the {len(pairing.unpaired_audio)} audio files in {req.audio} matches an image's "
                 "name, AIS skipped")
        else:
            note("no audio found, AIS skipped (pass --audio DIR)")
        opts.metrics = [m for m in chosen if m != "ais"]
        pairing.without_audio = []
    for line in unpaired_warnings(pairing.summary(), t):
        warn(line)
    opts.device = device()
    encoders = enc_mod.build_encoders(opts.metrics, opts.device, req.weights_dir)
    cache = EmbeddingCache(None if req.no_cache else (req.cache_dir or req.output / "cache"))
    with stages() as stage:
        return evaluate_images(pairing, encoders, opts, cache, stage, name=label)


def skipped_items(report: dict) -> list[tuple[bool, str]]:
    """(is an error, line) per item a separation report skipped; an error still writes the report
    but makes the run fail."""
    if report["task"] != "separation":
        return []
    return [(s.get("kind") == "error", f"{s['name']}: skipped ({s['reason']})")
            for s in report["pairing"].get("skipped") or []]


def summary_lines(report: dict, md: Path) -> list[str]:
    """What the verb prints at the end: the headline numbers and where the report is."""
    from .report import DECIMALS

    if report["task"] == "images":
        res = report["results"]
        std = (report.get("folds") or {}).get("std") or {}
        parts = []
        for c in report["columns"]:
            if res.get(c) is not None:
                d = DECIMALS.get(c, 4)
                parts.append(f"{c} {res[c]:.{d}f}" + (f"±{std[c]:.{d}f}" if std.get(c) is not None else ""))
        first = "  ".join(parts)
    else:
        r = report["results"]
        g, o = r["sisdri_grouped"], r["sisdri_one_to_one"]
        first = (f"SI-SDRi best grouping: mean {_num(g['mean'])} dB, median {_num(g['median'])} dB; best "
                 f"one-to-one: mean {_num(o['mean'])} dB, median {_num(o['median'])} dB "
                 f"({report['pairing']['scored']} items)")
    return [first, f"report: {md}"]


def _num(x: Any) -> str:
    return "–" if x is None else f"{x:.2f}"


__all__ = ["EvalRequest", "TASKS", "UNPAIRED", "evaluate", "skipped_items", "summary_lines", "unpaired_warnings"]
