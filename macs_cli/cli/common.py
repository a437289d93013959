"""Shared pieces of the command line: device choice, one-line errors, the console."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

import typer
from rich.console import Console

from ..errors import MacsError
from ..fsutil import plan_output  # noqa: F401  (the verbs' import of it)

console = Console(stderr=True)

DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when available, else cpu)."


def resolve_device(device: str | None) -> str:
    """Validate a --device value; returns a torch device string."""
    import torch

    if device is None or device == "":
        return "cuda" if torch.cuda.is_available() else "cpu"
    d = device.strip().lower()
    if d == "cpu":
        return "cpu"
    if d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit()):
        if not torch.cuda.is_available():
            raise MacsError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        if ":" in d and int(d[5:]) >= torch.cuda.device_count():
            raise MacsError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
        return d
    from ..errors import ConfigError

    raise ConfigError(f"--device {device}: expected cpu, cuda or cuda:N")


def say_error(message: object) -> None:
    """``error: <message>`` on stderr, one line; the message is plain text (a path with [brackets]
    is printed as it is, never read as rich markup)."""
    from rich.text import Text

    console.print(Text.assemble(("error:", "bold red"), " ", str(message)), highlight=False, soft_wrap=True)


def say_warning(message: object) -> None:
    """``warning: <message>`` on stderr, one line, plain text."""
    from rich.text import Text

    console.print(Text.assemble(("warning:", "yellow"), " ", str(message)), highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> None:
    say_error(message)
    raise typer.Exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's time limit, ``kill``), raised like Ctrl-C so that every
    ``finally`` runs and no temporary output is left behind."""

    received = False


def exit_cleanly_on_sigterm() -> None:
    import signal

    def handler(signum, frame):
        Terminated.received = True
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from an embedding application)
        pass


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn MacsError (and a few OS errors) into 'error: ...' with a non-zero exit, no traceback."""
    try:
        yield
    except MacsError as exc:
        fail(str(exc), exc.exit_code)
    except Terminated:
        fail("terminated", 143)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except MemoryError:
        fail("out of memory (try a smaller --batch-size)")
    except OSError as exc:
        if os.environ.get("MACS_DEBUG"):
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        fail(f"{where}{exc.strerror or exc}")


def say_note(message: object) -> None:
    """``note: <message>`` on stderr, one line, plain text (silenced by --quiet at the caller)."""
    from rich.text import Text

    console.print(Text.assemble(("note:", "cyan"), " ", str(message)), highlight=False, soft_wrap=True)


JSON_HELP = "On stdout, one JSON record per output instead of its path."


# -- options several verbs take (help text their own) ------------------------------------------------
def output_path(value: str) -> "Path":
    """``-o/--output``: an empty value (an unset shell variable in ``-o "$OUT"``) is a usage error,
    not the current folder."""
    from pathlib import Path

    if not str(value).strip():
        raise typer.BadParameter("must not be empty")
    return Path(value)


def force_option(help: str):
    return typer.Option(False, "--force", help=help)


def skip_existing_option(help: str):
    return typer.Option(False, "--skip-existing", help=help)


def quiet_option(help: str):
    return typer.Option(False, "--quiet", "-q", help=help)


def download_option(help: str):
    return typer.Option(False, "--allow-download", help=help)


def json_option():
    return typer.Option(False, "--json", help=JSON_HELP)


class Emitter:
    """What a verb writes on stdout: one line per output (its path), or with ``--json`` one JSON
    record per output, flushed at once so that a pipeline can start on it. Everything else goes
    to stderr."""

    def __init__(self, as_json: bool = False):
        self.as_json = as_json
        self.count = 0
        self.closed = False

    def __call__(self, path, **record) -> None:
        import json

        if self.closed:
            return
        if self.as_json:
            line = json.dumps({"path": str(path), **record}, default=str)
        else:
            line = str(path)
            if "\n" in line or "\r" in line:   # one output, one line: a line break is written as \n
                line = line.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
                say_warning(f"{line}: the name holds a line break, listed on stdout with it escaped "
                            "(\\n, \\r; a backslash as \\\\); use --json for exact paths")
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:   # the reader went away (`| head -1`): the output is written all the same
            self._reader_gone()
            return
        self.count += 1

    def _reader_gone(self) -> None:
        self.closed = True
        try:   # later writes, and the interpreter's last flush, go nowhere instead of raising again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        say_warning("stdout was closed by the program reading it: the outputs are still written, "
                    "but no longer listed")


@contextmanager
def report_interrupt(finished: list, total: int) -> Iterator[None]:
    """Ctrl-C / SIGTERM inside a batch loop: ``error: interrupted`` (or ``terminated``) with the
    inputs that were finished, exit 130 (143). Use outside the progress bar, so the line stays."""
    try:
        yield
    except KeyboardInterrupt:
        word = "terminated" if Terminated.received else "interrupted"
        names = [str(f) for f in finished]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        say_error(f"{word}: {len(names)} of {total} input(s) finished" + (f" ({shown})" if names else "")
                  + "; the one in progress left nothing behind")
        raise typer.Exit(143 if Terminated.received else 130) from None


@contextmanager
def gpu_memory_errors(hint: str) -> Iterator[None]:
    """A CUDA out-of-memory error as a one-line MacsError (inside ``one_line_errors``)."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        raise MacsError(f"out of GPU memory ({hint})") from None


