"""The one training loop that ``train-sep`` and ``train-gen`` share (:meth:`TrainingRun.run`): resume,
gradient accumulation over micro-batches, clipping, the optimiser and scheduler step, the
finite-loss check, validation, ``metrics.csv`` rows, the progress bar, checkpoints, the time budget
and ``curves.png``; and what lies around it: the device and accelerate set-up, the run folder
(resolved config, ``checkpoint.pt``, ``metrics.csv``), checkpoint state for the optimiser, scheduler
and fp16 gradient scaler, and the per-step seeds that make a resumed run equal an unbroken one.

Each trainer subclasses :class:`TrainingRun`, keeps its own model, data and loss, and fills in the
hooks of the loop (:meth:`~TrainingRun.train_step` above all).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import yaml

from ..errors import ConfigError, ModelError
from ..fsutil import atomic_path
from .config import TrainingConfig
from .schedule import mixed_precision

FAULT_ENV = "MACS_FAULT_AFTER_STEP"  # testing hook: the process dies abruptly after this step
# ("log": right after metrics.csv has been opened, before the first step)


RESERVED_NAMES = ("default", "official", "hf")   # model names that are not paths, even where a folder has that name


def absolute_paths(cfg: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``cfg`` with the paths under ``keys`` (``section.key``) made absolute, so that the run's
    ``config.yaml`` means the same from any folder and a resume that names the same file another
    way changes nothing. Values that are not existing paths (hub ids, built-in names) stay."""
    import copy

    out = copy.deepcopy(cfg)
    for dotted in keys:
        section, key = dotted.split(".")
        value = out.get(section, {}).get(key)
        if not isinstance(value, str) or not value.strip() or value in RESERVED_NAMES \
                or value.startswith(("hf:", "official:")):
            continue
        path = os.path.expanduser(value)
        if os.path.lexists(path):
            out[section][key] = os.path.abspath(path)
    return out


def _same_setting(old: Any, new: Any) -> bool:
    if old == new:
        return True
    if isinstance(old, str) and isinstance(new, str) and old not in RESERVED_NAMES:
        return os.path.lexists(os.path.expanduser(new)) and \
            os.path.abspath(os.path.expanduser(old)) == os.path.abspath(os.path.expanduser(new))
    return False


def config_changes(saved_yaml: str | None, cfg: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str]:
    """``key (old -> new)`` for every setting that differs from the checkpoint's configuration,
    except those a resume is expected to change (the step budget, time budget, logging cadence).
    A setting the checkpoint predates (absent from it) counts as its default in ``defaults``."""
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
    for k, v in flat(defaults or {}).items():
        old.setdefault(k, v)
    return [f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in sorted(set(old) | set(new))
            if not _same_setting(old.get(k), new.get(k)) and not k.startswith(expected)]


