"""``macs weights``: every model the verbs can use, whether it is here, its size, how to get it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import DEVICE_HELP, JSON_HELP, Emitter, console, one_line_errors, resolve_device, say_error


def weights(
    check: bool = typer.Option(False, "--check", help="Load every model that is present, once, and say "
                               "whether it loads (slow for Stable Diffusion)."),
    device: Optional[str] = typer.Option(None, "--device", help="Where --check loads the models: " + DEVICE_HELP),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="A Hugging Face cache other than "
                                             "the default (HF_HUB_CACHE)."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Where `macs eval` would look for "
                                               "the Inception/CLIP/Wav2CLIP files."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the models: one line each on stdout (kind, name, present/missing, size, where it is or
    the command that fetches it; --json: one record each). Nothing is downloaded."""
    from ..weights.catalog import catalog, human_size
    from ..weights.catalog import check as check_entries

    emit = Emitter(as_json)
    with one_line_errors():
        entries = catalog(cache_dir, weights_dir)
        if check:
            dev = resolve_device(device)
            check_entries(entries, dev, lambda e: console.print(f"loading {e.kind} {e.name} ...", highlight=False))
    for e in entries:
        status = "present" if e.present else "missing"
        if e.loadable is not None:
            status += ", loads" if e.loadable else ", does not load"
        if as_json:
            record = e.as_dict()
            emit(record.pop("path") or "", **record)
        else:
            emit("\t".join([e.kind, e.name, status, human_size(e.size_bytes), e.path or e.fetch]))
    bad = [e for e in entries if e.loadable is False]
    for e in bad:
        say_error(f"{e.kind} {e.name} ({e.path}) does not load: {e.problem}")
    if bad:
        raise typer.Exit(1)
