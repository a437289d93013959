"""One batch runner for the verbs that take many inputs: output naming clashes, inputs that would
be overwritten, ``--force`` / ``--skip-existing``, this process's share when several are launched,
the progress bar, Ctrl-C, and the per-input error report (the other inputs go on)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import typer

from ..errors import ConfigError, MacsError
from ..fsutil import plan_output
from .common import (Emitter, console, report_interrupt, say_error, say_note, shard_note,
                     world)


@dataclass
class Job:
    name: str                 # shown in the progress bar and in messages
    where: Any                # the input, as messages name it
    target: Path              # the main output file
    force: bool               # what plan_output decided
    data: Any = None          # what the verb needs to do the work
    shown: str | None = None  # the progress bar's name for it (default: name)
    advance: Callable[[float], None] = lambda amount: None   # with Batch.run(amount=...): progress made


@dataclass
class Batch:
    """Plan the outputs of many inputs (:meth:`add`), then :meth:`run` the work of each."""

    verb: str
    parts: Callable[[Path], list]          # target -> [(path, OutputKind)], the main file first
    force: bool = False
    skip_existing: bool | None = None      # None: the verb has no --skip-existing
    emit: Emitter = field(default_factory=Emitter)
    quiet: bool = False
    inputs: set = field(default_factory=set)   # resolved paths of every input file
    problems: list = field(default_factory=list)
    jobs: list = field(default_factory=list)
    claimed: dict = field(default_factory=dict)
    done: list = field(default_factory=list)
    planned: int = 0                           # inputs added so far (this process's: every WORLD_SIZE-th)

    def check_flags(self) -> None:
        if self.force and self.skip_existing:
            raise ConfigError("--force and --skip-existing contradict each other")

    def add(self, name: str, where: Any, target: Path, data: Any = None,
            skipped: Callable[[Path], dict | list] | None = None, check: Callable[[], Any] | None = None,
            shown: str | None = None) -> None:
        """Plan one input's output ``target``; a clash, an existing output or a MacsError of
        ``check()`` (e.g. probing the input; its result becomes ``data``) is a problem of this input
        only. ``skipped(target)``: the stdout record of an output --skip-existing keeps, or a list
        of ``(path, record)`` when the output is several files a script reads (generate's images)."""
        rank, size, _ = world()
        index, self.planned = self.planned, self.planned + 1
        if index % size != rank:      # another process's input: only its name is claimed here
            self.claimed.setdefault(target, where)
            return
        if target in self.claimed:
            self.problems.append(f"{where}: its output {target} clashes with that of {self.claimed[target]} "
                                 f"({self.verb} them into separate folders)")
            return
        self.claimed[target] = where
        parts = self.parts(target)
        clash = next((p for p, _ in parts if Path(p).resolve() in self.inputs), None)
        if clash is not None:
            self.problems.append(f"{where}: its output {clash} is one of the inputs (choose another -o)")
            return
        try:
            if check is not None:
                data = check()
            action, job_force = plan_output(parts, self.force, self.skip_existing)
        except MacsError as exc:
            self.problems.append(str(exc))
            return
        if action == "skip":
            if not self.quiet:
                say_note(f"skip {where} ({target} exists)")
            kept = skipped(target) if skipped else {}
            for path, record in kept if isinstance(kept, list) else [(target, kept)]:
                self.emit(path, **record, skipped=True)
            return
        self.jobs.append(Job(name, where, target, job_force, data, shown))

    def report(self, problems: list) -> None:
        """Problems found before the inputs are added (a missing input ...): told by the first process only."""
        if world()[0] == 0:
            self.problems += list(problems)

    def share(self) -> list[Job]:
        """This process's jobs: under a launcher (accelerate, torchrun) each process takes every
        WORLD_SIZE-th input from RANK on, counted over all inputs given, so the shares do not depend
        on what another process has written meanwhile; each input's problems are told by its owner."""
        return self.jobs

    def run(self, work: Callable[[Job], dict | None], progress: bool = True,
            amount: Callable[[Job], float] | None = None, unit: str = "s of audio", decimals: int = 1) -> None:
        """``work(job)`` for each job; its returned dict is the stdout record of ``job.target``
        (None: nothing printed). A MacsError or OSError fails that input only. The bar counts
        inputs, or with ``amount(job)`` (e.g. its seconds of audio) that many ``unit``, which
        ``work`` reports as it goes through ``job.advance(amount_done)``."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from ..fsutil import describe_os_error

        count = MofNCompleteColumn() if amount is None else \
            TextColumn(f"{{task.completed:.{decimals}f}}/{{task.total:.{decimals}f}} {unit}")
        size = amount or (lambda job: 1)
        with report_interrupt(self.done, len(self.jobs)), \
                Progress(TextColumn(f"[bold]{self.verb}[/] {{task.fields[name]}}"), BarColumn(), count,
                         TimeRemainingColumn(), console=console, disable=self.quiet or not progress) as bar:
            total = len(self.jobs) if amount is None else max(sum(size(j) for j in self.jobs), 1e-9)
            task = bar.add_task("inputs", total=total, name="")
            for job in self.jobs:
                bar.update(task, name=job.shown or job.name)
                start = bar.tasks[0].completed
                job.advance = lambda done: bar.advance(task, done)
                try:
                    record = work(job)
                    self.done.append(job.name)
                    if record is not None:
                        self.emit(job.target, **record)
                except MacsError as exc:
                    self.problems.append(str(exc))
                except OSError as exc:
                    self.problems.append(describe_os_error(exc, job.target))
                bar.update(task, completed=start + size(job))

    def finish(self, summary: str | None = None) -> None:
        """Report every problem (one ``error:`` line each), the summary line, exit 1 if any failed."""
        for msg in self.problems:
            say_error(msg)
        if summary is not None and not self.quiet:
            console.print(summary + shard_note(), highlight=False, markup=False)   # paths and "[process i/n]" as they are
        if self.problems:
            raise typer.Exit(1)


def output_folder_or_file(output: Path, names: Iterable[str], suffix: str, single: bool) -> list[Path]:
    """Targets: ``output`` itself for one input written to a file, else ``output/<name><suffix>``."""
    from .common import fail

    names = list(names)
    if not single and output.exists() and not output.is_dir():
        fail(f"{output}: exists and is not a folder" + (" (several inputs need an output folder)"
                                                       if len(names) > 1 else f" (give OUT{suffix} or a folder)"))
    return [output if single else output / f"{n}{suffix}" for n in names]


def positive(name: str, value: int | None) -> None:
    """An option that must be >= 1 (None: not given)."""
    if value is not None and value < 1:
        raise ConfigError(f"{name} must be >= 1 (got {value})")


__all__ = ["Batch", "Job", "output_folder_or_file", "positive"]
