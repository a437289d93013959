"""The ``macs`` command: a thin Typer layer over the importable API."""

from __future__ import annotations

import typer

from .. import __version__
from . import embed as _embed
from . import eval as _eval
from . import generate as _generate
from . import rank as _rank
from . import separate as _separate
from . import train_gen as _train_gen
from . import train_sep as _train_sep
from .common import Terminated, exit_cleanly_on_sigterm

app = typer.Typer(
    name="macs",
    help="Multi-source audio-to-image toolkit (MACS): separate mixtures of sounds into stems, "
         "embed and rank them with CLAP, generate images from them with Stable Diffusion; "
         "train both stages and evaluate the results. Every verb reads and writes plain files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"macs {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


app.command("separate", no_args_is_help=True)(_separate.separate)
app.command("embed", no_args_is_help=True)(_embed.embed)
app.command("rank", no_args_is_help=True)(_rank.rank)
app.command("generate", no_args_is_help=True)(_generate.generate)
app.command("train-sep", no_args_is_help=True)(_train_sep.train_sep)
app.command("train-gen", no_args_is_help=True)(_train_gen.train_gen)
app.command("eval", no_args_is_help=True)(_eval.evaluate)


def main() -> None:
    exit_cleanly_on_sigterm()
    try:
        app()
    except SystemExit as exc:  # click reports any interrupt as 130; a SIGTERM exits 128 + 15
        if Terminated.received and exc.code not in (0, None):
            raise SystemExit(143) from None
        raise
