"""Separator weights: our safetensors checkpoints, the official MACS checkpoint, and resolution of a
``--model`` value (``default``, ``official``, a file or a folder) to a loaded model.

Our format: ``<name>.safetensors`` holding the model state dict, its config as JSON in the file's
metadata (key ``macs_config``) and, for humans, the same config in ``<name>.json`` beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, MacsError, ModelError
from ..separation.config import NAMED_CONFIGS, SeparatorConfig
from ..separation.model import Separator
from .statecheck import describe_mismatch, read_safetensors

DEFAULT_DIR = Path(__file__).parent / "default"
DEFAULT_NAME = "separator"
OFFICIAL_REPO = "alxzzz/MACS"
OFFICIAL_FILE = "separator_FSD50K_full.pt"
OFFICIAL_PREFIX = "model.unet."


# -- our format ---------------------------------------------------------------------------------
def save_separator(model: Separator, path: Path, metadata: dict[str, str] | None = None,
                   force: bool = False) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` config together. An existing file there is
    replaced only with ``force`` and only if it is a macs separator checkpoint."""
    from safetensors.torch import save_file

    from ..formats import SEPARATOR_FILE, SEPARATOR_JSON
    from ..fsutil import OutputSet

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"macs_config": json.dumps(model.config.to_dict()), "format": "macs-separator-v1"}
    meta.update(metadata or {})
    with OutputSet(force) as out:
        tmp = out.path(path, SEPARATOR_FILE)
        side = out.path(path.with_suffix(".json"), SEPARATOR_JSON)
        save_file(state, str(tmp), metadata=meta)
        model.config.save(side)
    return path


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], SeparatorConfig]:
    state, meta = read_safetensors(path)
    side = path.with_suffix(".json")
    if side.exists():
        config = SeparatorConfig.load(side)
    elif "macs_config" in meta:
        try:
            config = SeparatorConfig.from_dict(json.loads(meta["macs_config"]))
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: config in metadata is not JSON ({exc})") from None
    else:
        raise ModelError(f"{path}: no config found (expected {side.name} beside it)")
    return state, config


