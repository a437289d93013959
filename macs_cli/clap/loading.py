"""Resolve a ``--clap`` value to a loaded :class:`~macs_cli.clap.encoders.ClapEncoder`.

``spec`` values:

- ``None`` / ``""`` / ``default``: laion-clap ``630k-audioset-best.pt`` (HTSAT-tiny, non-fusion,
  the model MACS uses) from the Hugging Face cache (repo ``lukewys/laion_clap``); downloaded
  through ``huggingface_hub`` into that cache only with ``allow_download=True``.
- ``hf`` or ``hf:<repo id or folder>``: a ``transformers`` ``ClapModel`` (``hf`` alone:
  ``laion/clap-htsat-unfused``), from the cache unless downloads are allowed.
- a folder holding ``config.json`` with ``model_type: clap``: a saved ``ClapModel`` (with its
  tokenizer and feature-extractor files beside it).
- a ``.pt``/``.ckpt``/``.pth``/``.bin``/``.safetensors`` file: a laion-clap CLAP state dict (a
  training checkpoint with ``state_dict``, optionally with DDP's ``module.`` prefix) or a
  checkpoint that embeds one under a prefix, e.g. the official MACS separator checkpoint, whose
  ``clap.*`` and ``model.clap.*`` entries each hold laion-clap's ``CLAP_Module`` state
  (``clap.model.audio_branch...``). Loaded with ``torch.load(weights_only=True)``: never unpickled.

Every missing or broken file becomes a one-line :class:`~macs_cli.errors.ModelError` that says what
is missing and how to get it, raised before any large import or model construction where possible.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from ..weights.hub import first_line as _first_line
from ..weights.hub import looks_like_path
from .encoders import ROBERTA, ClapEncoder, HFClapEncoder, LaionClapEncoder

DEFAULT_REPO = "lukewys/laion_clap"
DEFAULT_FILE = "630k-audioset-best.pt"
DEFAULT_HF_MODEL = "laion/clap-htsat-unfused"
CHECKPOINT_SUFFIXES = (".pt", ".ckpt", ".pth", ".bin", ".safetensors")
CLI_FLAG = "--clap PATH"

_ANCHOR = "audio_branch.patch_embed.proj.weight"  # a key every laion-clap HTSAT CLAP state holds
# Where a CLAP state may sit inside a checkpoint, most likely first. The official MACS separator
# checkpoint holds the same CLAP twice, under clap.* and model.clap.*: the first is used.
PREFERRED_PREFIXES = ("", "module.", "clap.model.", "clap.", "model.clap.model.", "model.clap.",
                      "module.clap.model.", "module.model.clap.model.")


# -- reading checkpoints --------------------------------------------------------------------------
def read_checkpoint(path: Path) -> Any:
    """A checkpoint's content, loaded safely (``weights_only=True``; safetensors for .safetensors)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise ModelError(f"{path}: not a readable safetensors checkpoint ({_first_line(exc)})") from None
    from ..weights.safeload import torch_load_safely

    return torch_load_safely(path)


