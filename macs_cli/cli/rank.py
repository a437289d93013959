"""``macs rank``: order stem embeddings by contextual significance (cosine to the mixture)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import DEVICE_HELP, console, fail, one_line_errors, resolve_device, say_error


def rank(
    embeddings: List[Path] = typer.Argument(..., help="Embedding files written by `macs embed` (their "
                                            ".json sidecar must hold the mixture's embedding)."),
    output: Path = typer.Option(..., "-o", "--output", help="RANKED.npy for one input; a folder for several."),
    top_k: Optional[int] = typer.Option(None, "--top-k", "-k", help="Keep the k most significant stems "
                                        "(the paper: the top 3 carry most of the semantics)."),
    device: Optional[str] = typer.Option(None, "--device", help="Where the similarities are computed: "
                                         + DEVICE_HELP + " (tiny work: cpu is as good)"),
    force: bool = typer.Option(False, "--force", help="Replace existing outputs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary line."),
) -> None:
    """Rank stems most significant first: RANKED.npy (k x 512) + RANKED.json (order, scores, Spearman)."""
    from ..clap.api import rank_embeddings, read_npy_with_sidecar, write_npy_with_sidecar
    from ..errors import ConfigError, MacsError

    with one_line_errors():
        dev = resolve_device(device)
        if top_k is not None and top_k < 1:
            fail(f"--top-k must be >= 1 (got {top_k})", 2)
        single = len(embeddings) == 1 and output.suffix == ".npy"
        if not single and output.exists() and not output.is_dir():
            fail(f"{output}: exists and is not a folder (several inputs need an output folder)")
        problems, done = [], 0
        claimed: dict[Path, Path] = {}
        for path in embeddings:
            target = output if single else output / path.name
            try:
                if target in claimed:
                    raise MacsError(f"{path}: output name '{target.name}' clashes with {claimed[target]} "
                                    "(rank them into separate folders)")
                claimed[target] = path
                if target.exists() and not force:
                    raise MacsError(f"{target}: already exists (use --force to overwrite)")
                if target.resolve() == path.resolve():
                    raise MacsError(f"{target}: would overwrite its own input")
                emb, meta = read_npy_with_sidecar(path)
                if emb.ndim != 2:
                    raise MacsError(f"{path}: expected an (M, D) array, got shape {emb.shape}")
                mix = meta.get("mixture_embedding")
                if mix is None:
                    raise MacsError(f"{path}: its sidecar holds no mixture embedding (embed a stems folder "
                                    "whose manifest names the mixture)")
                try:
                    r = rank_embeddings(emb, mix, top_k, device=dev)
                except ConfigError as exc:
                    raise MacsError(f"{path}: {exc}") from None
                keep = r.order[: top_k or len(r.order)]
                stems = meta.get("stems")
                if not isinstance(stems, list) or len(stems) != emb.shape[0]:
                    stems = [f"stem {i}" for i in range(emb.shape[0])]
                side = {"source": str(path), "order": r.order, "kept": keep, "top_k": top_k,
                        "scores": r.scores, "spearman_vs_separator_order": r.spearman,
                        "stems": [stems[i] for i in keep], "model": meta.get("model"),
                        "mixture": meta.get("mixture"), "mixture_embedding": mix}
                labels = meta.get("labels")
                if isinstance(labels, list) and len(labels) == emb.shape[0]:
                    side["labels"] = [labels[i] for i in keep]
                write_npy_with_sidecar(target, r.embeddings, side)
                done += 1
                if not quiet:
                    rho = "undefined" if r.spearman is None else f"{r.spearman:+.2f}"
                    console.print(f"{path.name}: order {r.order}, Spearman vs separator order {rho}",
                                  highlight=False)
            except MacsError as exc:
                problems.append(str(exc))
    for msg in problems:
        say_error(f"{msg}")
    if problems:
        raise typer.Exit(1)
