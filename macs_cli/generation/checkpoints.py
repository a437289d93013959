"""Adapter checkpoints: our safetensors format and the official MACS ``<Dataset>_mlp.pt`` +
``<Dataset>_unet.pt`` pair, and resolution of ``--adapter`` values.

Our format: ``<name>.safetensors`` holding only the trained tensors under the official key names
(``pe``, ``adapter.*``, ``<layer>.attn2.processor.to_k_ip.weight``/``to_v_ip.weight``), with the
adapter's config as JSON in the file's metadata (key ``macs_config``) and, for humans, in
``<name>.json`` beside it. The config also records the backbone the adapter was trained on
(``sd_model``) and the text length the processors split at (``text_tokens``).

The official pair is read with ``torch.load(weights_only=True)`` (never unpickled):
``<Dataset>_mlp.pt`` is the MLP's state dict (``pe``, ``adapter.*``) and ``<Dataset>_unet.pt`` the
whole UNet state dict including the processor weights. The UNet's own weights in that file are
loaded too (they are what the authors generated with), unless ``backbone_weights=False``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ModelError
from ..formats import STEM_ORDERS
from ..weights.statecheck import read_safetensors
from .adapter import AdapterConfig, MacsAdapter, config_from_state, trainable_keys

FORMAT = "macs-adapter-v1"
DEFAULT_NAME = "adapter"
OFFICIAL_REPO = "alxzzz/MACS"
# train-gen adapters saved before the order was recorded were trained on ranked stems (data.rank's
# default); the official adapters on the official separator's own output order
LEGACY_STEM_ORDER = "significance"
OFFICIAL_STEM_ORDER = "separator"
# how the official inference loaders pad a clip shorter than 8 s before separating it
# (dataloader/landscape.py: zeros; llp.py and audioset.py: numpy's 'reflect')
OFFICIAL_WINDOW_PAD = {"landscape": "zeros", "llp": "reflect", "audioset": "reflect"}


@dataclass
class AdapterSource:
    """A resolved adapter, not yet installed: its tensors, sizes and where they came from."""

    state: dict[str, torch.Tensor]            # the adapter's tensors (official key names)
    config: AdapterConfig
    kind: str                                 # "macs" or "official"
    files: list[str]
    sd_model: str | None = None               # the backbone it was trained on, when recorded
    text_tokens: int | None = None
    backbone_state: dict[str, torch.Tensor] | None = None   # official: the UNet's own weights
    meta: dict[str, Any] = field(default_factory=dict)
    stem_order: str = LEGACY_STEM_ORDER       # the order of the stems it was trained on
    dataset: str | None = None                # official: the <Dataset> of its file names

    @property
    def window_pad(self) -> str | None:
        """How a clip shorter than the separator's window is padded before separation for this
        adapter: the official loader's padding for official adapters, None (separate the clip as it
        is, as train-gen did) for ours."""
        if self.kind != "official":
            return None
        return OFFICIAL_WINDOW_PAD.get((self.dataset or "").lower(), "zeros")

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "files": self.files, "config": self.config.to_dict(),
                "trained_on": self.sd_model, "stem_order": self.stem_order,
                **({"dataset": self.dataset} if self.dataset else {}),
                **({"meta": self.meta} if self.meta else {})}


# -- ours -------------------------------------------------------------------------------------------
def save_adapter(adapter: MacsAdapter, path: str | os.PathLike, sd_model: str | None = None,
                 text_tokens: int | None = None, metadata: dict[str, str] | None = None,
                 force: bool = False, stem_order: str = "significance") -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` sidecar together; returns the path. An
    existing file there is replaced only with ``force`` and only if it is a macs adapter.

    ``stem_order``: the order of the stem embeddings the adapter was trained on (``separator`` or
    ``significance``, or ``mixed``); ``generate`` feeds stems in that order by default."""
    from ..formats import ADAPTER_FILE, ADAPTER_JSON
    from ..fsutil import OutputSet

    from safetensors.torch import save_file

    if stem_order not in (*STEM_ORDERS, "mixed"):
        raise ConfigError(f"stem_order must be separator, significance or mixed (got {stem_order!r})")
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in adapter.state_dict().items()}
    if text_tokens is None and adapter.processors:
        text_tokens = next(iter(adapter.processors.values())).text_tokens
    config = {**adapter.config.to_dict(), "sd_model": sd_model, "text_tokens": text_tokens,
              "layers": len(adapter.processors), "stem_order": stem_order}
    meta = {"format": FORMAT, "macs_config": json.dumps(config)}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    with OutputSet(force) as out:
        tmp = out.path(path, ADAPTER_FILE)
        side = out.path(path.with_suffix(".json"), ADAPTER_JSON)
        save_file(state, str(tmp), metadata=meta)
        side.write_text(json.dumps({"format": FORMAT, **config, **(metadata or {})}, indent=2) + "\n")
    return path