def extract_laion_state(obj: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """The laion-clap CLAP state dict inside a loaded checkpoint, and the prefix it was found under."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelError(f"{source}: does not hold a state dict (found {type(obj).__name__})")
    prefixes = {k[: -len(_ANCHOR)] for k in obj if isinstance(k, str) and k.endswith(_ANCHOR)}
    if not prefixes:
        raise ModelError(f"{source}: holds no laion-clap CLAP weights (no '*{_ANCHOR}' key); expected "
                         f"a laion-clap checkpoint such as {DEFAULT_FILE} or the MACS separator checkpoint")
    ranked = [p for p in PREFERRED_PREFIXES if p in prefixes] + sorted(prefixes - set(PREFERRED_PREFIXES),
                                                                       key=lambda p: (len(p), p))
    prefix = ranked[0]
    state = {k[len(prefix):]: v for k, v in obj.items()
             if isinstance(k, str) and k.startswith(prefix) and isinstance(v, torch.Tensor)}
    return state, prefix


# -- the laion-clap backend -----------------------------------------------------------------------
def default_checkpoint(allow_download: bool = False, cache_dir: str | os.PathLike | None = None) -> Path:
    """``630k-audioset-best.pt`` from the Hugging Face cache (or the hub, if allowed)."""
    from ..weights.hub import hub_file

    return hub_file(DEFAULT_REPO, DEFAULT_FILE, f"laion-clap checkpoint {DEFAULT_FILE} ({DEFAULT_REPO})",
                    CLI_FLAG, allow_download, cache_dir)


def load_laion_checkpoint(path: Path, tokenizer: Any = None, allow_download: bool = False,
                          cache_dir: str | os.PathLike | None = None) -> LaionClapEncoder:
    """A :class:`LaionClapEncoder` from a laion-clap checkpoint (or one embedding it)."""
    from .laion_net import LaionClapNet, arch_from_state_dict, load_net_state

    path = Path(path)
    state, prefix = extract_laion_state(read_checkpoint(path), str(path))
    try:
        arch = arch_from_state_dict(state)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    net = load_net_state(LaionClapNet(arch, allow_network=allow_download), state, str(path))
    source = f"{path} ({prefix}*)" if prefix else str(path)
    return LaionClapEncoder(net, tokenizer if tokenizer is not None else ROBERTA,
                            allow_download=allow_download, cache_dir=cache_dir, source=source)


# -- the transformers backend ---------------------------------------------------------------------
def _check_clap_config(config: Path, name: str) -> None:
    try:
        model_type = json.loads(Path(config).read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"{name}: unreadable config.json ({_first_line(exc)})") from None
    if model_type != "clap":
        raise ModelError(f"{name}: config.json describes a {model_type!r} model, not a CLAP model "
                         "(model_type 'clap')")


@contextlib.contextmanager
def _quiet_progress_bars():
    """Hide transformers' weight-loading progress bars for the duration (then restore)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_hf_clap(src: str | os.PathLike, allow_download: bool = False,
                 cache_dir: str | os.PathLike | None = None) -> HFClapEncoder:
    """An :class:`HFClapEncoder` from a hub repo id (cache first) or a saved folder."""
    src = str(src)
    local = Path(src).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelError(f"{local}: no config.json (expected a transformers ClapModel saved with "
                             "save_pretrained)")
        _check_clap_config(local / "config.json", str(local))
        where, kw = str(local), {}
    elif looks_like_path(src):
        raise ModelError(f"{src}: no such folder")
    else:
        from ..weights.hub import hub_file

        kw = {"local_files_only": not allow_download,
              "cache_dir": None if cache_dir is None else str(cache_dir)}
        config = hub_file(src, "config.json", f"CLAP model {src!r}", CLI_FLAG, allow_download, cache_dir)
        _check_clap_config(config, src)
        where = src
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    with _quiet_progress_bars():
        try:
            model = ClapModel.from_pretrained(where, **kw)
        except Exception as exc:
            raise ModelError(f"{src}: cannot load the CLAP model ({_first_line(exc)})") from None
    try:
        fe = ClapFeatureExtractor.from_pretrained(where, **kw)
    except Exception:
        fe = None  # only its settings are used; CLAP's standard ones otherwise
    try:
        tok = AutoTokenizer.from_pretrained(where, **kw)
    except Exception as exc:
        raise ModelError(f"{src}: cannot load the tokenizer ({_first_line(exc)})") from None
    model.eval()
    return HFClapEncoder(model, tok, fe, source=src)


# -- the entry point ------------------------------------------------------------------------------
def load_clap(spec: str | os.PathLike | None = None, device: str | torch.device = "cpu",
              allow_download: bool = False, *, tokenizer: Any = None,
              cache_dir: str | os.PathLike | None = None, require_text: bool = False) -> ClapEncoder:
    """Resolve and load a CLAP encoder (see the module doc for ``spec``).

    ``allow_download``: fetch missing files from the Hugging Face hub (into its cache); without
    it nothing touches the network and missing files raise :class:`ModelError` at once.
    ``tokenizer`` (laion-clap only): a RoBERTa tokenizer object or folder in place of
    ``roberta-base`` from the cache; it is loaded on the first ``embed_text`` call unless
    ``require_text`` asks for it now (a training run that needs text should fail before it
    starts). ``cache_dir``: a Hugging Face cache other than the default.
    """
    spec = "default" if spec in (None, "") else str(spec)
    if spec == "default":
        encoder: ClapEncoder = load_laion_checkpoint(default_checkpoint(allow_download, cache_dir),
                                                     tokenizer, allow_download, cache_dir)
    elif spec == "hf" or spec.startswith("hf:"):
        encoder = load_hf_clap(spec[3:] or DEFAULT_HF_MODEL, allow_download, cache_dir)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            if (path / "config.json").exists():
                encoder = load_hf_clap(path, allow_download, cache_dir)
            else:
                raise ModelError(f"{path}: folder holds no config.json (a transformers CLAP model); pass a "
                                 f"laion-clap checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}) instead")
        elif path.is_file():
            if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
                raise ModelError(f"{path}: not a CLAP checkpoint (expected {', '.join(CHECKPOINT_SUFFIXES)}, "
                                 "a folder with a transformers CLAP model, default or hf:<repo id>)")
            encoder = load_laion_checkpoint(path, tokenizer, allow_download, cache_dir)
        else:
            raise ModelError(f"{path}: no such CLAP checkpoint or folder (expected default, hf:<repo id>, "
                             "a folder with a transformers CLAP model or a laion-clap .pt file)")
    if require_text and isinstance(encoder, LaionClapEncoder):
        encoder.tokenizer  # noqa: B018  (loads and checks it; raises ModelError when missing)
    return encoder.to(device).eval()