def threads_for_cpu() -> None:
    """Use every core for CPU inference unless the user pinned a number."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))


# -- several processes (accelerate launch / torchrun) ----------------------------------------------
def world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; (0, 1, 0) when alone."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def process_device(device: str | None) -> str:
    """resolve_device, with each launched process on its own GPU (cuda:LOCAL_RANK)."""
    dev = resolve_device(device)
    _, size, local = world()
    if size > 1 and dev == "cuda":
        import torch

        dev = f"cuda:{local % max(1, torch.cuda.device_count())}"
    return dev


def inference_device(device: str | None, precision: str, stage: str = "separator",
                     warn_bf16: bool = False) -> tuple[str, str]:
    """This process's device and the precision that runs there for ``stage`` (a bad --precision,
    e.g. fp16 on a CPU, is an option error here, before any model loads), with every core for CPU
    inference; ``warn_bf16``: say so when bf16 is asked of a CPU that only emulates it."""
    from ..precision import cpu_bf16_warning, resolve_precision

    dev = process_device(device)
    used = resolve_precision(precision, dev, stage)
    warning = cpu_bf16_warning(precision, dev) if warn_bf16 else None
    if warning:
        say_warning(warning)
    if dev == "cpu":
        threads_for_cpu()
    return dev, used


def shard_note() -> str:
    rank, size, _ = world()
    return f" [process {rank + 1}/{size}]" if size > 1 else ""


def run_config(output, config, resume: bool):
    """The recipe a trainer starts from: ``--config``, or with ``--resume`` and no ``--config``
    the run's own ``config.yaml`` (so nothing needs repeating)."""
    from pathlib import Path

    if config is None and resume and (Path(output) / "config.yaml").is_file():
        return Path(output) / "config.yaml"
    return config


def with_shortcuts(overrides: list[str], shortcuts: dict) -> list[str]:
    """``--set`` overrides plus a verb's shortcut options (``--data``, ``--steps`` ...) as
    ``key=value`` entries; values are written as JSON, so a path stays a string (a folder called
    ``2024`` or ``yes`` is not read as a number or a boolean). ``None`` (option not given) is left out."""
    import json
    from pathlib import PurePath

    out = list(overrides)
    for key, value in shortcuts.items():
        if value is not None:
            out.append(f"{key}={json.dumps(str(value) if isinstance(value, PurePath) else value)}")
    return out

