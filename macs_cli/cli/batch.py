"""One batch runner for the verbs that take many inputs: output naming clashes, inputs that would
be overwritten, ``--force`` / ``--skip-existing``, this process's share when several are launched,
the progress bar, Ctrl-C, and the per-input error report (the other inputs go on)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import typer

from ..errors import ConfigError, MacsError
from .common import (Emitter, console, my_share, plan_output, report_interrupt, say_error, say_note, shard_note,
                     world)


@dataclass
class Job:
    name: str                 # shown in the progress bar and in messages
    where: Any                # the input, as messages name it
    target: Path              # the main output file
    force: bool               # what plan_output decided
    data: Any = None          # what the verb needs to do the work


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

    def check_flags(self) -> None:
        if self.force and self.skip_existing:
            raise ConfigError("--force and --skip-existing contradict each other")

    def add(self, name: str, where: Any, target: Path, data: Any = None,
            skipped: Callable[[Path], dict] | None = None) -> None:
        """Plan one input's output ``target``; a clash or an existing output becomes a problem of
        this input only. ``skipped(target)``: the stdout record of an output --skip-existing keeps."""
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
            action, job_force = plan_output(parts, self.force, self.skip_existing)
        except MacsError as exc:
            self.problems.append(str(exc))
            return
        if action == "skip":
            if not self.quiet:
                say_note(f"skip {where} ({target} exists)")
            self.emit(target, **(skipped(target) if skipped else {}), skipped=True)
            return
        self.jobs.append(Job(name, where, target, job_force, data))

    def share(self) -> list[Job]:
        """This process's jobs (every WORLD_SIZE-th); problems are reported by the first process only."""
        self.jobs = my_share(self.jobs)
        if world()[0] != 0:
            self.problems = []
        return self.jobs

    def run(self, work: Callable[[Job], dict | None], progress: bool = True) -> None:
        """``work(job)`` for each job; its returned dict is the stdout record of ``job.target``
        (None: nothing printed). A MacsError or OSError fails that input only."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from ..fsutil import describe_os_error

        with report_interrupt(self.done, len(self.jobs)), \
                Progress(TextColumn(f"[bold]{self.verb}[/] {{task.fields[name]}}"), BarColumn(),
                         MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                         disable=self.quiet or not progress) as bar:
            task = bar.add_task("inputs", total=len(self.jobs), name="")
            for job in self.jobs:
                bar.update(task, name=job.name)
                try:
                    record = work(job)
                    self.done.append(job.name)
                    if record is not None:
                        self.emit(job.target, **record)
                except MacsError as exc:
                    self.problems.append(str(exc))
                except OSError as exc:
                    self.problems.append(describe_os_error(exc, job.target))
                bar.advance(task)

    def finish(self, summary: str | None = None) -> None:
        """Report every problem (one ``error:`` line each), the summary line, exit 1 if any failed."""
        for msg in self.problems:
            say_error(msg)
        if summary is not None and not self.quiet:
            console.print(summary + shard_note(), highlight=False)
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
