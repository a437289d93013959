"""What ``train-sep`` and ``train-gen`` share: their common options, and the run itself (one run at a
time in a run folder, the folder checked before anything loads, the recipe with its overrides, the
trainer's loop, the result on stdout)."""

from __future__ import annotations

import contextlib
import inspect
import typing
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from .common import output_path, DEVICE_HELP, JSON_HELP, Emitter, console, one_line_errors, resolve_device, run_config, with_shortcuts


def training_options(contents: str, recipes: str, example: str):
    """Give a training verb's keyword-only parameters that have no default the options both verbs
    take (``output``, ``config``, ``overrides``, ``steps``, ``batch_size``, ``device``, ``resume``,
    ``force``, ``quiet``, ``as_json``), in the verb's own order; the help texts name its run folder's
    ``contents``, its ``recipes`` and an override ``example``."""
    common = {
        "output": (Path, typer.Option(..., "-o", "--output", parser=output_path, help=f"Run folder ({contents}).")),
        "config": (Optional[Path], typer.Option(None, "--config", "-c", help=f"YAML recipe (see {recipes}).")),
        "overrides": (List[str], typer.Option([], "--set", help=f"Override a config value, e.g. --set {example} "
                                              "(repeatable).")),
        "steps": (Optional[int], typer.Option(None, "--steps", help="Overrides train.steps.")),
        "batch_size": (Optional[int], typer.Option(None, "--batch-size", help="Overrides optim.batch_size.")),
        "device": (Optional[str], typer.Option(None, "--device", help=DEVICE_HELP)),
        "resume": (bool, typer.Option(False, "--resume", help="Continue the run in the output folder.")),
        "force": (bool, typer.Option(False, "--force", help="Start afresh, deleting the run in the output folder.")),
        "quiet": (bool, typer.Option(False, "--quiet", "-q", help="No progress bar.")),
        "as_json": (bool, typer.Option(False, "--json", help=JSON_HELP)),
    }

    def decorate(verb):
        hints = typing.get_type_hints(verb)
        params = []
        for p in inspect.signature(verb).parameters.values():
            if p.default is inspect.Parameter.empty and p.name in common:
                kind, option = common[p.name]
                p = p.replace(annotation=kind, default=option)
            else:
                p = p.replace(annotation=hints.get(p.name, p.annotation))
            verb.__annotations__[p.name] = p.annotation
            params.append(p)
        verb.__signature__ = inspect.signature(verb).replace(parameters=params)
        return verb

    return decorate


def run_training(trainer_type, load_config: Callable, output: Path, config: Path | None, overrides: list[str],
                 shortcuts: dict[str, Any], device: str | None, resume: bool, force: bool, quiet: bool,
                 check: Callable[[dict], None] | None = None, guard=contextlib.nullcontext):
    """Build ``trainer_type`` from the recipe and run it; ``check(cfg)`` looks at the inputs before
    anything is written, ``guard()`` wraps the loop. Returns (trainer, result)."""
    from ..training.run import hold_run_folder

    with one_line_errors(), hold_run_folder(output):   # one run at a time in a run folder
        trainer_type.check_run_folder(output, resume, force)    # before anything loads
        cfg = load_config(run_config(output, config, resume), with_shortcuts(overrides, shortcuts))
        dev = resolve_device(device)
        if check is not None:
            check(cfg)
        trainer = trainer_type(cfg, output, device=dev, console=console, progress=not quiet)
        with guard():
            result = trainer.run(resume=resume, fresh=force)
    return trainer, result


def report(trainer, result: dict[str, Any], output: Path, model_file: str, what: str, detail: str,
           as_json: bool) -> None:
    """The trained model's path (or a JSON record) on stdout and a one-line summary on stderr, from
    the main process."""
    if not trainer.accel.is_main_process:
        return
    model = output / model_file
    Emitter(as_json)(model, run=str(output), step=result["step"],
                     **({"validation": result.get("validation")} if result.get("validation") else {}))
    console.print(f"trained to step {result['step']}; {what}: {model}{detail}", highlight=False)