def read_adapter_file(path: Path) -> AdapterSource:
    state, meta = read_safetensors(path, "adapter")
    cfg: dict[str, Any] = {}
    if "macs_config" in meta:
        try:
            cfg = json.loads(meta["macs_config"])
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: config in metadata is not JSON ({exc})") from None
    elif path.with_suffix(".json").exists():
        try:
            cfg = json.loads(path.with_suffix(".json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path.with_suffix('.json')}: unreadable ({exc})") from None
    state = trainable_keys(state)
    try:
        config = AdapterConfig.from_dict(cfg) if cfg else config_from_state(state, str(path))
    except ConfigError as exc:
        raise ModelError(f"{path}: {exc}") from None
    check = config_from_state(state, str(path))
    if (check.num_tokens, check.clap_dim, check.hidden_dim, check.cross_attention_dim) != \
            (config.num_tokens, config.clap_dim, config.hidden_dim, config.cross_attention_dim):
        raise ModelError(f"{path}: the tensors do not match the config stored with them")
    extra = {k: v for k, v in meta.items() if k not in ("format", "macs_config")}
    order = cfg.get("stem_order") or LEGACY_STEM_ORDER
    if order not in (*STEM_ORDERS, "mixed"):
        raise ModelError(f"{path}: unknown stem_order {order!r} in its config")
    return AdapterSource(state, config, "macs", [str(Path(path).resolve())], cfg.get("sd_model"),
                         cfg.get("text_tokens"), meta=extra, stem_order=order)


# -- official -------------------------------------------------------------------------------------
def _torch_load(path: Path) -> Any:
    from ..weights.safeload import torch_load_safely

    return torch_load_safely(path)


def _state_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: does not hold a state dict (found {type(obj).__name__})")
    out = {}
    for k, v in obj.items():
        if isinstance(k, str) and isinstance(v, torch.Tensor):
            out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def load_official(mlp_path: str | os.PathLike, unet_path: str | os.PathLike,
                  backbone_weights: bool = True) -> AdapterSource:
    """The official ``<Dataset>_mlp.pt`` + ``<Dataset>_unet.pt`` pair as an :class:`AdapterSource`."""
    mlp_path, unet_path = Path(mlp_path), Path(unet_path)
    for p in (mlp_path, unet_path):
        if not p.exists():
            raise ModelError(f"{p}: no such file")
    mlp = _state_of(_torch_load(mlp_path), mlp_path)
    if "pe" not in mlp or not any(k.startswith("adapter.") for k in mlp):
        raise ModelError(f"{mlp_path}: not an official MACS MLP checkpoint (expected 'pe' and 'adapter.*' keys)")
    unet = _state_of(_torch_load(unet_path), unet_path)
    ip = {k: v for k, v in unet.items() if k.endswith((".to_k_ip.weight", ".to_v_ip.weight"))}
    if not ip:
        raise ModelError(f"{unet_path}: holds no decoupled cross-attention weights "
                         "('...attn2.processor.to_k_ip.weight'): not an official MACS UNet checkpoint")
    state = {**{k: v for k, v in mlp.items() if k == "pe" or k.startswith("adapter.")}, **ip}
    config = config_from_state(state, str(mlp_path))
    backbone = {k: v for k, v in unet.items() if k not in ip} if backbone_weights else None
    name = mlp_path.name
    dataset = name[: -len("_mlp.pt")] if name.endswith("_mlp.pt") else None
    return AdapterSource(state, config, "official", [str(mlp_path.resolve()), str(unet_path.resolve())],
                         backbone_state=backbone or None, stem_order=OFFICIAL_STEM_ORDER, dataset=dataset)


def _official_from_hub(dataset: str, allow_download: bool) -> tuple[Path, Path]:
    from ..weights.hub import hub_file

    files = (f"{dataset}_mlp.pt", f"{dataset}_unet.pt")
    what = f"official MACS adapter '{dataset}' ({files[0]}, {files[1]})"
    return tuple(hub_file(OFFICIAL_REPO, f, what, "--adapter-mlp/--adapter-unet", allow_download)  # type: ignore
                 for f in files)


def _official_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    pairs = {}
    for mlp in sorted(folder.glob("*_mlp.pt")):
        name = mlp.name[: -len("_mlp.pt")]
        unet = folder / f"{name}_unet.pt"
        if unet.exists():
            pairs[name] = (mlp, unet)
    return pairs


def resolve_adapter(adapter: str | os.PathLike | None = None, adapter_mlp: str | os.PathLike | None = None,
                    adapter_unet: str | os.PathLike | None = None, allow_download: bool = False,
                    backbone_weights: bool = True) -> AdapterSource:
    """Resolve ``--adapter`` (or the ``--adapter-mlp``/``--adapter-unet`` pair) to an AdapterSource.

    ``adapter`` may be: our ``.safetensors`` file; a ``train-gen`` run folder or any folder holding
    ``adapter.safetensors`` (or one ``*.safetensors``) or one official ``<Dataset>_mlp.pt`` +
    ``<Dataset>_unet.pt`` pair; an official ``*_mlp.pt`` (its ``*_unet.pt`` beside it); or
    ``official:<Dataset>`` for the authors' files in the Hugging Face cache (``alxzzz/MACS``).
    """
    if (adapter_mlp is None) != (adapter_unet is None):
        raise ConfigError("--adapter-mlp and --adapter-unet go together (the official pair)")
    if adapter_mlp is not None:
        if adapter is not None:
            raise ConfigError("pass either --adapter or the --adapter-mlp/--adapter-unet pair, not both")
        return load_official(adapter_mlp, adapter_unet, backbone_weights)  # type: ignore[arg-type]
    if adapter is None or str(adapter) == "":
        raise ConfigError("no adapter given: pass --adapter (a .safetensors from `macs train-gen`, a run folder, "
                          "an official <Dataset>_mlp.pt/_unet.pt pair or official:<Dataset>)")
    spec = str(adapter)
    if spec.startswith("official:"):
        dataset = spec[len("official:"):].strip()
        if not dataset:
            raise ConfigError("--adapter official:<Dataset>, e.g. official:Landscape")
        return load_official(*_official_from_hub(dataset, allow_download), backbone_weights=backbone_weights)
    path = Path(spec).expanduser()
    if path.is_dir():
        ours = [path / f"{DEFAULT_NAME}.safetensors"] + sorted(path.glob("*.safetensors"))
        found = next((p for p in ours if p.exists()), None)
        if found is not None:
            return read_adapter_file(found)
        pairs = _official_pairs(path)
        if len(pairs) == 1:
            mlp, unet = next(iter(pairs.values()))
            return load_official(mlp, unet, backbone_weights)
        if len(pairs) > 1:
            raise ModelError(f"{path}: holds several official adapters ({', '.join(pairs)}); pass "
                             "--adapter-mlp and --adapter-unet")
        raise ModelError(f"{path}: holds no adapter (adapter.safetensors or <Dataset>_mlp.pt + <Dataset>_unet.pt)")
    if not path.exists():
        raise ModelError(f"{path}: no such adapter file or folder")
    if path.suffix == ".safetensors":
        return read_adapter_file(path)
    if path.name.endswith("_mlp.pt") or path.name.endswith("_unet.pt"):
        base = path.name[: -len("_mlp.pt")] if path.name.endswith("_mlp.pt") else path.name[: -len("_unet.pt")]
        mlp, unet = path.parent / f"{base}_mlp.pt", path.parent / f"{base}_unet.pt"
        if not (mlp.exists() and unet.exists()):
            raise ModelError(f"{path}: the official adapter is a pair; {mlp.name} and {unet.name} must sit "
                             "side by side (or pass --adapter-mlp/--adapter-unet)")
        return load_official(mlp, unet, backbone_weights)
    raise ModelError(f"{path}: not an adapter (expected .safetensors, an official *_mlp.pt/*_unet.pt pair or a folder)")

