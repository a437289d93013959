"""Every model the verbs can use: where each is looked for, whether it is here, its size and the
command that fetches it (``macs weights``). Nothing here touches the network."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .hub import cached_file, fetch_command, hub_repo_cached


@dataclass
class ModelEntry:
    name: str                 # what the verbs' options take (--model default, --clap hf, ...)
    kind: str                 # separator | clap | tokenizer | stable-diffusion | adapter | eval
    used_by: str              # verbs and options
    present: bool
    path: str | None          # where it was found
    size_bytes: int | None
    fetch: str                # how to get it
    loadable: bool | None = None   # --check: None (not checked), True, False
    problem: str | None = None     # --check: why it did not load

    def as_dict(self) -> dict:
        return asdict(self)


def _size(path: Path | None) -> int | None:
    if path is None:
        return None
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _entry(name: str, kind: str, used_by: str, found: Path | None, fetch: str) -> ModelEntry:
    return ModelEntry(name, kind, used_by, found is not None, None if found is None else str(found),
                      _size(found), fetch)


def _official_adapters(cache_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    """The official ``<Dataset>_mlp.pt`` + ``_unet.pt`` pairs in the cache's ``alxzzz/MACS`` snapshots."""
    from huggingface_hub.constants import HF_HUB_CACHE

    from ..generation.checkpoints import OFFICIAL_REPO

    root = Path(cache_dir or HF_HUB_CACHE) / f"models--{OFFICIAL_REPO.replace('/', '--')}" / "snapshots"
    pairs = []
    for mlp in sorted(root.glob("*/*_mlp.pt")) if root.is_dir() else []:
        unet = mlp.with_name(mlp.name[: -len("_mlp.pt")] + "_unet.pt")
        if unet.exists():
            pairs.append((mlp.name[: -len("_mlp.pt")], mlp))
    return pairs


def catalog(cache_dir: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None) -> list[ModelEntry]:
    """The models, looked up in the package, the Hugging Face cache (``cache_dir`` or the default)
    and the evaluation networks' usual places (or ``weights_dir``)."""
    from ..clap.encoders import ROBERTA, TOKENIZER_FILES
    from ..clap.loading import DEFAULT_FILE, DEFAULT_HF_MODEL, DEFAULT_REPO
    from ..evaluation.encoders import WEIGHTS, candidate_paths
    from ..generation.backbone import HUB_DOWNLOAD, SD_V14, SD_V15
    from ..generation.checkpoints import OFFICIAL_REPO
    from .separator import DEFAULT_DIR, DEFAULT_NAME, OFFICIAL_FILE
    from .separator import OFFICIAL_REPO as SEP_REPO

    builtin = DEFAULT_DIR / f"{DEFAULT_NAME}.safetensors"
    env = os.environ.get("MACS_OFFICIAL_SEPARATOR")
    official = Path(env) if env and Path(env).is_file() else cached_file(SEP_REPO, OFFICIAL_FILE, cache_dir)
    out = [
        _entry("default", "separator", "separate/train-sep --model", builtin if builtin.exists() else None,
               "ships with macs (reinstall the package)"),
        _entry("official", "separator", "separate --model", official,
               fetch_command(SEP_REPO, OFFICIAL_FILE) + " (or set MACS_OFFICIAL_SEPARATOR)"),
        _entry("default", "clap", "embed/generate/train-gen --clap", cached_file(DEFAULT_REPO, DEFAULT_FILE, cache_dir),
               fetch_command(DEFAULT_REPO, DEFAULT_FILE)),
        _entry(f"hf:{DEFAULT_HF_MODEL}", "clap", "embed --clap hf", hub_repo_cached(DEFAULT_HF_MODEL, "config.json", cache_dir),
               fetch_command(DEFAULT_HF_MODEL)),
        _entry(ROBERTA, "tokenizer", "embed --labels (laion-clap text branch)",
               hub_repo_cached(ROBERTA, "tokenizer_config.json", cache_dir) or hub_repo_cached(ROBERTA, "vocab.json", cache_dir),
               fetch_command(ROBERTA, TOKENIZER_FILES)),
    ]
    for repo in (SD_V15, SD_V14):
        out.append(_entry(repo, "stable-diffusion", "generate/train-gen --sd-model",
                          hub_repo_cached(repo, "model_index.json", cache_dir), fetch_command(repo, HUB_DOWNLOAD)))
    adapters = _official_adapters(cache_dir)
    for dataset, mlp in adapters:
        out.append(_entry(f"official:{dataset}", "adapter", "generate --adapter", mlp.parent,
                          fetch_command(OFFICIAL_REPO, f"{dataset}_mlp.pt {dataset}_unet.pt")))
    if not adapters:
        out.append(_entry("official:<Dataset>", "adapter", "generate --adapter", None,
                          fetch_command(OFFICIAL_REPO, "<Dataset>_mlp.pt <Dataset>_unet.pt")))
    for key, spec in WEIGHTS.items():
        paths = candidate_paths(key, Path(weights_dir) if weights_dir else None)
        hit = next((p for p in paths if p.is_file()), None)
        out.append(_entry(key, "eval", f"eval ({spec.purpose})", hit,
                          f"put {spec.filename} at {paths[0]} (from {spec.url})"))
    return out


def _loader(entry: ModelEntry, device: str) -> Callable[[], object] | None:
    """How ``--check`` loads a present entry (None: nothing to load on its own)."""
    if entry.kind == "separator":
        from .separator import load_separator

        return lambda: load_separator(entry.name, device=device)
    if entry.kind == "clap":
        from ..clap.loading import load_clap

        spec = "default" if entry.name == "default" else entry.name
        return lambda: load_clap(spec, device=device)
    if entry.kind == "stable-diffusion":
        from ..generation.backbone import load_backbone

        return lambda: load_backbone(entry.name, device=device)
    if entry.kind == "adapter":
        from ..generation.checkpoints import resolve_adapter

        return lambda: resolve_adapter(entry.name)
    return None


def check(entries: list[ModelEntry], device: str = "cpu", progress: Callable[[ModelEntry], None] | None = None) -> None:
    """Load each present entry once (``loadable``/``problem`` are filled in)."""
    from ..errors import MacsError

    for entry in entries:
        load = _loader(entry, device) if entry.present else None
        if load is None:
            continue
        if progress is not None:
            progress(entry)
        try:
            load()
            entry.loadable = True
        except (MacsError, OSError, RuntimeError, ValueError) as exc:
            entry.loadable, entry.problem = False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


__all__ = ["ModelEntry", "catalog", "check", "human_size"]
