"""The ``train-sep`` trainer, a :class:`~macs_cli.training.run.TrainingRun`: MixIT (plus pluggable
extra loss terms) with AdamW, warm-up + cosine, gradient accumulation, mixed precision, accelerate
for several processes, atomic checkpoints and exact resumption (the loop itself is in run.py).

Reproducibility: the batch stream and dropout are reseeded from (seed, process, step) at every step,
so a run resumed from a checkpoint continues exactly as an uninterrupted one would.

Run folder layout::

    RUN/config.yaml              the resolved configuration
    RUN/checkpoint.pt            training state (model, optimiser, step, loss parameters such as the
                                 CLAP contrastive temperature tau2), weights_only-loadable
    RUN/separator.safetensors    the latest model (+ separator.json), usable with --model RUN
    RUN/metrics.csv              one row per logged step
    RUN/curves.png               loss and validation curves
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ModelError
from ..evaluation.sisdr import best_grouped_sisdr, best_one_to_one_sisdr, mixture_sisdr
from ..separation.model import Separator
from ..weights.separator import save_separator
from ..weights.statecheck import describe_mismatch
from .augment import AugmentSpec
from .config import DEFAULTS, SeparatorTrainingConfig, separator_config
from .data import ClipBank, MixSpec, load_clip_bank, synthesize, validation_sets
from .losses import LossTerm, MixITLoss, StemSparsity
from .plots import plot_curves
from .run import TrainingRun
from .schedule import lr_factor


def mix_specs(cfg: dict[str, Any] | SeparatorTrainingConfig) -> tuple[MixSpec, AugmentSpec]:
    """The batch synthesiser's settings of a training config: (mix.*, augment.*), validated."""
    if not isinstance(cfg, SeparatorTrainingConfig):
        cfg = SeparatorTrainingConfig.from_dict(cfg, validate=False)
    mix, aug = cfg.mix, cfg.augment
    total = mix.total_sources
    spec = MixSpec(tuple(mix.sources_per_mixture), tuple(mix.repeats), tuple(mix.gain_db), mix.loop_prob,
                   tuple(total) if total is not None else None, mix.balance).validate()
    augment = AugmentSpec(aug.eq_prob, aug.eq_db, aug.reverb_prob, tuple(aug.rt60), tuple(aug.drr_db)).validate()
    return spec, augment


def evaluate(model: Separator, mixes, refs: torch.Tensor | None = None, batch_size: int = 8) -> dict[str, float]:
    """Mean SI-SDR improvement (dB) with the best grouping and the best one-to-one assignment, over
    (mixes, refs), or over every mixture of a list of (mixes, refs) pairs (one per source count)."""
    sets = [(mixes, refs)] if refs is not None else list(mixes)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    grouped, one, base = [], [], []
    with torch.inference_mode():
        for mixes, refs in sets:
            for i in range(0, len(mixes), batch_size):
                m = mixes[i: i + batch_size].to(device)
                r = refs[i: i + batch_size].to(device)
                stems = model(m).float()
                grouped.append(best_grouped_sisdr(stems, r)[0].cpu())
                one.append(best_one_to_one_sisdr(stems, r)[0].cpu())
                base.append(mixture_sisdr(m, r).cpu())
    model.train(was_training)
    g, o, b = torch.cat(grouped), torch.cat(one), torch.cat(base)
    return {"grouped": float((g - b).mean()), "one_to_one": float((o - b).mean()),
            "mixture": float(b.mean())}


