"""``macs rank``: order stem embeddings by contextual significance (cosine to the mixture)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..fsutil import describe_os_error
from .common import (DEVICE_HELP, JSON_HELP, Emitter, console, fail, one_line_errors, plan_output, resolve_device,
                     say_error)


def expand_embedding_inputs(items: list[Path]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Inputs -> [(embeddings file, its name below the output folder)]: a file is itself (its file
    name); a folder is searched recursively for ``macs embed`` outputs, which keep their path below
    it (``a/song.npy`` and ``b/song.npy`` stay apart)."""
    from ..formats import EMBEDDINGS

    found, problems = [], []
    for item in items:
        item = Path(item)
        if item.is_dir():
            hits = sorted(p for p in item.rglob("*.npy")
                          if not any(part.startswith(".") for part in p.relative_to(item).parts)
                          and EMBEDDINGS.owns(p))
            if not hits:
                problems.append(f"{item}: holds no macs embed output (.npy with its .json sidecar)")
            found += [(p, p.relative_to(item)) for p in hits]
        else:
            found.append((item, Path(item.name)))
    return found, problems


def rank(
    embeddings: List[Path] = typer.Argument(..., help="Embedding files written by `macs embed` (their "
                                            ".json sidecar must hold the mixture's embedding), or folders "
                                            "of them (searched recursively)."),
    output: Path = typer.Option(..., "-o", "--output", help="RANKED.npy for one input; a folder for several "
                                "(inputs found in a folder keep their path below it)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", "-k", help="Keep the k most significant stems "
                                        "(the paper: the top 3 carry most of the semantics)."),
    device: Optional[str] = typer.Option(None, "--device", help="Where the similarities are computed: "
                                         + DEVICE_HELP + " (tiny work: cpu is as good)"),
    force: bool = typer.Option(False, "--force", help="Replace existing outputs (only previous `macs rank` "
                               "outputs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary line."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Rank stems most significant first: RANKED.npy (k x 512) + RANKED.json (order, scores, Spearman).

    Prints each .npy written on stdout (--json: one record each)."""
    from ..clap.api import rank_embeddings, read_npy_with_sidecar, write_npy_with_sidecar
    from ..errors import ConfigError, MacsError
    from ..formats import RANK_SIDECAR, RANKED

    emit = Emitter(as_json)
    with one_line_errors():
        dev = resolve_device(device)
        if top_k is not None and top_k < 1:
            fail(f"--top-k must be >= 1 (got {top_k})", 2)
        found, problems = expand_embedding_inputs(list(embeddings))
        single = len(embeddings) == 1 and len(found) == 1 and not Path(embeddings[0]).is_dir() \
            and output.suffix.lower() == ".npy"
        if not single and output.exists() and not output.is_dir():
            fail(f"{output}: exists and is not a folder (several inputs need an output folder)")
        done = 0
        claimed: dict[Path, Path] = {}
        for path, rel in found:
            target = output if single else output / rel
            try:
                if target in claimed:
                    raise MacsError(f"{path}: output name '{rel}' clashes with {claimed[target]} "
                                    "(rank them into separate folders)")
                claimed[target] = path
                if target.resolve() == path.resolve() or target.with_suffix(".json").resolve() == \
                        path.with_suffix(".json").resolve():
                    raise MacsError(f"{target}: would overwrite its own input")
                _, job_force = plan_output([(target, RANKED), (target.with_suffix(".json"), RANK_SIDECAR)], force)
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
                write_npy_with_sidecar(target, r.embeddings, side, "ranked", force=job_force)
                done += 1
                emit(target, input=str(path), sidecar=str(target.with_suffix(".json")), order=r.order,
                     kept=keep)
                if not quiet:
                    rho = "undefined" if r.spearman is None else f"{r.spearman:+.2f}"
                    console.print(f"{path.name}: order {r.order}, Spearman vs separator order {rho}",
                                  highlight=False)
            except MacsError as exc:
                problems.append(str(exc))
            except OSError as exc:
                problems.append(describe_os_error(exc, target))
    for msg in problems:
        say_error(f"{msg}")
    if problems:
        raise typer.Exit(1)
