"""``macs rank``: order stem embeddings by contextual significance (cosine to the mixture)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .batch import Batch, output_folder_or_file, positive
from .common import output_path, DEVICE_HELP, JSON_HELP, Emitter, console, one_line_errors, resolve_device


def rank(
    embeddings: List[Path] = typer.Argument(..., help="Embedding files written by `macs embed` (their "
                                            ".json sidecar must hold the mixture's embedding), or folders "
                                            "of them (searched recursively)."),
    output: Path = typer.Option(..., "-o", "--output", parser=output_path, help="RANKED.npy for one input; a folder for several "
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
    from ..formats import RANK_SIDECAR, RANKED, EmbeddingSet, find_embedding_files
    from ..ranking import rank_set

    batch = Batch("rank", lambda t: [(t, RANKED), (t.with_suffix(".json"), RANK_SIDECAR)], force,
                  emit=Emitter(as_json), quiet=quiet)
    with one_line_errors():
        dev = resolve_device(device)
        positive("--top-k", top_k)
        found, problems = find_embedding_files(list(embeddings))
        batch.report(problems)
        single = len(embeddings) == 1 and len(found) == 1 and not Path(embeddings[0]).is_dir() \
            and output.suffix.lower() == ".npy"
        targets = output_folder_or_file(output, [str(rel) for _, rel in found], "", single)
        batch.inputs = {q.resolve() for path, _ in found for q in (path, path.with_suffix(".json"))}
        for (path, _), target in zip(found, targets):
            batch.add(path.name, path, target, path)

    def work(job):
        ranked, r = rank_set(EmbeddingSet.read(job.data), top_k, dev)
        ranked.write(job.target, "ranked", force=job.force)
        if not quiet:
            rho = "undefined" if r.spearman is None else f"{r.spearman:+.2f}"
            console.print(f"{job.name}: order {r.order}, Spearman vs separator order {rho}", highlight=False)
        return {"input": str(job.data), "sidecar": str(job.target.with_suffix(".json")), "order": r.order,
                "kept": ranked.meta["kept"]}

    batch.run(work, progress=False)
    batch.finish()
