"""What ``train-sep`` and ``train-gen`` share around their loops: the device and accelerate set-up,
the run folder (resolved config, ``checkpoint.pt``, ``metrics.csv``), checkpoint state for the
optimiser, scheduler and fp16 gradient scaler, the per-step seeds that make a resumed run equal an
unbroken one, the progress bar and the end-of-step bookkeeping (checkpoint cadence, time budget,
the test hook that kills the process).

Each trainer subclasses :class:`TrainingRun` and keeps its own model, data and loss.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from ..errors import ConfigError, ModelError
from ..fsutil import atomic_path
from .schedule import mixed_precision

FAULT_ENV = "MACS_FAULT_AFTER_STEP"  # testing hook: the process dies abruptly after this step


def config_changes(saved_yaml: str | None, cfg: dict[str, Any]) -> list[str]:
    """``key (old -> new)`` for every setting that differs from the checkpoint's configuration,
    except those a resume is expected to change (the step budget, time budget, logging cadence)."""
    if not saved_yaml:
        return []
    try:
        saved = yaml.safe_load(saved_yaml)
    except yaml.YAMLError:
        return []
    if not isinstance(saved, dict):
        return []

    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    expected = ("train.steps", "train.epochs", "train.max_minutes", "checkpoint.", "log.", "sample.")
    old, new = flat(saved), flat(cfg)
    return [f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and not k.startswith(expected)]


class TrainingRun:
    """Base of the two trainers. Subclasses set ``optimizer`` and ``scheduler`` and implement
    :meth:`save` (via :meth:`save_state`) and :meth:`resume` (via :meth:`load_state`)."""

    label = "train"
    # what a run writes into its folder: all that --force removes (the user's other files stay)
    run_files: tuple[str, ...] = ("config.yaml", "checkpoint.pt", "metrics.csv", "curves.png")

    @classmethod
    def clear_run(cls, run_dir: Path) -> list[str]:
        """Delete this kind of run's own files from ``run_dir`` (nothing else); returns their names.
        Safe to call from several processes at once."""
        import shutil

        removed = []
        for name in cls.run_files:
            path = Path(run_dir) / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
            elif path.exists() or path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(name)
        return removed

    def __init__(self, cfg: dict[str, Any], run_dir: Path, device: str | None, console, progress: bool,
                 cpu_mixed_precision: bool = True):
        from accelerate import Accelerator

        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.console, self.show_progress = console, progress
        want = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {want}: CUDA is not available on this machine")
        dev = torch.device(want)
        precision = mixed_precision(cfg["train"]["precision"], dev, cpu_allowed=cpu_mixed_precision)
        self.accel = Accelerator(cpu=dev.type == "cpu", mixed_precision=precision)
        self.device = self.accel.device
        self.step = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None

    # -- messages ------------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        if self.console is not None and self.accel.is_main_process:
            self.console.print(msg, highlight=False)

    def progress_bar(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                        disable=not (self.show_progress and self.accel.is_main_process), console=self.console)

    # -- the run folder ------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def start_run_folder(self, fresh: bool = False) -> None:
        """Create the run folder and write the resolved configuration (main process only); with
        ``fresh`` (``--force``) first remove an earlier run's files. Called once the data and any
        checkpoint have loaded, so a run that fails before training leaves the folder as it was."""
        if self.accel.is_main_process:
            if fresh:
                self.clear_run(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.run_dir / "config.yaml") as tmp:
                tmp.write_text(yaml.safe_dump(self.cfg, sort_keys=False))
        self.accel.wait_for_everyone()

    def save_state(self, state: dict[str, Any]) -> bool:
        """Write ``checkpoint.pt`` atomically: ``state`` (the trainer's tensors) plus the optimiser,
        scheduler, gradient-scaler state, step and configuration. Only the main process writes;
        returns whether this one did."""
        if not self.accel.is_main_process:
            return False
        state = {**state, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "step": self.step, "config": yaml.safe_dump(self.cfg)}
        scaler = getattr(self.accel, "scaler", None)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)
        return True

    def load_state(self, restore: Callable[[dict[str, Any]], None]) -> bool:
        """Resume from ``checkpoint.pt`` if there is one: ``restore(state)`` puts back the trainer's
        own tensors, then the optimiser, scheduler, scaler and step follow. Any failure is one
        :class:`ModelError` line."""
        if not self.checkpoint_path.exists():
            return False
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            restore(state)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            scaler = getattr(self.accel, "scaler", None)
            if scaler is not None and "scaler" in state:
                scaler.load_state_dict(state["scaler"])
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"{self.checkpoint_path}: cannot resume ({str(exc).splitlines()[0]})") from None
        self.step = int(state["step"])
        changed = config_changes(state.get("config"), self.cfg)
        if changed:
            from rich.markup import escape

            self._say(f"[yellow]warning: resuming with changed settings: {escape(', '.join(changed))} "
                      "(the run goes on with the new values)[/]")
        return True

    def open_log(self, columns: list[str]):
        """``metrics.csv`` opened for writing, keeping the rows up to the current step (so a resumed
        log equals an unbroken one); (file, writer), or (None, None) off the main process."""
        if not self.accel.is_main_process:
            return None, None
        path = self.run_dir / "metrics.csv"
        rows = []
        if path.exists():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        f = open(path, "w", newline="")
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        return f, writer

    # -- inside the loop -----------------------------------------------------------------------
    def seed_micro_batch(self, gen: torch.Generator, micro: int) -> None:
        """Seed the batch generator and torch's global generator (dropout) from (seed, process,
        step, micro-batch): the stream after a resume is the one an unbroken run would see."""
        accum = self.cfg["optim"]["grad_accum"]
        seed = (self.cfg["train"]["seed"] * 1_000_003 + self.accel.process_index * 7_919
                + self.step * accum + micro) % (2 ** 62)
        gen.manual_seed(seed)
        torch.manual_seed(seed)

    def deadline(self) -> float | None:
        """Wall-clock time at which ``train.max_minutes`` runs out (None: no budget)."""
        minutes = self.cfg["train"]["max_minutes"]
        return time.time() + 60 * minutes if minutes else None

    @staticmethod
    def past(deadline: float | None) -> bool:
        return deadline is not None and time.time() > deadline

    def end_of_step(self, total: int, out_of_time: bool, stopping: bool = False) -> bool:
        """Checkpoint when due (every ``checkpoint.every`` steps, at the end, before stopping), obey
        the kill hook, and say whether the loop must stop now (time budget or ``stopping``)."""
        if self.step % self.cfg["checkpoint"]["every"] == 0 or self.step == total or out_of_time or stopping:
            self.save()
            self.accel.wait_for_everyone()
        fault = int(os.environ.get(FAULT_ENV, "0") or 0)
        if fault and self.step == fault:
            os._exit(137)  # simulate a kill (no cleanup, no final save)
        if out_of_time:
            self._say(f"time budget reached at step {self.step}")
        return out_of_time or stopping

    def save(self) -> None:  # pragma: no cover - every trainer defines it
        raise NotImplementedError
