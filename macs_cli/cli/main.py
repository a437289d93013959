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
from . import weights as _weights
from .common import Terminated, exit_cleanly_on_sigterm, say_error

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
app.command("weights")(_weights.weights)


def main() -> None:
    """Run the CLI. Usage mistakes (a missing or unknown option, a value of the wrong type) are one
    ``error:`` line with exit 2, like every other bad input; interrupts exit 130, SIGTERM 143."""
    import sys

    from typer import Abort

    try:   # typer vendors its own click
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - a typer that uses click itself
        from click.exceptions import NoArgsIsHelpError, UsageError

    exit_cleanly_on_sigterm()
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError:
        app(sys.argv[1:] + ["--help"])        # a verb alone prints its help, as before
        code = 0
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "macs"
        say_error(f"{exc.format_message().rstrip('.')} (see '{where} --help')")
        code = 2
    except Abort:                             # Ctrl-C or SIGTERM outside a verb's own error handling
        say_error("terminated" if Terminated.received else "interrupted")
        code = 130
    if Terminated.received and code not in (0, None):
        code = 143                            # killed by SIGTERM: 128 + 15
    sys.exit(code or 0)
