"""Training configurations of ``train-sep`` and ``train-gen``: typed sections (dataclasses), a YAML
file, dotted command-line overrides, and the validation of every value."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import yaml

from ..errors import ConfigError

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


def separator_config(cfg: dict[str, Any], init_align_corners: bool | None = None,
                     name: str = "macs-trained") -> "SeparatorConfig":
    """The separator config of a training config; ``model.align_corners: null`` takes the value of the
    model training starts from (``init_align_corners``), else True (the official network's resize)."""
    from ..separation.config import SeparatorConfig

    model = dict(cfg["model"])
    if model.get("align_corners") is None:
        model["align_corners"] = True if init_align_corners is None else bool(init_align_corners)
    return SeparatorConfig(**model, name=name).validate()




# data.kind values train-sep understands (macs_cli/training/data.py)
DATA_KINDS = ("auto", "folder", "csv", "fsd50k", "npz")


def _number(v: Any) -> bool:
    """A finite int or float (not a bool, not NaN or infinity)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pos_int(v: Any) -> bool:
    return _integer(v) and v > 0


def _text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _pair(v: Any, item=_number) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(item(x) for x in v)


def _formats(template: str) -> bool:
    try:
        template.format("label")
    except (IndexError, KeyError, ValueError):
        return False
    return True


def validate(cfg: dict[str, Any]) -> None:
    """Check the type and range of every value, so that a bad one is a one-line ConfigError before
    anything is written or trained (never a traceback or a silent misbehaviour mid-run)."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(f"invalid training config: {msg}")

    need(cfg["model"].get("align_corners") is None or isinstance(cfg["model"]["align_corners"], bool),
         f"model.align_corners must be true, false or null (got {cfg['model'].get('align_corners')!r})")
    separator_config(cfg)

    d = cfg["data"]
    need(d["train"] is not None, "data.train is required (a folder, .csv, .npz or FSD50K root)")
    hint = "; write a path that reads as a number or true/false as ./NAME"
    need(_text(d["train"]), f"data.train must be a path (a folder, .csv, .npz or FSD50K root; "
         f"got {d['train']!r}{hint if isinstance(d['train'], (bool, int, float)) else ''})")
    need(d["heldout"] is None or _text(d["heldout"]),
         f"data.heldout must be a path or null (got {d['heldout']!r}"
         f"{hint if isinstance(d['heldout'], (bool, int, float)) else ''})")
    need(d["kind"] in DATA_KINDS, f"data.kind must be one of {', '.join(DATA_KINDS)} (got {d['kind']!r})")
    need(d["max_seconds"] is None or (_number(d["max_seconds"]) and d["max_seconds"] > 0),
         f"data.max_seconds must be > 0 (seconds kept per clip) or null for whole clips "
         f"(got {d['max_seconds']!r})")
    need(d["max_clips"] is None or _pos_int(d["max_clips"]),
         f"data.max_clips must be a positive integer or null for all clips (got {d['max_clips']!r})")

    m = cfg["mix"]
    for key in ("sources_per_mixture", "repeats"):
        v = m[key]
        need(_pair(v, _integer) and 1 <= v[0] <= v[1] <= 8,
             f"mix.{key} must be two integers lo, hi with 1 <= lo <= hi <= 8 (got {v!r})")
    v = m["gain_db"]
    need(_pair(v) and -100 <= v[0] <= v[1] <= 100,
         f"mix.gain_db must be two numbers low, high (dB) with -100 <= low <= high <= 100 (got {v!r})")
    need(_number(m["loop_prob"]) and 0 <= m["loop_prob"] <= 1,
         f"mix.loop_prob must be in [0, 1] (got {m['loop_prob']!r})")
    v = m["total_sources"]
    need(v is None or (_pair(v, _integer) and 1 <= v[0] <= v[1] <= 8 and v[1] >= 2),
         f"mix.total_sources must be null or two integers lo, hi with 1 <= lo <= hi <= 8 and hi >= 2 "
         f"(got {v!r})")

    lo = cfg["loss"]
    need(_number(lo["sparsity"]) and 0 <= lo["sparsity"] <= 100,
         f"loss.sparsity must be a number in [0, 100] (0: off; got {lo['sparsity']!r})")
    need(lo["sparsity_kind"] in ("l1_l2", "l1"),
         f"loss.sparsity_kind must be l1_l2 or l1 (got {lo['sparsity_kind']!r})")

    a = cfg["augment"]
    for key in ("eq_prob", "reverb_prob"):
        need(_number(a[key]) and 0 <= a[key] <= 1, f"augment.{key} must be in [0, 1] (got {a[key]!r})")
    need(_number(a["eq_db"]) and 0 <= a["eq_db"] <= 24, f"augment.eq_db must be in [0, 24] dB (got {a['eq_db']!r})")
    need(_pair(a["rt60"]) and 0.05 <= a["rt60"][0] <= a["rt60"][1] <= 3.0,
         f"augment.rt60 must be two numbers lo, hi (seconds) with 0.05 <= lo <= hi <= 3 (got {a['rt60']!r})")
    need(_pair(a["drr_db"]) and -20 <= a["drr_db"][0] <= a["drr_db"][1] <= 40,
         f"augment.drr_db must be two numbers lo, hi (dB) with -20 <= lo <= hi <= 40 (got {a['drr_db']!r})")

    o = cfg["optim"]
    need(_number(o["lr"]) and 0 < o["lr"] < 1, f"optim.lr must be in (0, 1) (got {o['lr']!r})")
    need(_number(o["weight_decay"]) and o["weight_decay"] >= 0,
         f"optim.weight_decay must be >= 0 (got {o['weight_decay']!r})")
    need(_pair(o["betas"]) and all(0 <= b < 1 for b in o["betas"]),
         f"optim.betas must be two numbers in [0, 1) (got {o['betas']!r})")
    need(_number(o["warmup"]) and 0 <= o["warmup"] < 1, f"optim.warmup must be in [0, 1) (got {o['warmup']!r})")
    need(_pos_int(o["grad_accum"]), f"optim.grad_accum must be a positive integer (got {o['grad_accum']!r})")
    need(_pos_int(o["batch_size"]), f"optim.batch_size must be a positive integer (got {o['batch_size']!r})")
    need(_number(o["clip_grad"]) and o["clip_grad"] >= 0,
         f"optim.clip_grad must be >= 0 (0: no clipping; got {o['clip_grad']!r})")

    t = cfg["train"]
    need(_pos_int(t["steps"]), f"train.steps must be a positive integer (got {t['steps']!r})")
    need(_pos_int(t["epochs"]), f"train.epochs must be a positive integer (got {t['epochs']!r})")
    need(_integer(t["seed"]) and 0 <= t["seed"] < 2 ** 63,
         f"train.seed must be a non-negative integer (got {t['seed']!r})")
    need(t["precision"] in ("auto", "fp32", "bf16", "fp16"), "train.precision must be auto, fp32, bf16 or fp16")
    need(t["max_minutes"] is None or (_number(t["max_minutes"]) and t["max_minutes"] > 0),
         f"train.max_minutes must be > 0 or null (no time limit; got {t['max_minutes']!r})")
    need(isinstance(t["exact_mixit"], bool), f"train.exact_mixit must be true or false (got {t['exact_mixit']!r})")
    need(t["init"] is None or _text(t["init"]),
         f"train.init must be default, official, a checkpoint or a run folder, or null (got {t['init']!r})")

    need(_pos_int(cfg["checkpoint"]["every"]),
         f"checkpoint.every must be a positive integer (got {cfg['checkpoint']['every']!r})")
    need(_pos_int(cfg["log"]["every"]), f"log.every must be a positive integer (got {cfg['log']['every']!r})")

    v = cfg["validation"]
    need(_pos_int(v["every"]), f"validation.every must be a positive integer (got {v['every']!r})")
    need(_integer(v["mixtures"]) and v["mixtures"] >= 0,
         f"validation.mixtures must be an integer >= 0 (0: no validation; got {v['mixtures']!r})")
    counts = v["sources"] if isinstance(v["sources"], list) else [v["sources"]]
    need(len(counts) > 0 and all(_integer(c) and c in (2, 3, 4) for c in counts),
         f"validation.sources must be 2, 3 or 4, or a list of them (got {v['sources']!r})")
    need(max(counts) <= cfg["model"]["num_sources"],
         f"validation.sources ({v['sources']}) must not exceed model.num_sources ({cfg['model']['num_sources']})")
    need(v["mode"] in ("real", "sparse"), f"validation.mode must be real or sparse (got {v['mode']!r})")
    need(_integer(v["seed"]) and 0 <= v["seed"] < 2 ** 63,
         f"validation.seed must be a non-negative integer (got {v['seed']!r})")
    need(_number(v["loop_prob"]) and 0 <= v["loop_prob"] <= 1,
         f"validation.loop_prob must be in [0, 1] (got {v['loop_prob']!r})")
    need(v["loop_prob"] == 0 or v["mode"] == "sparse",
         "validation.loop_prob applies to validation.mode=sparse only (real-condition mixtures loop "
         "steady sounds by their label)")
    validate_clap(cfg, need)


def validate_clap(cfg: dict[str, Any], need) -> None:
    c = cfg["clap"]
    number = _number

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
    need(c["tokenizer"] is None or _text(c["tokenizer"]),
         f"clap.tokenizer must be a tokenizer folder or null (got {c['tokenizer']!r})")
    need(isinstance(c["text_template"], str) and c["text_template"].count("{}") == 1
         and _formats(c["text_template"]),
         f"clap.text_template must contain one {{}} for the label and no other braces "
         f"(got {c['text_template']!r})")
    need(isinstance(c["filler"], str) and c["filler"] != "", "clap.filler must be a non-empty text")
    need(isinstance(c["lowercase"], bool), "clap.lowercase must be true or false")
    v = c["labels_per_mixture"]
    need(v is None or (_integer(v) and 1 <= v <= 64),
         f"clap.labels_per_mixture must be an integer in 1..64 or null (M / 2 each; got {v!r})")
    need(isinstance(c["download"], bool), "clap.download must be true or false")


# -- the typed configurations -------------------------------------------------------------------
# Each trainer's configuration is a dataclass of sections; the field names are the YAML keys and
# the field defaults are the defaults. The YAML and the run's config.yaml stay plain mappings
# (``to_dict``); the trainers read the typed view (``from_dict``, validated).

def _list(*items):
    return field(default_factory=lambda: list(items))


def _section(cls, **values):
    return field(default_factory=lambda: cls(**values))


@dataclass
class SeparatorModelConfig:
    num_sources: int = 6
    channels: int = 32
    depth: int = 5
    dropout: float = 0.1
    input_transform: str = "log_power"
    window_seconds: float = 8.0
    sample_rate: int = 16000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 200
    # the U-Net's bilinear resize; null: that of train.init's model, else true (the official)
    align_corners: bool | None = None


@dataclass
class SeparatorDataConfig:
    train: str | None = None
    heldout: str | None = None
    kind: str = "auto"
    max_seconds: float | None = 8.0
    max_clips: int | None = None


@dataclass
class MixConfig:
    sources_per_mixture: list = _list(1, 2)
    repeats: list = _list(1, 3)
    gain_db: list = _list(-6.0, 6.0)
    loop_prob: float = 0.0
    # null, or [lo, hi] sources in the whole mixture of mixtures (split at random between m1 and
    # m2; with lo = 1, m2 may be empty): replaces sources_per_mixture when set
    total_sources: list | None = None
    # clip draw: each clip weighs n ** -balance, n the clips sharing its first label (0: every clip
    # alike; 1: every category alike)
    balance: float = 0.0


@dataclass
class LossConfig:
    """Extra loss terms beside MixIT: ``sparsity``, the weight of the stem-activity penalty (sparse
    MixIT; 0: off), ``sparsity_kind`` l1_l2 or l1 (:class:`macs_cli.training.losses.StemSparsity`)."""
    sparsity: float = 0.0
    sparsity_kind: str = "l1_l2"


@dataclass
class AugmentConfig:
    """Per-source augmentation before the mixtures are summed (macs_cli.training.augment); 0: off."""
    eq_prob: float = 0.0
    eq_db: float = 6.0
    reverb_prob: float = 0.0
    rt60: list = _list(0.2, 0.8)
    drr_db: list = _list(0.0, 10.0)


@dataclass
class SeparatorOptimConfig:
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-2
    betas: list = _list(0.9, 0.999)
    warmup: float = 0.1
    grad_accum: int = 1
    batch_size: int = 8
    clip_grad: float = 5.0

    @property
    def clip_mode(self) -> str:   # train-sep always clips the gradient norm
        return "norm"


@dataclass
class SeparatorTrainConfig:
    steps: int = 1000
    epochs: int = 10
    seed: int = 0
    precision: str = "auto"
    max_minutes: float | None = None
    exact_mixit: bool = True
    init: str | None = None


@dataclass
class CheckpointConfig:
    every: int = 200


@dataclass
class LogConfig:
    every: int = 10


@dataclass
class ValidationConfig:
    """Held-out validation: "real" mixtures (every pair of sources overlapping, levels within 5 dB,
    steady sounds looped; data.real_eval_set) or the first, "sparse" set (sources placed at random,
    mostly not overlapping; loop_prob applies to it only). ``mixtures``: in all, split over sources."""
    every: int = 200
    mixtures: int = 32
    sources: list | int = _list(2, 3)
    seed: int = 1234
    mode: str = "real"
    loop_prob: float = 0.0


@dataclass
class ClapConfig:
    """MACS's CLAP-space losses (macs_cli/training/clap_losses.py): with ``losses: true`` the
    objective is (1 - alpha) mixit + alpha (align + rank), alpha = epoch / (epochs - 1)."""
    losses: bool = False
    model: str | None = None
    tokenizer: str | None = None
    download: bool = False
    tau1: float = 100.0
    tau2_init: float = 2.6592600369327779
    rank_regularization: float = 1.0
    soft_rank: str = "auto"
    batch_chunk: int | None = None
    text_template: str = "The sound of {}"
    filler: str = "Noise"
    lowercase: bool = True
    # texts per source mixture (m1, m2): the official FSD50K recipe gives each clip 5; null: M / 2 each
    labels_per_mixture: int | None = None


class TrainingConfig:
    """What both typed configurations share: the dict form, the typed view, loading and validation."""

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return cls().to_dict()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], validate: bool = True) -> "TrainingConfig":
        """The typed view of a configuration mapping (sections or keys it lacks take their defaults)."""
        full = _merge(cls.defaults(), cfg)
        if validate:
            cls.validate(full)
        return cls(**{f.name: type(f.default_factory())(**full[f.name]) for f in fields(cls)})

    @classmethod
    def load(cls, path: Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
        """Defaults <- the YAML recipe <- ``section.key=value`` overrides, validated (a mapping)."""
        cfg = load_yaml_config(cls.defaults(), path, overrides)
        cls.validate(cfg)
        return cfg

    @staticmethod
    def validate(cfg: dict[str, Any]) -> None:  # pragma: no cover - each configuration defines it
        raise NotImplementedError


@dataclass
class SeparatorTrainingConfig(TrainingConfig):
    """``train-sep``'s configuration."""
    model: SeparatorModelConfig = _section(SeparatorModelConfig)
    data: SeparatorDataConfig = _section(SeparatorDataConfig)
    mix: MixConfig = _section(MixConfig)
    loss: LossConfig = _section(LossConfig)
    augment: AugmentConfig = _section(AugmentConfig)
    optim: SeparatorOptimConfig = _section(SeparatorOptimConfig)
    train: SeparatorTrainConfig = _section(SeparatorTrainConfig)
    checkpoint: CheckpointConfig = _section(CheckpointConfig, every=200)
    validation: ValidationConfig = _section(ValidationConfig)
    log: LogConfig = _section(LogConfig)
    clap: ClapConfig = _section(ClapConfig)

    @staticmethod
    def validate(cfg: dict[str, Any]) -> None:
        validate(cfg)


@dataclass
class AdapterModelConfig:
    sd_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    allow_download: bool = False
    num_tokens: int = 6
    hidden_dim: int = 2048
    dropout: float = 0.5
    pe_std: float = 0.05
    prompt: str = ""
    init: str | None = None


@dataclass
class PairedDataConfig:
    train: str | None = None
    kind: str = "auto"
    split: str = "train"
    resolution: list = _list(512, 512)
    flip: bool = False
    max_items: int | None = None
    rank: bool = True
    top_k: int | None = None
    cache_dir: str | None = None
    separator: str = "default"
    clap: str = "default"
    clap_download: bool = False


@dataclass
class AdapterOptimConfig:
    lr: float = 1.0e-4
    betas: list = _list(0.9, 0.999)
    weight_decay: float = 1.0e-2
    warmup: float = 0.1
    batch_size: int = 2
    grad_accum: int = 8
    clip_grad: float = 1.0
    clip_mode: str = "value"


@dataclass
class AdapterTrainConfig:
    steps: int | None = 1000
    epochs: int | None = None
    seed: int = 0
    precision: str = "auto"
    uncond_prob: float = 0.1
    max_minutes: float | None = None
    gradient_checkpointing: bool = False


@dataclass
class SampleConfig:
    every: int = 500              # steps between sample grids (0: none)
    count: int = 4                # the first clips' embeddings
    steps: int = 20
    guidance: float = 7.5
    seed: int = 0
    height: int | None = None     # null: data.resolution
    width: int | None = None


@dataclass
class AdapterTrainingConfig(TrainingConfig):
    """``train-gen``'s configuration: the audio adapter trained on a frozen SD v1.x, one field per
    section of its YAML file."""
    model: AdapterModelConfig = _section(AdapterModelConfig)
    data: PairedDataConfig = _section(PairedDataConfig)
    optim: AdapterOptimConfig = _section(AdapterOptimConfig)
    train: AdapterTrainConfig = _section(AdapterTrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(every=500))
    sample: SampleConfig = _section(SampleConfig)
    log: LogConfig = _section(LogConfig)

    @staticmethod
    def validate(cfg: dict[str, Any]) -> None:
        validate_gen(cfg)


DEFAULTS: dict[str, Any] = SeparatorTrainingConfig.defaults()
GEN_DEFAULTS: dict[str, Any] = AdapterTrainingConfig.defaults()


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The train-sep configuration: defaults <- YAML recipe <- overrides, validated."""
    return SeparatorTrainingConfig.load(path, overrides)


def load_gen_config(path: Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The train-gen configuration: defaults <- YAML recipe <- overrides, validated."""
    return AdapterTrainingConfig.load(path, overrides)


def validate_gen(cfg: dict[str, Any]) -> None:
    """The train-gen counterpart of :func:`validate`."""
    from ..generation.pipeline import MAX_GUIDANCE, MAX_SIDE

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(f"invalid train-gen config: {msg}")

    m, d, o, t, s = cfg["model"], cfg["data"], cfg["optim"], cfg["train"], cfg["sample"]
    need(isinstance(m["sd_model"], str) and m["sd_model"].strip() != "", "model.sd_model must be a hub id or folder")
    need(_pos_int(m["num_tokens"]), "model.num_tokens must be a positive integer (M, the stems per clip)")
    need(_pos_int(m["hidden_dim"]), "model.hidden_dim must be a positive integer")
    need(_number(m["dropout"]) and 0 <= m["dropout"] < 1, "model.dropout must be in [0, 1)")
    need(_number(m["pe_std"]) and m["pe_std"] >= 0, "model.pe_std must be >= 0")
    need(isinstance(m["prompt"], str), "model.prompt must be a text")
    need(d["train"] is not None, "data.train is required (a CSV manifest or a Landscape/LLP-multi folder)")
    need(d["kind"] in ("auto", "csv", "landscape", "llp"), "data.kind must be auto, csv, landscape or llp")
    r = d["resolution"]
    need(isinstance(r, (list, tuple)) and len(r) == 2 and all(_pos_int(v) and v % 8 == 0 and 64 <= v <= MAX_SIDE
                                                              for v in r),
         f"data.resolution must be [height, width], multiples of 8 in 64..{MAX_SIDE} (got {r!r})")
    need(isinstance(d["flip"], bool) and isinstance(d["rank"], bool), "data.flip and data.rank must be true or false")
    need(d["top_k"] is None or _pos_int(d["top_k"]), "data.top_k must be a positive integer or null")
    need(d["max_items"] is None or _pos_int(d["max_items"]), "data.max_items must be a positive integer or null")
    need(_number(o["lr"]) and 0 < o["lr"] < 1, f"optim.lr must be in (0, 1) (got {o['lr']!r})")
    need(_number(o["weight_decay"]) and o["weight_decay"] >= 0, "optim.weight_decay must be >= 0")
    need(_number(o["warmup"]) and 0 <= o["warmup"] < 1, "optim.warmup must be in [0, 1)")
    need(isinstance(o["betas"], (list, tuple)) and len(o["betas"]) == 2
         and all(_number(b) and 0 <= b < 1 for b in o["betas"]),
         f"optim.betas must be two numbers in [0, 1) (got {o['betas']!r})")
    need(_pos_int(o["batch_size"]), "optim.batch_size must be a positive integer")
    need(_pos_int(o["grad_accum"]), "optim.grad_accum must be a positive integer")
    need(_number(o["clip_grad"]) and o["clip_grad"] >= 0, "optim.clip_grad must be >= 0 (0: off)")
    need(o["clip_mode"] in ("value", "norm"), "optim.clip_mode must be value or norm")
    need(t["steps"] is None or _pos_int(t["steps"]), "train.steps must be a positive integer or null")
    need(t["epochs"] is None or _pos_int(t["epochs"]), "train.epochs must be a positive integer or null")
    need(t["steps"] is not None or t["epochs"] is not None,
         "set train.steps, or train.epochs (steps are then derived from the number of pairs)")
    need(t["precision"] in ("auto", "fp32", "fp16", "bf16"), "train.precision must be auto, fp32, fp16 or bf16")
    need(_number(t["uncond_prob"]) and 0 <= t["uncond_prob"] <= 1, "train.uncond_prob must be in [0, 1]")
    need(t["max_minutes"] is None or (_number(t["max_minutes"]) and t["max_minutes"] > 0),
         "train.max_minutes must be > 0 or null")
    need(isinstance(t["gradient_checkpointing"], bool), "train.gradient_checkpointing must be true or false")
    need(isinstance(t["seed"], int) and not isinstance(t["seed"], bool) and 0 <= t["seed"] < 2 ** 62,
         f"train.seed must be a non-negative integer below 2^62 (got {t['seed']!r})")
    need(_pos_int(cfg["checkpoint"]["every"]), "checkpoint.every must be a positive integer")
    need(isinstance(s["every"], int) and not isinstance(s["every"], bool) and s["every"] >= 0,
         "sample.every must be an integer >= 0 (0: no samples)")
    need(isinstance(s["count"], int) and not isinstance(s["count"], bool) and s["count"] >= 0,
         "sample.count must be an integer >= 0")
    need(_pos_int(s["steps"]), "sample.steps must be a positive integer")
    need(_number(s["guidance"]) and 0 <= s["guidance"] <= MAX_GUIDANCE,
         f"sample.guidance must be a number in 0..{MAX_GUIDANCE:g} (got {s['guidance']!r})")
    need(isinstance(s["seed"], int) and not isinstance(s["seed"], bool) and 0 <= s["seed"] < 2 ** 63,
         f"sample.seed must be a non-negative integer (got {s['seed']!r})")
    need(isinstance(d["split"], str) and d["split"].strip() != "",
         f"data.split must be a folder name (got {d['split']!r})")
    for key in ("cache_dir", "separator", "clap"):
        need(d[key] is None or (isinstance(d[key], str) and d[key].strip() != ""),
             f"data.{key} must be a path or name (got {d[key]!r})")
    for key in ("height", "width"):
        need(s[key] is None or (_pos_int(s[key]) and s[key] % 8 == 0 and 64 <= s[key] <= MAX_SIDE),
             f"sample.{key} must be a multiple of 8 in 64..{MAX_SIDE}, or null")
    need(_pos_int(cfg["log"]["every"]), "log.every must be a positive integer")