# -- the official checkpoint --------------------------------------------------------------------
def _torch_load(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch's zip format, or a pickle
        raise ModelError(f"{path}: not a PyTorch checkpoint (expected a .pt/.pth file, a .safetensors "
                         "file or a train-sep run folder)")
    from .safeload import torch_load_safely

    return torch_load_safely(path, mmap=False)


def _find_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        return obj
    raise ModelError("checkpoint does not hold a state dict")


def config_from_official_state(state: dict[str, torch.Tensor]) -> SeparatorConfig:
    """Infer M, NC, depth and the STFT geometry from an official-layout separator state dict."""
    try:
        m = state["in_conv.0.weight"].shape[0]
        nc = state["in_conv.4.weight"].shape[0]
        height = state["in_conv.1.row_embed"].shape[1]
        width = state["in_conv.1.col_embed"].shape[1]
    except KeyError as exc:
        raise ModelError(f"not an official MACS separator state dict (missing {exc})") from None
    depth = max(k.count("submodule.") for k in state if k.startswith("unet.") and "downconv" in k) + 1
    base = NAMED_CONFIGS["official"]()
    n_fft = (height - 1) * 2
    hop = n_fft // 2  # the official STFT: hop = n_fft / 2, so the width gives the window length
    seconds = (width - 1) * hop / base.sample_rate
    return base.replace(num_sources=int(m), channels=int(nc), depth=int(depth), n_fft=n_fft,
                        win_length=n_fft, hop_length=hop, window_seconds=seconds)


def official_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Extract the separator weights (``model.unet.*``) from an official checkpoint object."""
    state = _find_state_dict(obj)
    unet = {k[len(OFFICIAL_PREFIX):]: v for k, v in state.items()
            if isinstance(k, str) and k.startswith(OFFICIAL_PREFIX)}
    if unet:
        return {"unet." + k: v for k, v in unet.items()}
    # already a bare separator state dict (ours saved with torch.save, or pre-stripped)
    if any(k.startswith("unet.in_conv.") for k in state):
        return dict(state)
    if any(k.startswith("in_conv.") for k in state):
        return {"unet." + k: v for k, v in state.items()}
    raise ModelError("checkpoint holds no separator weights (no 'model.unet.*' keys)")


def _load_torch_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], SeparatorConfig]:
    obj = _torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("macs_config"), dict):
        config = SeparatorConfig.from_dict(obj["macs_config"])
        return official_state_dict(obj), config
    state = official_state_dict(obj)
    bare = {k[len("unet."):]: v for k, v in state.items()}
    return state, config_from_official_state(bare)


# -- building a model ---------------------------------------------------------------------------
def build_from_state(state: dict[str, torch.Tensor], config: SeparatorConfig, source: str,
                     check_shapes: bool = True) -> Separator:
    """A separator from a state dict and the config that came with it. The config is checked
    against the tensors on the ``meta`` device first (no memory is allocated), so a file whose
    metadata asks for a huge model is refused before anything is built. ``check_shapes=False``
    skips that check, for the built-in model shipped with the package: building on the meta device
    imports torch's compiler stack (torch._dynamo, sympy), over a second of start-up; the strict
    ``load_state_dict`` still refuses a mismatch."""
    if check_shapes:
        with torch.device("meta"):
            shapes = Separator(config).state_dict()
        problem = describe_mismatch(shapes, state)
        if problem:
            raise ModelError(f"{source}: checkpoint does not fit the separator its config describes ({problem})")
    model = Separator(config)
    model.load_state_dict(state)
    model.eval()
    return model


def _official_path(allow_download: bool = False) -> Path:
    """The official checkpoint from $MACS_OFFICIAL_SEPARATOR, the Hugging Face cache, or (only
    with ``allow_download``) the hub."""
    env = os.environ.get("MACS_OFFICIAL_SEPARATOR")
    if env:
        return Path(env)
    from .hub import hub_file

    return hub_file(OFFICIAL_REPO, OFFICIAL_FILE, f"official separator {OFFICIAL_FILE}",
                    f"--model /path/to/{OFFICIAL_FILE}", allow_download)


def load_separator(spec: str | os.PathLike | None = "default", device: str | torch.device = "cpu",
                   allow_download: bool = False) -> Separator:
    """Resolve and load a separator.

    ``spec``: ``default`` (the model shipped in the package), ``official`` (the MACS authors'
    checkpoint from the Hugging Face cache or hub), a ``.safetensors`` file, a ``.pt``/``.ckpt``
    file (official layout or a ``train-sep`` checkpoint), or a folder holding ``separator.safetensors``.
    """
    spec = "default" if spec in (None, "") else str(spec)
    if spec == "default":
        path = DEFAULT_DIR / f"{DEFAULT_NAME}.safetensors"
        if not path.exists():
            raise ModelError(f"the built-in separator is missing from the package ({path}); "
                             "reinstall macs or pass --model PATH")
    elif spec == "official":
        path = _official_path(allow_download)
    else:
        path = Path(spec).expanduser()
    if path.is_dir():
        cands = [path / f"{DEFAULT_NAME}.safetensors", *sorted(path.glob("*.safetensors"))]
        found = next((c for c in cands if c.exists()), None)
        if found is None:
            raise ModelError(f"{path}: folder holds no .safetensors separator checkpoint")
        path = found
    if not path.exists():
        raise ModelError(f"{path}: no such checkpoint")
    try:
        if path.suffix == ".safetensors":
            state, config = _load_safetensors(path)
        else:
            state, config = _load_torch_checkpoint(path)
        model = build_from_state(state, config, str(path), check_shapes=spec != "default")
    except ConfigError as exc:
        raise ModelError(f"{path}: {exc}") from None
    except MacsError:
        raise
    model.source = str(path)  # type: ignore[attr-defined]
    return model.to(device)

