"""Training configuration for ``train-sep``: a YAML file, dotted command-line overrides, validation."""

from __future__ import annotations

import copy
import math
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
    # MACS's CLAP-space losses (macs_cli/training/clap_losses.py): with losses: true the objective
    # is (1 - alpha) mixit + alpha (align + rank), alpha = epoch / (epochs - 1)
    "clap": {"losses": False, "model": None, "tokenizer": None, "download": False,
             "tau1": 100.0, "tau2_init": 2.6592600369327779, "rank_regularization": 1.0,
             "soft_rank": "auto", "batch_chunk": None, "text_template": "The sound of {}",
             "filler": "Noise", "lowercase": True},
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


def load_yaml_config(defaults: dict[str, Any], path: Path | None = None,
                     overrides: list[str] | None = None) -> dict[str, Any]:
    """``defaults`` <- the YAML file <- ``section.key=value`` overrides (unknown keys refused)."""
    cfg = copy.deepcopy(defaults)
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
    return cfg


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The train-sep configuration: DEFAULTS <- YAML recipe <- overrides, validated."""
    cfg = load_yaml_config(DEFAULTS, path, overrides)
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
    validate_clap(cfg, need)


def validate_clap(cfg: dict[str, Any], need) -> None:
    c = cfg["clap"]

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    need(isinstance(c["losses"], bool), f"clap.losses must be true or false (got {c['losses']!r})")
    need(c["model"] is None or (isinstance(c["model"], str) and c["model"].strip() != ""),
         "clap.model must be default, hf, hf:<repo id>, a laion-clap .pt file or a transformers CLAP folder")
    if c["losses"]:
        need(c["model"] is not None, "clap.losses=true needs clap.model (default, hf:<repo id>, a laion-clap "
             ".pt file or a transformers CLAP folder)")
        ws = cfg["model"]["window_seconds"]
        need(not number(ws) or ws <= 10.0, "clap.losses needs model.window_seconds <= 10 "
             "(CLAP embeds clips of at most 10 s)")
    need(number(c["tau1"]) and c["tau1"] > 0, f"clap.tau1 must be > 0 (got {c['tau1']!r})")
    need(number(c["tau2_init"]), f"clap.tau2_init must be a number (got {c['tau2_init']!r})")
    need(number(c["rank_regularization"]) and c["rank_regularization"] > 0,
         f"clap.rank_regularization must be > 0 (got {c['rank_regularization']!r})")
    need(c["soft_rank"] in ("auto", "torchsort", "pairwise"), "clap.soft_rank must be auto, torchsort or pairwise")
    need(c["batch_chunk"] is None or (isinstance(c["batch_chunk"], int) and not isinstance(c["batch_chunk"], bool)
                                      and c["batch_chunk"] > 0),
         f"clap.batch_chunk must be a positive integer or null (got {c['batch_chunk']!r})")
    need(isinstance(c["text_template"], str) and c["text_template"].count("{}") == 1,
         "clap.text_template must contain one {} for the label")
    need(isinstance(c["filler"], str) and c["filler"] != "", "clap.filler must be a non-empty text")
    need(isinstance(c["lowercase"], bool), "clap.lowercase must be true or false")
    need(isinstance(c["download"], bool), "clap.download must be true or false")