class Trainer(TrainingRun):
    config_type = SeparatorTrainingConfig
    label = "train-sep"
    run_files = TrainingRun.run_files + ("separator.safetensors", "separator.json")
    config_sections = frozenset(DEFAULTS)
    path_keys = ("data.train", "data.heldout", "train.init", "clap.model", "clap.tokenizer")

    def __init__(self, cfg: dict[str, Any], run_dir: Path, device: str | None = None,
                 extra_terms: list[LossTerm] | None = None, console=None, progress: bool = True):
        super().__init__(cfg, run_dir, device, console, progress)
        config = self.config
        init_spec = str(config.train.init) if config.train.init else None
        init = self._load_init(init_spec) if init_spec else None
        self.model_cfg = separator_config(self.config.to_dict(),
                                          init.config.align_corners if init is not None else None)
        self.spec, self.augment = mix_specs(config)
        torch.manual_seed(config.train.seed)
        self.model = Separator(self.model_cfg)
        if init is not None:
            self._init_from(init_spec, init)
        self.model = self.model.to(self.device)
        self.terms = [LossTerm("mixit", MixITLoss(self.model_cfg.num_sources, config.train.exact_mixit,
                                                  empty_refs=self.spec.total_sources is not None
                                                  and self.spec.total_sources[0] == 1))]
        if config.loss.sparsity:
            weight = float(config.loss.sparsity)
            self.terms.append(LossTerm("sparsity", StemSparsity(config.loss.sparsity_kind),
                                       lambda epoch, epochs, w=weight: w))
        self.clap_space = None
        if config.clap.losses:
            self._add_clap_terms()
        self.terms += extra_terms or []
        # parameters that belong to loss terms (the contrastive temperature tau2): trained and
        # checkpointed with the separator, not weight-decayed, not part of the exported model
        self.loss_modules = {t.name: t.fn for t in self.terms
                             if isinstance(t.fn, torch.nn.Module) and len(list(t.fn.parameters()))}
        for module in self.loss_modules.values():
            module.to(self.device)
        self.loss_params = [p for m in self.loss_modules.values() for p in m.parameters()]
        optim = config.optim
        groups = [{"params": list(self.model.parameters())}]
        if self.loss_params:
            groups.append({"params": self.loss_params, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas),
                                           weight_decay=optim.weight_decay)
        self.total_steps = total = config.train.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, optim.warmup))
        self.last_validation: dict[str, float] = {}
        self.epoch, self.weights = 0, [1.0] * len(self.terms)
        self.bank: ClipBank | None = None
        self.val_set: list[tuple[torch.Tensor, torch.Tensor]] | tuple[torch.Tensor, torch.Tensor] | None = None

    def _add_clap_terms(self) -> None:
        """Load the frozen CLAP encoder once and add the ``align`` and ``rank`` terms; MixIT's
        weight becomes ``1 - alpha`` (see :mod:`macs_cli.training.clap_losses`)."""
        from ..clap import load_clap
        from .clap_losses import build_clap_terms, mixit_weight

        clap = self.config.clap
        encoder = load_clap(clap.model, device=self.device, allow_download=clap.download,
                            tokenizer=clap.tokenizer, require_text=True)
        encoder.model.requires_grad_(False)
        encoder.eval()
        terms, self.clap_space = build_clap_terms(clap, encoder, self.model_cfg.sample_rate,
                                                  self.model_cfg.num_sources)
        self.terms[0].weight = mixit_weight
        self.terms += terms
        if self.config.train.epochs == 1:
            self._say("[yellow]clap.losses with train.epochs=1: alpha = 1 from the start, so MixIT is "
                      "off (set train.epochs >= 2 for the curriculum)[/]")

    @staticmethod
    def _load_init(spec: str) -> Separator:
        from ..weights.separator import load_separator

        return load_separator(spec)

    def _init_from(self, spec: str, source: Separator) -> None:
        """Start from the weights of another separator (``default``, ``official``, a file or run)."""
        if source.config.align_corners != self.model_cfg.align_corners:
            self._say(f"[yellow]train.init={spec} was trained with align_corners="
                      f"{source.config.align_corners}, model.align_corners is {self.model_cfg.align_corners}: "
                      "the network starts from weights trained with the other resize[/]")
        if source.config.num_sources != self.model_cfg.num_sources or \
                source.config.channels != self.model_cfg.channels or \
                source.config.depth != self.model_cfg.depth or \
                source.config.frames != self.model_cfg.frames:
            raise ConfigError(f"train.init={spec}: that model's size (M={source.config.num_sources}, "
                              f"NC={source.config.channels}) differs from model.* in the config")
        self.model.load_state_dict(source.state_dict())

    # -- data -----------------------------------------------------------------------------------
    def has_data(self) -> bool:
        return self.bank is not None

    def load_data(self) -> None:
        data, sr = self.config.data, self.model_cfg.sample_rate
        self.bank = load_clip_bank(data.train, "train", sr, data.max_seconds, data.kind,
                                   data.max_clips).to(self.device)
        self._warn_skipped(self.bank)
        balance = self.config.mix.balance
        if balance:
            shares = self.bank.category_shares(balance)
            top = max(shares, key=shares.get)
            self._say(f"clips drawn with mix.balance {balance:g}: {len(shares)} categories, the most "
                      f"drawn {top or '(unlabelled)'!r} at {100 * shares[top]:.1f} % of draws")
        if self.clap_space is not None:
            unlabelled = sum(1 for labs in self.bank.labels if not labs)
            if unlabelled == len(self.bank):
                raise ConfigError(f"{data.train}: clap.losses needs labelled clips (folder names, a CSV "
                                  "'labels' column or FSD50K ground truth) and none of these has a label")
            if unlabelled:
                self._say(f"[yellow]{unlabelled} of {len(self.bank)} training clips have no label: they "
                          "count as 'Noise' in the CLAP losses[/]")
        val = self.config.validation
        if val.mixtures > 0 and self.accel.is_main_process:
            try:
                held = load_clip_bank(data.heldout or data.train, "heldout", sr, data.max_seconds,
                                      data.kind, data.max_clips)
                self._warn_skipped(held)
                self.val_set = validation_sets(held, val.mixtures, val.sources,
                                               self.model_cfg.window_samples, seed=val.seed,
                                               mode=val.mode, loop_prob=val.loop_prob)
            except ConfigError as exc:
                from rich.markup import escape

                self._say(f"[yellow]no validation: {escape(str(exc))}[/]")

    def _warn_skipped(self, bank: ClipBank) -> None:
        from rich.markup import escape

        msg = bank.skip_warning()
        if msg:
            self._say(f"[yellow]{escape(msg)}[/]")

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self) -> None:
        model = self.accel.unwrap_model(self.model)
        state = {"model": model.state_dict()}
        if self.loss_modules:
            state["losses"] = {name: m.state_dict() for name, m in self.loss_modules.items()}
        if self.save_state(state):
            save_separator(model, self.run_dir / "separator.safetensors", metadata={"step": str(self.step)},
                           force=True)

    def resume(self) -> bool:
        def restore(state: dict[str, Any]) -> None:
            model = self.accel.unwrap_model(self.model)
            problem = describe_mismatch(model.state_dict(), state["model"])
            if problem:
                raise ModelError(f"{self.checkpoint_path}: cannot resume: the checkpoint's separator does not "
                                 f"fit model.* in this config ({problem})")
            model.load_state_dict(state["model"])
            self._resume_align_corners(model, state.get("config"))
            saved = state.get("losses", {})
            for name, module in self.loss_modules.items():
                if name not in saved:
                    raise ValueError(f"the checkpoint has no state for the '{name}' loss (was it trained "
                                     "with other clap.* settings?)")
                module.load_state_dict(saved[name])

        return self.load_state(restore)

    def _resume_align_corners(self, model: Separator, config_text: str | None) -> None:
        """With ``model.align_corners: null``, a resumed run keeps the resize it was trained with:
        a checkpoint whose config predates the field was trained with False."""
        if self.config.model.align_corners is not None or not config_text:
            return
        import yaml

        try:
            stored = yaml.safe_load(config_text)
        except yaml.YAMLError:
            return
        section = stored.get("model") if isinstance(stored, dict) else None
        if not isinstance(section, dict):
            return
        from ..separation.config import LEGACY_ALIGN_CORNERS

        value = section.get("align_corners", LEGACY_ALIGN_CORNERS)
        if isinstance(value, bool) and value != model.config.align_corners:
            model.set_align_corners(value)
            self.model_cfg = model.config
            self._say(f"the checkpoint was trained with align_corners={value}: the resumed run keeps it")

    # -- the loop's hooks ------------------------------------------------------------------------
    def columns(self) -> list[str]:
        return (["step", "epoch", "lr", "loss"] + [t.name for t in self.terms]
                + [f"w_{t.name}" for t in self.terms] + ["val_grouped", "val_one_to_one", "seconds"])

    def epoch_of(self, step: int) -> int:
        train = self.config.train
        return min(train.epochs - 1, step * train.epochs // train.steps)

    def before_loop(self) -> None:
        self.model.train()

    def begin_step(self) -> None:
        self.epoch = self.epoch_of(self.step)
        self.weights = [term.weight(self.epoch, self.config.train.epochs) for term in self.terms]

    def train_step(self, gen: torch.Generator, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = synthesize(self.bank, self.config.optim.batch_size, self.model_cfg.window_samples,
                           gen, self.spec, self.augment)
        with self.accel.autocast():
            stems = self.model(batch.mix)
        stems = stems.float()  # one tensor for every term (CLAP terms share work)
        values = [term.fn(batch, stems) if w != 0 else torch.zeros((), device=self.device)
                  for term, w in zip(self.terms, self.weights)]
        objective = sum(w * v for w, v in zip(self.weights, values))
        return objective, torch.stack([v.detach().float() for v in values])

    def step_loss(self, parts: torch.Tensor) -> float:
        return float(sum(w * float(p) for w, p in zip(self.weights, parts)))

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.model.parameters(), *self.loss_params]

    def before_optimizer_step(self) -> None:
        if self.clap_space is not None:
            self.clap_space.clear()
        if self.loss_params and self.accel.num_processes > 1:
            # loss parameters live outside DDP: average their gradients by hand
            for p in self.loss_params:
                if p.grad is not None:  # None on every process alike (same weights)
                    p.grad.copy_(self.accel.reduce(p.grad, reduction="mean"))

    def validate(self, total: int, ending: bool) -> dict[str, float]:
        every = self.config.validation.every
        if self.val_set is None or not (self.step % every == 0 or self.step == total or ending):
            return {}
        sets = [self.val_set] if isinstance(self.val_set, tuple) else self.val_set
        self.last_validation = evaluate(self.accel.unwrap_model(self.model), sets)
        return self.last_validation

    def log_fields(self, parts: torch.Tensor, val: dict[str, float]) -> dict[str, Any]:
        row = {"epoch": self.epoch, "val_grouped": val.get("grouped", ""),
               "val_one_to_one": val.get("one_to_one", "")}
        row.update({term.name: float(p) for term, p in zip(self.terms, parts)})
        row.update({f"w_{term.name}": w for term, w in zip(self.terms, self.weights)})
        return row

    def progress_info(self, loss: float) -> str:
        info = f"loss {loss:.3f}"
        if self.last_validation:
            info += f"  val SI-SDRi {self.last_validation['grouped']:.2f} dB"
        return info

    def plot(self, metrics_csv: Path, out_png: Path) -> None:
        plot_curves(metrics_csv, out_png)

    def summary(self) -> dict[str, Any]:
        return {"step": self.step, "validation": self.last_validation, "run_dir": str(self.run_dir)}
