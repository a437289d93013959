"""Loading the frozen Stable Diffusion v1.x backbone.

``spec`` is a Hugging Face hub id (``CompVis/stable-diffusion-v1-4``,
``stable-diffusion-v1-5/stable-diffusion-v1-5``, ...) or a local diffusers pipeline folder (one
holding ``model_index.json``, as ``save_pretrained`` or ``hf download`` writes it). Hub ids are read
from the Hugging Face cache the way diffusers reads them (``HF_HOME``/``HF_HUB_CACHE``); nothing
touches the network unless ``allow_download``. A missing backbone is a one-line
:class:`~macs_cli.errors.ModelError` that says how to provide it, raised before diffusers is
imported where possible. The safety checker is never loaded. fp16 on CUDA, fp32 on CPU.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import ConfigError, ModelError
from ..weights.hub import first_line as _first_line
from ..weights.hub import hub_repo_cached, looks_like_path, not_cached_message

SD_V14 = "CompVis/stable-diffusion-v1-4"
SD_V15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_SD_MODEL = SD_V15          # the paper's backbone
OFFICIAL_SD_MODEL = SD_V14         # what the official code's README uses
SD_FLAG = "--sd-model PATH"
# what a pipeline needs from the hub: configs, tokenizer and safetensors weights of the five
# components, without the safety checker, the fp16/non-EMA duplicates or the single-file checkpoints
HUB_DOWNLOAD = ('--include "model_index.json" "*/*.json" "*/*.txt" "*/*.safetensors" '
                '--exclude "safety_checker/*" "*fp16*" "*non_ema*"')


def missing_backbone_message(repo: str) -> str:
    return not_cached_message(f"Stable Diffusion weights '{repo}'", repo, HUB_DOWNLOAD,
                              f"{SD_FLAG} (a local diffusers pipeline folder)")


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """``auto``: fp16 on CUDA, fp32 elsewhere; or fp32/fp16/bf16 by name."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = (dtype or "auto").lower()
    if name == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise ConfigError(f"--dtype {dtype}: expected auto, fp32, fp16 or bf16")
    if torch.device(device).type == "cpu" and table[name] == torch.float16:
        raise ConfigError("--dtype fp16 is not supported on the CPU (use fp32 or bf16)")
    return table[name]


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide diffusers' and transformers' loading progress bars for the duration."""
    from diffusers.utils import logging as d_logging
    from transformers.utils import logging as t_logging

    d_on, t_on = d_logging.is_progress_bar_enabled(), t_logging.is_progress_bar_enabled()
    d_logging.disable_progress_bar()
    t_logging.disable_progress_bar()
    d_level = d_logging.get_verbosity()
    d_logging.set_verbosity_error()
    try:
        yield
    finally:
        d_logging.set_verbosity(d_level)
        if d_on:
            d_logging.enable_progress_bar()
        if t_on:
            t_logging.enable_progress_bar()


def locate_backbone(spec: str, allow_download: bool = False, cache_dir: str | os.PathLike | None = None) -> str:
    """Check that ``spec`` can be loaded without surprises; returns what to pass to ``from_pretrained``."""
    spec = str(spec).strip()
    if not spec:
        raise ModelError(f"empty --sd-model (a hub id such as {SD_V15} or a local pipeline folder)")
    if looks_like_path(spec):
        path = Path(spec).expanduser()
        if not path.exists():
            raise ModelError(f"{path}: no such Stable Diffusion folder")
        if path.is_file():
            raise ModelError(f"{path}: a single-file checkpoint; pass a diffusers pipeline folder (one holding "
                             "model_index.json), e.g. what `hf download` or save_pretrained writes")
        if not (path / "model_index.json").exists():
            raise ModelError(f"{path}: no model_index.json (not a diffusers Stable Diffusion pipeline folder)")
        return str(path)
    if not allow_download and hub_repo_cached(spec, "model_index.json", cache_dir) is None:
        raise ModelError(missing_backbone_message(spec))
    return spec


def snapshot_revision(spec: str, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The cached snapshot (commit hash) a hub id resolves to, for the record."""
    if looks_like_path(spec):
        return None
    snapshot = hub_repo_cached(spec, "model_index.json", cache_dir)
    return None if snapshot is None else snapshot.name


def load_backbone(spec: str | None = None, device: str | torch.device = "cpu", dtype: Any = "auto",
                  allow_download: bool = False, cache_dir: str | os.PathLike | None = None):
    """A ``StableDiffusionPipeline`` on ``device`` with its weights frozen and no safety checker."""
    spec = DEFAULT_SD_MODEL if spec in (None, "") else str(spec)
    where = locate_backbone(spec, allow_download, cache_dir)
    torch_dtype = resolve_dtype(dtype, device)
    with quiet_loading():
        from diffusers import StableDiffusionPipeline

        kw: dict[str, Any] = {"dtype": torch_dtype, "safety_checker": None,
                              "requires_safety_checker": False, "feature_extractor": None}
        if not looks_like_path(spec):
            kw["local_files_only"] = not allow_download
            if cache_dir is not None:
                kw["cache_dir"] = str(cache_dir)
        try:
            pipe = StableDiffusionPipeline.from_pretrained(where, **kw)
        except Exception as exc:
            text = _first_line(exc)
            if not looks_like_path(spec) and not allow_download:
                raise ModelError(f"{missing_backbone_message(spec)} ({text})") from None
            raise ModelError(f"{spec}: cannot load a Stable Diffusion v1.x pipeline ({text})") from None
    if not getattr(pipe.unet.config, "cross_attention_dim", None):
        raise ModelError(f"{spec}: its UNet has no cross-attention: not a Stable Diffusion v1.x model")
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
        module.eval()
    pipe.set_progress_bar_config(disable=True)
    pipe.macs_source = str(Path(where).resolve()) if looks_like_path(spec) else spec  # type: ignore[attr-defined]
    pipe.macs_revision = snapshot_revision(spec, cache_dir)  # type: ignore[attr-defined]
    return pipe.to(device)

