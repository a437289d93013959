"""macs: multi-source audio-to-image generation (MACS, AAAI 2026) as a command-line toolkit.

Stages, one folder each: ``audio`` (I/O, resampling, chunking), ``separation`` (the stage-1 model
and the separate API), ``training`` (data, losses, the train-sep loop), ``evaluation`` (metrics),
``weights`` (checkpoint formats and resolution), ``cli`` (the thin Typer layer).

The public API (:mod:`macs_cli.api`) is importable from here: ``macs_cli.separate(...)`` etc.
It is loaded on first use, so ``import macs_cli`` (and the CLI's start-up) stays light.
"""

__version__ = "0.1.0"

_API = ("load_separator", "load_clap", "load_generator", "separate", "embed", "rank", "generate",
        "evaluate_separation")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'macs_cli' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