@contextlib.contextmanager
def hold_run_folder(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder for the whole run (the launcher's first process
    only), so that a second run on the same folder is refused at once instead of interleaving
    its checkpoint, model and log with this one's (both used to finish 'successfully'). The folders
    created here (the run folder and any missing parents) that are left empty (the run failed before
    writing) are removed again."""
    import fcntl

    from ..errors import MacsError

    run_dir = Path(run_dir)
    if int(os.environ.get("RANK", "0")) != 0 or (os.path.lexists(run_dir) and not run_dir.is_dir()):
        yield                              # other processes; a path that is not a folder is reported later
        return
    made = []                              # the folders made here, the run folder first
    d = run_dir.absolute()
    while not os.path.lexists(d) and d != d.parent:
        made.append(d)
        d = d.parent
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise MacsError(f"{run_dir}: cannot create the run folder ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MacsError(f"{run_dir}: another macs run is using this run folder; wait for it to end or "
                            "choose another -o") from None
        except OSError:                    # a file system without locks: unprotected, as before
            pass
        yield
    finally:
        os.close(fd)
        for folder in made:                # each only if still empty, so the first non-empty one stops it
            try:
                os.rmdir(folder)
            except OSError:
                break


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


class TrainingRun:
    """Base of the two trainers. Subclasses set ``model``, ``optimizer``, ``scheduler`` and
    ``total_steps``, implement :meth:`save` (via :meth:`save_state`), :meth:`resume` (via
    :meth:`load_state`), :meth:`has_data`, :meth:`load_data` and :meth:`train_step`, and may fill in
    the other hooks of :meth:`run`."""
    config_type: type[TrainingConfig] = TrainingConfig   # the trainer's typed configuration

    label = "train"
    # what a run writes into its folder: all that --force removes (the user's other files stay)
    run_files: tuple[str, ...] = ("config.yaml", "checkpoint.pt", "metrics.csv", "curves.png")
    # the files that say a folder is a run's: the loose ones (metrics.csv, curves.png, samples/...)
    # are recognised by a light check of their content, so --force removes them only beside one of these
    anchor_files: tuple[str, ...] = ("config.yaml", "checkpoint.pt", "separator.safetensors",
                                     "adapter.safetensors")
    config_sections: frozenset[str] = frozenset()   # the top-level keys of this trainer's config
    path_keys: tuple[str, ...] = ()                  # config values that are file or folder paths

    @classmethod
    def file_kinds(cls) -> dict[str, Any]:
        from ..formats import run_file_kinds

        kinds = run_file_kinds(f"macs {cls.label} run's", cls.config_sections)
        return {name: kinds[name] for name in cls.run_files}

    @classmethod
    def check_run_folder(cls, run_dir: Path, resume: bool, force: bool) -> None:
        """The checks made before anything is loaded or written. Any of the run's own files in
        ``run_dir`` means a run is there: it needs ``--resume`` (which needs its checkpoint) or
        ``--force``; ``--force`` may remove only files recognised as this kind of run's, so a
        folder holding anything else under those names is refused."""
        from ..errors import MacsError

        run_dir = Path(run_dir)
        if resume and force:
            raise ConfigError("--resume and --force contradict each other")
        if os.path.lexists(run_dir) and not run_dir.is_dir():
            raise MacsError(f"{run_dir}: exists and is not a folder")
        present = [n for n in cls.run_files if os.path.lexists(run_dir / n)]
        if not present:
            return
        if not (resume or force):
            raise MacsError(f"{run_dir}: already holds a run ({', '.join(present)}): use --resume to continue "
                            "it or --force to start afresh")
        if resume and not (run_dir / "checkpoint.pt").exists():
            raise MacsError(f"{run_dir}: --resume needs its checkpoint.pt, which is not there (the run's "
                            f"{', '.join(present)} are); use --force to start a new run over them, or another -o")
        if force:
            kinds = cls.file_kinds()
            foreign = [n for n in present if (run_dir / n).is_symlink() or not kinds[n].owns(run_dir / n)]
            if foreign:
                raise MacsError(f"{run_dir / foreign[0]}: is not a file of a macs {cls.label} run, so --force "
                                "does not remove it (move it away or choose another -o)")
            if not any(n in cls.anchor_files for n in present):
                raise MacsError(f"{run_dir}: holds {', '.join(present)} but no config.yaml, checkpoint or model "
                                f"of a macs {cls.label} run beside them, so --force does not remove them "
                                "(move them away or choose another -o)")

    @classmethod
    def clear_run(cls, run_dir: Path) -> list[str]:
        """Delete this kind of run's own files from ``run_dir`` (those recognised as such; nothing
        else); returns their names. Safe to call from several processes at once."""
        removed = []
        kinds = cls.file_kinds()

        def ours(name: str) -> bool:
            path = Path(run_dir) / name
            return os.path.lexists(path) and not path.is_symlink() and kinds[name].owns(path)

        anchored = any(ours(n) for n in cls.anchor_files if n in kinds)
        for name in kinds:
            path = Path(run_dir) / name
            if not ours(name) or not (anchored or name in cls.anchor_files):
                continue
            if path.is_dir():
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(name)
        return removed

    def check_inputs_survive_force(self) -> None:
        """``--force`` removes the run's own files: refuse when one of them (or the run folder, for a
        model to start from) is an input of the new run, e.g. ``train.init=RUN`` to fine-tune the
        run's model in place, which would delete the model it starts from."""
        from ..errors import MacsError

        doomed = {os.path.realpath(self.run_dir / n): n for n in self.run_files
                  if os.path.lexists(self.run_dir / n)}
        if not doomed:
            return
        run_real = os.path.realpath(self.run_dir)
        for dotted in self.path_keys:
            section, key = dotted.split(".")
            value = self.cfg.get(section, {}).get(key)
            if not isinstance(value, str) or not value.strip() or value in RESERVED_NAMES:
                continue
            real = os.path.realpath(os.path.expanduser(value))
            hit = next((n for d, n in doomed.items() if real == d or real.startswith(d + os.sep)), None)
            if hit is None and real == run_real and key == "init":
                hit = "model"
            if hit is not None:
                raise MacsError(f"{dotted}={value}: is the run's own {hit} in {self.run_dir}, which --force "
                                "would delete; copy it elsewhere first and point to the copy, or choose another -o")

    def __init__(self, cfg: dict[str, Any], run_dir: Path, device: str | None, console, progress: bool,
                 cpu_mixed_precision: bool = True):
        from accelerate import Accelerator

        self.cfg, self.run_dir = absolute_paths(cfg, self.path_keys), Path(run_dir)
        self.config = self.config_type.from_dict(self.cfg)   # the typed, validated view of cfg
        self.console, self.show_progress = console, progress
        want = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {want}: CUDA is not available on this machine")
        dev = torch.device(want)
        precision = mixed_precision(self.config.train.precision, dev, cpu_allowed=cpu_mixed_precision)
        self.accel = Accelerator(cpu=dev.type == "cpu", mixed_precision=precision)
        self.device = self.accel.device
        self.step = 0
        self.total_steps: int | None = None
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None

    @property
    def config_defaults(self) -> dict[str, Any]:
        """The trainer's defaults (what a setting older runs lack counts as)."""
        return self.config_type.defaults()

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
        if fresh:
            self.check_inputs_survive_force()
        if self.accel.is_main_process:
            if fresh:
                self.clear_run(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.run_dir / "config.yaml", overwrite=True) as tmp:
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
        with atomic_path(self.checkpoint_path, overwrite=True) as tmp:   # stale temporaries are swept first
            torch.save(state, tmp)
        return True

    def load_state(self, restore: Callable[[dict[str, Any]], None]) -> bool:
        """Resume from ``checkpoint.pt`` if there is one: ``restore(state)`` puts back the trainer's
        own tensors, then the optimiser, scheduler, scaler and step follow. Any failure is one
        :class:`ModelError` line."""
        if not self.checkpoint_path.exists():
            return False
        try:
            from ..weights.safeload import torch_load_safely

            state = torch_load_safely(self.checkpoint_path, mmap=False)
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
        changed = config_changes(state.get("config"), self.cfg, self.config_defaults)
        if changed:
            from rich.markup import escape

            self._say(f"[yellow]warning: resuming with changed settings: {escape(', '.join(changed))} "
                      "(the run goes on with the new values)[/]")
        return True

    def open_log(self, columns: list[str]):
        """``metrics.csv`` opened for appending, holding the rows up to the current step (so a
        resumed log equals an unbroken one); (file, writer), or (None, None) off the main process.
        The kept rows are written to a temporary file that replaces the log atomically, so a crash
        or a full disk at this point leaves the old log, never an empty one."""
        if not self.accel.is_main_process:
            return None, None
        path = self.run_dir / "metrics.csv"
        rows = []
        if path.exists():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if _int_or_none(r.get("step")) is not None
                        and int(r["step"]) <= self.step]
        with atomic_path(path, overwrite=True) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        f = open(path, "a", newline="")
        if os.environ.get(FAULT_ENV) == "log":
            os._exit(137)
        return f, csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")

    # -- inside the loop -----------------------------------------------------------------------
    def seed_micro_batch(self, gen: torch.Generator, micro: int) -> None:
        """Seed the batch generator and torch's global generator (dropout) from (seed, process,
        step, micro-batch): the stream after a resume is the one an unbroken run would see."""
        accum = self.config.optim.grad_accum
        seed = (self.config.train.seed * 1_000_003 + self.accel.process_index * 7_919
                + self.step * accum + micro) % (2 ** 62)
        gen.manual_seed(seed)
        torch.manual_seed(seed)

    def deadline(self) -> float | None:
        """Wall-clock time at which ``train.max_minutes`` runs out (None: no budget)."""
        minutes = self.config.train.max_minutes
        return time.time() + 60 * minutes if minutes else None

    @staticmethod
    def past(deadline: float | None) -> bool:
        return deadline is not None and time.time() > deadline

    def end_of_step(self, total: int, out_of_time: bool, stopping: bool = False) -> bool:
        """Checkpoint when due (every ``checkpoint.every`` steps, at the end, before stopping), obey
        the kill hook, and say whether the loop must stop now (time budget or ``stopping``)."""
        if self.step % self.config.checkpoint.every == 0 or self.step == total or out_of_time or stopping:
            self.save()
            self.accel.wait_for_everyone()
        fault = _int_or_none(os.environ.get(FAULT_ENV)) or 0
        if fault and self.step == fault:
            os._exit(137)  # simulate a kill (no cleanup, no final save)
        if out_of_time:
            self._say(f"time budget reached at step {self.step}")
        return out_of_time or stopping

    def save(self) -> None:  # pragma: no cover - every trainer defines it
        raise NotImplementedError

    def resume(self) -> bool:  # pragma: no cover - every trainer defines it
        raise NotImplementedError

    # -- the loop ------------------------------------------------------------------------------
    def run(self, resume: bool = False, fresh: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        """Train to ``total_steps`` (or stop after step ``stop_after``, saving, as an interrupted
        run would have); returns :meth:`summary`."""
        if self.accel.is_main_process:   # the others would find the main process's first files
            self.check_run_folder(self.run_dir, resume, fresh)
        if resume:
            self._say(f"resumed from step {self.step}" if self.resume()
                      else f"[yellow]no run to resume in {self.run_dir}: starting a new one[/]")
        if not self.has_data():
            self.load_data()
        self.start_run_folder(fresh)
        self.model, self.optimizer = self.accel.prepare(self.model, self.optimizer)
        total, accum = self.total_steps, self.config.optim.grad_accum
        gen = torch.Generator(device=self.device)
        deadline = self.deadline()
        log_f, writer = self.open_log(self.columns())
        start_time = time.time()
        self.before_loop()
        progress = self.progress_bar()
        try:
            with progress:
                task = progress.add_task("steps", total=total, completed=self.step, info="")
                while self.step < total:
                    self.begin_step()
                    parts = None
                    for micro in range(accum):
                        self.seed_micro_batch(gen, micro)   # the batch draws and the dropout
                        last = micro == accum - 1
                        with self.accel.no_sync(self.model) if not last else contextlib.nullcontext():
                            objective, values = self.train_step(gen, micro)
                            self.accel.backward(objective / accum)
                        parts = values / accum if parts is None else parts + values / accum
                    self.before_optimizer_step()
                    self.clip_gradients()
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    parts = self.accel.reduce(parts, reduction="mean")
                    loss = self.step_loss(parts)
                    if not math.isfinite(loss):
                        raise ConfigError(f"training diverged at step {self.step} (loss {loss}); lower optim.lr")
                    out_of_time = self.past(deadline)
                    stopping = stop_after is not None and self.step >= stop_after
                    val = self.validate(total, out_of_time or stopping)
                    self.accel.wait_for_everyone()
                    if writer is not None and (self.step % self.config.log.every == 0 or val
                                               or self.step == total):
                        writer.writerow({"step": self.step, "lr": self.scheduler.get_last_lr()[0], "loss": loss,
                                         "seconds": round(time.time() - start_time, 3),
                                         **self.log_fields(parts, val)})
                        log_f.flush()
                    progress.update(task, completed=self.step, info=self.progress_info(loss))
                    self.after_step(total)
                    if self.end_of_step(total, out_of_time, stopping):
                        break
        finally:
            if log_f is not None:
                log_f.close()
        if self.accel.is_main_process:
            self.plot(self.run_dir / "metrics.csv", self.run_dir / "curves.png")
        return self.summary()

    # -- the loop's hooks ----------------------------------------------------------------------
    def has_data(self) -> bool:  # pragma: no cover - every trainer defines it
        raise NotImplementedError

    def load_data(self) -> None:  # pragma: no cover - every trainer defines it
        raise NotImplementedError

    def columns(self) -> list[str]:
        """The columns of ``metrics.csv``."""
        return ["step", "lr", "loss", "seconds"]

    def before_loop(self) -> None:
        """Once, after the model and optimiser are prepared and before the first step."""

    def begin_step(self) -> None:
        """Before the micro-batches of a step (e.g. the loss weights of its epoch)."""

    def train_step(self, gen: torch.Generator, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-batch (draws from ``gen``, seeded for this step and micro-batch): the objective
        to minimise (a scalar with gradients, before the division by ``optim.grad_accum``) and the
        logged values, a 1-D tensor without gradients (one per loss term)."""
        raise NotImplementedError  # pragma: no cover - every trainer defines it

    def step_loss(self, parts: torch.Tensor) -> float:
        """The step's loss from the logged values averaged over micro-batches and processes."""
        return float(parts.sum())

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def before_optimizer_step(self) -> None:
        """After the gradients of a step are in, before they are clipped."""

    def clip_gradients(self) -> None:
        """``optim.clip_grad`` (0: off) by ``optim.clip_mode`` (norm or value)."""
        optim = self.config.optim
        if not optim.clip_grad:
            return
        params = self.trained_parameters()
        if optim.clip_mode == "value":
            self.accel.clip_grad_value_(params, optim.clip_grad)
        else:
            self.accel.clip_grad_norm_(params, optim.clip_grad)

    def validate(self, total: int, ending: bool) -> dict[str, float]:
        """Validation results when due this step (``ending``: the run stops after it), else {}."""
        return {}

    def log_fields(self, parts: torch.Tensor, val: dict[str, float]) -> dict[str, Any]:
        """A ``metrics.csv`` row's fields beside step, lr, loss and seconds."""
        return {}

    def progress_info(self, loss: float) -> str:
        return f"loss {loss:.4f}"

    def after_step(self, total: int) -> None:
        """After the step is logged, before the checkpoint (e.g. sample images)."""

    def plot(self, metrics_csv: Path, out_png: Path) -> None:
        """Draw ``curves.png`` from ``metrics.csv``."""

    def summary(self) -> dict[str, Any]:
        """What :meth:`run` returns."""
        return {"step": self.step, "run_dir": str(self.run_dir)}
