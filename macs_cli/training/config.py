"""Training configuration for ``train-sep``: a YAML file, dotted command-line overrides, validation."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "model": {"num_sources": 6, "channels": 32, "depth": 5, "dropout": 0.1,
              "input_transform": "log_power", "window_seconds": 8.0, "sample_rate": 16000,
              "n_fft": 400, "win_length": 400, "hop_length": 200},
    "data": {"train": None, "heldout": None, "kind": "auto", "max_seconds": 8.0, "max_clips": None},
    "mix": {"sources_per_mixture": [1, 2], "repeats": [1, 3], "gain_db": [-6.0, 6.0], "loop_prob": 0.0},
    "optim": {"lr": 1.0e-3, "weight_decay": 1.0e-2, "betas": [0.9, 0.999], "warmup": 0.1,
              "grad_accum": 1, "batch_size": 8, "clip_grad": 5.0},
    "train": {"steps": 1000, "epochs": 10, "seed": 0, "precision": "auto", "max_minutes": None,
              "exact_mixit": True, "init": None},
    "checkpoint": {"every": 200},
    "validation": {"every": 200, "mixtures": 32, "sources": 2, "seed": 1234, "loop_prob": 0.0},
    "log": {"every": 10},
}


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; accept it (and ``.5``, ``1_000.0``) as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def _merge(base: dict, over: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        where = f"{path}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key '{where}'")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{where}' must be a mapping")
            out[key] = _merge(base[key], value, where + ".")
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=3e-4`` -> (['optim', 'lr'], 0.0003); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = _yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override '{text}': value is not valid YAML") from None
    return key.strip().split("."), value


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        try:
            data = _yaml(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: config must be a mapping")
        cfg = _merge(cfg, data)
    for text in overrides or []:
        keys, value = parse_override(text)
        nested: dict = {}
        cur = nested
        for k in keys[:-1]:
            cur = cur.setdefault(k, {})
        cur[keys[-1]] = value
        cfg = _merge(cfg, nested)
    validate(cfg)
    return cfg


def validate(cfg: dict[str, Any]) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(f"invalid training config: {msg}")

    def pos_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    o, t = cfg["optim"], cfg["train"]
    need(isinstance(o["lr"], (int, float)) and 0 < o["lr"] < 1, f"optim.lr must be in (0, 1) (got {o['lr']!r})")
    need(isinstance(o["weight_decay"], (int, float)) and o["weight_decay"] >= 0, "optim.weight_decay must be >= 0")
    need(isinstance(o["warmup"], (int, float)) and 0 <= o["warmup"] < 1, "optim.warmup must be in [0, 1)")
    need(pos_int(o["grad_accum"]), f"optim.grad_accum must be a positive integer (got {o['grad_accum']!r})")
    need(pos_int(o["batch_size"]), f"optim.batch_size must be a positive integer (got {o['batch_size']!r})")
    need(pos_int(t["steps"]), f"train.steps must be a positive integer (got {t['steps']!r})")
    need(pos_int(t["epochs"]), f"train.epochs must be a positive integer (got {t['epochs']!r})")
    need(t["precision"] in ("auto", "fp32", "bf16", "fp16"), "train.precision must be auto, fp32, bf16 or fp16")
    need(pos_int(cfg["checkpoint"]["every"]), "checkpoint.every must be a positive integer")
    need(pos_int(cfg["validation"]["every"]), "validation.every must be a positive integer")
    need(isinstance(cfg["validation"]["mixtures"], int) and cfg["validation"]["mixtures"] >= 0,
         "validation.mixtures must be >= 0")
    need(cfg["validation"]["sources"] in (2, 3, 4), "validation.sources must be 2, 3 or 4")
    need(cfg["data"]["train"] is not None, "data.train is required (a folder, .csv, .npz or FSD50K root)")
    for key in ("sources_per_mixture", "repeats", "gain_db"):
        v = cfg["mix"][key]
        need(isinstance(v, (list, tuple)) and len(v) == 2, f"mix.{key} must be a [low, high] pair")
