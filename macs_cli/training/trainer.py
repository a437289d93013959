"""The ``train-sep`` loop: MixIT (plus pluggable extra loss terms) with AdamW, warm-up + cosine,
gradient accumulation, mixed precision, accelerate for several processes, atomic checkpoints and
exact resumption.

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

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import ConfigError, ModelError
from ..evaluation.sisdr import best_grouped_sisdr, best_one_to_one_sisdr, mixture_sisdr
from ..separation.model import Separator
from ..weights.separator import save_separator
from ..weights.statecheck import describe_mismatch
from .config import DEFAULTS, separator_config
from .data import ClipBank, MixSpec, load_clip_bank, synthesize, validation_sets
from .augment import AugmentSpec
from .losses import MixITLoss, MixtureBatch, StemSparsity
from .run import TrainingRun
from .schedule import lr_factor, metric_rows, pyplot, save_png


@dataclass
class LossTerm:
    """A named loss with a weight that may depend on the training progress (epoch)."""

    name: str
    fn: Callable[[MixtureBatch, torch.Tensor], torch.Tensor]
    weight: Callable[[int, int], float] = lambda epoch, epochs: 1.0


def mix_specs(cfg: dict[str, Any]) -> tuple[MixSpec, AugmentSpec]:
    """The batch synthesiser's settings of a training config: (mix.*, augment.*), validated."""
    m = cfg["mix"]
    total = m.get("total_sources")
    spec = MixSpec(tuple(m["sources_per_mixture"]), tuple(m["repeats"]), tuple(m["gain_db"]), m["loop_prob"],
                   tuple(total) if total is not None else None).validate()
    a = cfg.get("augment", DEFAULTS["augment"])
    aug = AugmentSpec(a["eq_prob"], a["eq_db"], a["reverb_prob"], tuple(a["rt60"]), tuple(a["drr_db"])).validate()
    return spec, aug


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
    config_defaults = DEFAULTS
    label = "train-sep"
    run_files = TrainingRun.run_files + ("separator.safetensors", "separator.json")
    config_sections = frozenset(DEFAULTS)
    path_keys = ("data.train", "data.heldout", "train.init", "clap.model", "clap.tokenizer")

    def __init__(self, cfg: dict[str, Any], run_dir: Path, device: str | None = None,
                 extra_terms: list[LossTerm] | None = None, console=None, progress: bool = True):
        super().__init__(cfg, run_dir, device, console, progress)
        init = self._load_init(str(cfg["train"]["init"])) if cfg["train"]["init"] else None
        self.model_cfg = separator_config(cfg, init.config.align_corners if init is not None else None)
        self.spec, self.augment = mix_specs(cfg)
        torch.manual_seed(cfg["train"]["seed"])
        self.model = Separator(self.model_cfg)
        if init is not None:
            self._init_from(str(cfg["train"]["init"]), init)
        self.model = self.model.to(self.device)
        self.terms = [LossTerm("mixit", MixITLoss(self.model_cfg.num_sources, cfg["train"]["exact_mixit"],
                                                  empty_refs=self.spec.total_sources is not None
                                                  and self.spec.total_sources[0] == 1))]
        loss_cfg = cfg.get("loss", DEFAULTS["loss"])
        if loss_cfg["sparsity"]:
            weight = float(loss_cfg["sparsity"])
            self.terms.append(LossTerm("sparsity", StemSparsity(loss_cfg["sparsity_kind"]),
                                       lambda epoch, epochs, w=weight: w))
        self.clap_space = None
        if cfg.get("clap", {}).get("losses"):
            self._add_clap_terms()
        self.terms += extra_terms or []
        # parameters that belong to loss terms (the contrastive temperature tau2): trained and
        # checkpointed with the separator, not weight-decayed, not part of the exported model
        self.loss_modules = {t.name: t.fn for t in self.terms
                             if isinstance(t.fn, torch.nn.Module) and len(list(t.fn.parameters()))}
        for module in self.loss_modules.values():
            module.to(self.device)
        self.loss_params = [p for m in self.loss_modules.values() for p in m.parameters()]
        o = cfg["optim"]
        groups = [{"params": list(self.model.parameters())}]
        if self.loss_params:
            groups.append({"params": self.loss_params, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]),
                                           weight_decay=o["weight_decay"])
        total = cfg["train"]["steps"]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, o["warmup"]))
        self.bank: ClipBank | None = None
        self.val_set: list[tuple[torch.Tensor, torch.Tensor]] | tuple[torch.Tensor, torch.Tensor] | None = None

    def _add_clap_terms(self) -> None:
        """Load the frozen CLAP encoder once and add the ``align`` and ``rank`` terms; MixIT's
        weight becomes ``1 - alpha`` (see :mod:`macs_cli.training.clap_losses`)."""
        from ..clap import load_clap
        from .clap_losses import build_clap_terms, mixit_weight

        c = self.cfg["clap"]
        encoder = load_clap(c["model"], device=self.device, allow_download=c["download"],
                            tokenizer=c["tokenizer"], require_text=True)
        encoder.model.requires_grad_(False)
        encoder.eval()
        terms, self.clap_space = build_clap_terms(self.cfg, encoder, self.model_cfg.sample_rate,
                                                  self.model_cfg.num_sources)
        self.terms[0].weight = mixit_weight
        self.terms += terms
        if self.cfg["train"]["epochs"] == 1:
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
    def load_data(self) -> None:
        d, sr = self.cfg["data"], self.model_cfg.sample_rate
        self.bank = load_clip_bank(d["train"], "train", sr, d["max_seconds"], d["kind"],
                                   d["max_clips"]).to(self.device)
        self._warn_skipped(self.bank)
        if self.clap_space is not None:
            unlabelled = sum(1 for labs in self.bank.labels if not labs)
            if unlabelled == len(self.bank):
                raise ConfigError(f"{d['train']}: clap.losses needs labelled clips (folder names, a CSV "
                                  "'labels' column or FSD50K ground truth) and none of these has a label")
            if unlabelled:
                self._say(f"[yellow]{unlabelled} of {len(self.bank)} training clips have no label: they "
                          "count as 'Noise' in the CLAP losses[/]")
        v = self.cfg["validation"]
        if v["mixtures"] > 0 and self.accel.is_main_process:
            try:
                held = load_clip_bank(d["heldout"] or d["train"], "heldout", sr, d["max_seconds"],
                                      d["kind"], d["max_clips"])
                self._warn_skipped(held)
                self.val_set = validation_sets(held, v["mixtures"], v["sources"],
                                               self.model_cfg.window_samples, seed=v["seed"],
                                               mode=v["mode"], loop_prob=v["loop_prob"])
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
        if self.cfg["model"].get("align_corners") is not None or not config_text:
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

    def _columns(self) -> list[str]:
        return (["step", "epoch", "lr", "loss"] + [t.name for t in self.terms]
                + [f"w_{t.name}" for t in self.terms] + ["val_grouped", "val_one_to_one", "seconds"])

    # -- the loop -------------------------------------------------------------------------------
    def epoch_of(self, step: int) -> int:
        t = self.cfg["train"]
        return min(t["epochs"] - 1, step * t["epochs"] // t["steps"])

    def run(self, resume: bool = False, fresh: bool = False) -> dict[str, Any]:
        if self.accel.is_main_process:   # the others would find the main process's first files
            self.check_run_folder(self.run_dir, resume, fresh)
        if resume:
            self._say(f"resumed from step {self.step}" if self.resume()
                      else f"[yellow]no run to resume in {self.run_dir}: starting a new one[/]")
        if self.bank is None:
            self.load_data()
        self.start_run_folder(fresh)
        self.model, self.optimizer = self.accel.prepare(self.model, self.optimizer)
        t, o = self.cfg["train"], self.cfg["optim"]
        total, accum = t["steps"], o["grad_accum"]
        gen = torch.Generator(device=self.device)
        deadline = self.deadline()
        log_f, writer = self.open_log(self._columns())
        start_time, last_val = time.time(), {}
        self.model.train()
        progress = self.progress_bar()
        try:
            with progress:
                task = progress.add_task("steps", total=total, completed=self.step, info="")
                while self.step < total:
                    epoch = self.epoch_of(self.step)
                    weights = [term.weight(epoch, t["epochs"]) for term in self.terms]
                    parts = torch.zeros(len(self.terms), device=self.device)
                    for micro in range(accum):
                        self.seed_micro_batch(gen, micro)
                        batch = synthesize(self.bank, o["batch_size"], self.model_cfg.window_samples,
                                           gen, self.spec, self.augment)
                        sync = micro == accum - 1
                        ctx = self.accel.no_sync(self.model) if not sync else contextlib.nullcontext()
                        with ctx:
                            with self.accel.autocast():
                                stems = self.model(batch.mix)
                            stems = stems.float()  # one tensor for every term (CLAP terms share work)
                            values = [term.fn(batch, stems) if w != 0 else
                                      torch.zeros((), device=self.device)
                                      for term, w in zip(self.terms, weights)]
                            loss = sum(w * v for w, v in zip(weights, values)) / accum
                            self.accel.backward(loss)
                        parts += torch.stack([v.detach().float() for v in values]) / accum
                    if self.clap_space is not None:
                        self.clap_space.clear()
                    if self.loss_params and self.accel.num_processes > 1:
                        # loss parameters live outside DDP: average their gradients by hand
                        for p in self.loss_params:
                            if p.grad is not None:  # None on every process alike (same weights)
                                p.grad.copy_(self.accel.reduce(p.grad, reduction="mean"))
                    if o["clip_grad"]:
                        self.accel.clip_grad_norm_([*self.model.parameters(), *self.loss_params], o["clip_grad"])
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    parts = self.accel.reduce(parts, reduction="mean")
                    total_loss = float(sum(w * float(p) for w, p in zip(weights, parts)))
                    if not math.isfinite(total_loss):
                        raise ConfigError(f"training diverged at step {self.step} (loss {total_loss}); "
                                          "lower optim.lr")
                    val = {}
                    v = self.cfg["validation"]
                    out_of_time = self.past(deadline)
                    if self.val_set is not None and (self.step % v["every"] == 0 or self.step == total
                                                     or out_of_time):
                        sets = [self.val_set] if isinstance(self.val_set, tuple) else self.val_set
                        val = evaluate(self.accel.unwrap_model(self.model), sets)
                        last_val = val
                    self.accel.wait_for_everyone()
                    if writer is not None and (self.step % self.cfg["log"]["every"] == 0 or val
                                               or self.step == total):
                        row = {"step": self.step, "epoch": epoch, "lr": self.scheduler.get_last_lr()[0],
                               "loss": total_loss, "seconds": round(time.time() - start_time, 3),
                               "val_grouped": val.get("grouped", ""), "val_one_to_one": val.get("one_to_one", "")}
                        row.update({term.name: float(p) for term, p in zip(self.terms, parts)})
                        row.update({f"w_{term.name}": w for term, w in zip(self.terms, weights)})
                        writer.writerow(row)
                        log_f.flush()
                    info = f"loss {total_loss:.3f}"
                    if last_val:
                        info += f"  val SI-SDRi {last_val['grouped']:.2f} dB"
                    progress.update(task, completed=self.step, info=info)
                    if self.end_of_step(total, out_of_time):
                        break
        finally:
            if log_f is not None:
                log_f.close()
        if self.accel.is_main_process:
            plot_curves(self.run_dir / "metrics.csv", self.run_dir / "curves.png")
        return {"step": self.step, "validation": last_val, "run_dir": str(self.run_dir)}


def plot_curves(metrics_csv: Path, out_png: Path) -> None:
    """Training loss and validation SI-SDR improvement against step, as a PNG."""
    plt = pyplot()
    rows = metric_rows(metrics_csv) if plt is not None else []
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(steps, [float(r["loss"]) for r in rows])
    a.set_xlabel("step")
    a.set_ylabel("loss")
    a.set_title("training loss")
    vs = [(int(r["step"]), float(r["val_grouped"]), float(r["val_one_to_one"]))
          for r in rows if r.get("val_grouped")]
    if vs:
        b.plot([s for s, _, _ in vs], [g for _, g, _ in vs], "o-", label="best grouping")
        b.plot([s for s, _, _ in vs], [x for _, _, x in vs], "s-", label="one-to-one")
        b.legend()
    b.set_xlabel("step")
    b.set_ylabel("SI-SDR improvement (dB)")
    b.set_title("held-out validation")
    save_png(fig, out_png)
