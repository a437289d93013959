"""The ``train-gen`` loop: train MACS's adapter (MLP, positional encoding, audio key/value
projections) on a frozen Stable Diffusion v1.x with the DDPM noise-prediction loss.

Per optimiser step and micro-batch: pick ``batch_size`` (image, clip) pairs from the shuffled
stream, encode the images with the frozen VAE (a sample of the latent distribution, times the
VAE's scaling factor), draw noise and timesteps, zero the stem embeddings of each sample with
probability ``train.uncond_prob`` (0.1; it teaches the unconditional branch that classifier-free
guidance uses), predict the noise (or v) from ``[text tokens | audio tokens]`` and take the MSE.
AdamW (lr 1e-4), warm-up + cosine, gradient accumulation, gradient clipping by value at 1.0
(the official loop's ``clip_grad_value_``), fp16/bf16 autocast on GPU, accelerate for several
processes. Frozen modules are kept in the autocast precision; the trained tensors stay fp32.

Reproducibility: the pair order is a shuffled permutation per epoch (a function of the seed and
the epoch) and every random draw of a micro-batch comes from a generator reseeded from (seed,
process, step, micro-batch), so a run resumed from ``checkpoint.pt`` continues exactly as an
uninterrupted one would.

Run folder::

    RUN/config.yaml              the resolved configuration
    RUN/checkpoint.pt            adapter, optimiser, scheduler, step (weights_only-loadable)
    RUN/adapter.safetensors      the latest adapter (+ adapter.json), usable with --adapter RUN
    RUN/metrics.csv              one row per logged step
    RUN/curves.png               the loss curve
    RUN/samples/step_XXXXXX.png  sample images from fixed embeddings and seeds, every sample.every steps
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .config import load_yaml_config
from .run import TrainingRun
from .schedule import lr_factor, metric_rows, pyplot, save_png

DEFAULTS: dict[str, Any] = {
    "model": {"sd_model": "stable-diffusion-v1-5/stable-diffusion-v1-5", "allow_download": False,
              "num_tokens": 6, "hidden_dim": 2048, "dropout": 0.5, "pe_std": 0.05, "prompt": "",
              "init": None},
    "data": {"train": None, "kind": "auto", "split": "train", "resolution": [512, 512], "flip": False,
             "max_items": None, "rank": True, "top_k": None, "cache_dir": None,
             "separator": "default", "clap": "default", "clap_download": False},
    "optim": {"lr": 1.0e-4, "betas": [0.9, 0.999], "weight_decay": 1.0e-2, "warmup": 0.1,
              "batch_size": 2, "grad_accum": 8, "clip_grad": 1.0, "clip_mode": "value"},
    "train": {"steps": 1000, "epochs": None, "seed": 0, "precision": "auto", "uncond_prob": 0.1, "max_minutes": None,
              "gradient_checkpointing": False},
    "checkpoint": {"every": 500},
    "sample": {"every": 500, "count": 4, "steps": 20, "guidance": 7.5, "seed": 0, "height": None,
               "width": None},
    "log": {"every": 10},
}


# -- configuration --------------------------------------------------------------------------------
def load_gen_config(path: Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """DEFAULTS <- the YAML recipe <- ``section.key=value`` overrides, validated."""
    cfg = load_yaml_config(DEFAULTS, path, overrides)
    validate_gen(cfg)
    return cfg


def validate_gen(cfg: dict[str, Any]) -> None:
    from ..generation.pipeline import MAX_GUIDANCE, MAX_SIDE

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(f"invalid train-gen config: {msg}")

    def pos_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    m, d, o, t, s = cfg["model"], cfg["data"], cfg["optim"], cfg["train"], cfg["sample"]
    need(isinstance(m["sd_model"], str) and m["sd_model"].strip() != "", "model.sd_model must be a hub id or folder")
    need(pos_int(m["num_tokens"]), "model.num_tokens must be a positive integer (M, the stems per clip)")
    need(pos_int(m["hidden_dim"]), "model.hidden_dim must be a positive integer")
    need(num(m["dropout"]) and 0 <= m["dropout"] < 1, "model.dropout must be in [0, 1)")
    need(num(m["pe_std"]) and m["pe_std"] >= 0, "model.pe_std must be >= 0")
    need(isinstance(m["prompt"], str), "model.prompt must be a text")
    need(d["train"] is not None, "data.train is required (a CSV manifest or a Landscape/LLP-multi folder)")
    need(d["kind"] in ("auto", "csv", "landscape", "llp"), "data.kind must be auto, csv, landscape or llp")
    r = d["resolution"]
    need(isinstance(r, (list, tuple)) and len(r) == 2 and all(pos_int(v) and v % 8 == 0 and 64 <= v <= MAX_SIDE
                                                              for v in r),
         f"data.resolution must be [height, width], multiples of 8 in 64..{MAX_SIDE} (got {r!r})")
    need(isinstance(d["flip"], bool) and isinstance(d["rank"], bool), "data.flip and data.rank must be true or false")
    need(d["top_k"] is None or pos_int(d["top_k"]), "data.top_k must be a positive integer or null")
    need(d["max_items"] is None or pos_int(d["max_items"]), "data.max_items must be a positive integer or null")
    need(num(o["lr"]) and 0 < o["lr"] < 1, f"optim.lr must be in (0, 1) (got {o['lr']!r})")
    need(num(o["weight_decay"]) and o["weight_decay"] >= 0, "optim.weight_decay must be >= 0")
    need(num(o["warmup"]) and 0 <= o["warmup"] < 1, "optim.warmup must be in [0, 1)")
    need(isinstance(o["betas"], (list, tuple)) and len(o["betas"]) == 2
         and all(num(b) and 0 <= b < 1 for b in o["betas"]),
         f"optim.betas must be two numbers in [0, 1) (got {o['betas']!r})")
    need(pos_int(o["batch_size"]), "optim.batch_size must be a positive integer")
    need(pos_int(o["grad_accum"]), "optim.grad_accum must be a positive integer")
    need(num(o["clip_grad"]) and o["clip_grad"] >= 0, "optim.clip_grad must be >= 0 (0: off)")
    need(o["clip_mode"] in ("value", "norm"), "optim.clip_mode must be value or norm")
    need(t["steps"] is None or pos_int(t["steps"]), "train.steps must be a positive integer or null")
    need(t["epochs"] is None or pos_int(t["epochs"]), "train.epochs must be a positive integer or null")
    need(t["steps"] is not None or t["epochs"] is not None,
         "set train.steps, or train.epochs (steps are then derived from the number of pairs)")
    need(t["precision"] in ("auto", "fp32", "fp16", "bf16"), "train.precision must be auto, fp32, fp16 or bf16")
    need(num(t["uncond_prob"]) and 0 <= t["uncond_prob"] <= 1, "train.uncond_prob must be in [0, 1]")
    need(t["max_minutes"] is None or (num(t["max_minutes"]) and t["max_minutes"] > 0),
         "train.max_minutes must be > 0 or null")
    need(isinstance(t["gradient_checkpointing"], bool), "train.gradient_checkpointing must be true or false")
    need(isinstance(t["seed"], int) and not isinstance(t["seed"], bool) and 0 <= t["seed"] < 2 ** 62,
         f"train.seed must be a non-negative integer below 2^62 (got {t['seed']!r})")
    need(pos_int(cfg["checkpoint"]["every"]), "checkpoint.every must be a positive integer")
    need(isinstance(s["every"], int) and not isinstance(s["every"], bool) and s["every"] >= 0,
         "sample.every must be an integer >= 0 (0: no samples)")
    need(isinstance(s["count"], int) and not isinstance(s["count"], bool) and s["count"] >= 0,
         "sample.count must be an integer >= 0")
    need(pos_int(s["steps"]), "sample.steps must be a positive integer")
    need(num(s["guidance"]) and 0 <= s["guidance"] <= MAX_GUIDANCE,
         f"sample.guidance must be a number in 0..{MAX_GUIDANCE:g} (got {s['guidance']!r})")
    need(isinstance(s["seed"], int) and not isinstance(s["seed"], bool) and 0 <= s["seed"] < 2 ** 63,
         f"sample.seed must be a non-negative integer (got {s['seed']!r})")
    need(isinstance(d["split"], str) and d["split"].strip() != "",
         f"data.split must be a folder name (got {d['split']!r})")
    for key in ("cache_dir", "separator", "clap"):
        need(d[key] is None or (isinstance(d[key], str) and d[key].strip() != ""),
             f"data.{key} must be a path or name (got {d[key]!r})")
    for key in ("height", "width"):
        need(s[key] is None or (pos_int(s[key]) and s[key] % 8 == 0 and 64 <= s[key] <= MAX_SIDE),
             f"sample.{key} must be a multiple of 8 in 64..{MAX_SIDE}, or null")
    need(pos_int(cfg["log"]["every"]), "log.every must be a positive integer")


class AdapterTrainingModel(torch.nn.Module):
    """The frozen UNet (with the adapter's processors inside) and the projection, as one module
    for accelerate: ``forward`` predicts the noise from noisy latents, timesteps, text tokens and
    stem embeddings."""

    def __init__(self, unet, projection):
        super().__init__()
        self.unet = unet
        self.projection = projection

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                stems: torch.Tensor) -> torch.Tensor:
        tokens = self.projection(stems).to(text.dtype)
        states = torch.cat([text, tokens], dim=1)
        return self.unet(noisy, timesteps, encoder_hidden_states=states).sample


class GenTrainer(TrainingRun):
    config_defaults = DEFAULTS
    label = "train-gen"
    run_files = TrainingRun.run_files + ("adapter.safetensors", "adapter.json", "samples")
    config_sections = frozenset(DEFAULTS)
    path_keys = ("data.train", "data.cache_dir", "data.separator", "data.clap", "model.sd_model", "model.init")

    def __init__(self, cfg: dict[str, Any], run_dir: Path, device: str | None = None, console=None,
                 progress: bool = True, pipe=None):
        """``pipe``: an already loaded backbone (tests share one); else ``model.sd_model`` is loaded."""
        from ..generation.adapter import AdapterConfig, install_adapter
        from ..generation.backbone import load_backbone, quiet_loading

        super().__init__(cfg, run_dir, device, console, progress, cpu_mixed_precision=False)
        mp = self.accel.mixed_precision
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mp, torch.float32)
        m = cfg["model"]
        self.pipe = pipe if pipe is not None else load_backbone(m["sd_model"], "cpu", torch.float32,
                                                                m["allow_download"])
        self.sd_model = getattr(self.pipe, "macs_source", m["sd_model"])
        unet = self.pipe.unet
        for module in (unet, self.pipe.vae, self.pipe.text_encoder):
            module.requires_grad_(False)
            module.eval()
        self.adapter_config = AdapterConfig(num_tokens=m["num_tokens"], hidden_dim=m["hidden_dim"],
                                            dropout=float(m["dropout"]), pe_std=float(m["pe_std"]),
                                            cross_attention_dim=int(unet.config.cross_attention_dim)).validate()
        torch.manual_seed(cfg["train"]["seed"])
        self.text_tokens = int(self.pipe.tokenizer.model_max_length)
        self.adapter = install_adapter(unet, self.adapter_config, self.text_tokens)
        if m["init"]:
            self._init_from(str(m["init"]))
        # frozen parts in the compute precision, trained tensors in fp32
        with quiet_loading():  # diffusers warns about every dtype cast
            for module in (unet, self.pipe.vae, self.pipe.text_encoder):
                module.to(self.device, dtype=self.weight_dtype)
        for proc in self.adapter.processors.values():
            proc.to(dtype=torch.float32)
        self.adapter.projection.to(self.device, dtype=torch.float32)
        self.adapter.requires_grad_(True)
        self.adapter.train()
        if cfg["train"]["gradient_checkpointing"]:
            unet.enable_gradient_checkpointing()
        self.model = AdapterTrainingModel(unet, self.adapter.projection)
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        o = cfg["optim"]
        self.optimizer = torch.optim.AdamW(self.adapter.parameters(), lr=o["lr"], betas=tuple(o["betas"]),
                                           weight_decay=o["weight_decay"])
        # train.steps, or (when it is null) train.epochs passes over the pairs, known once the data is listed
        self.total_steps: int | None = cfg["train"]["steps"]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps or 1, o["warmup"]))
        self.data = None
        self.embeddings: torch.Tensor | None = None
        self.embedding_stats: dict[str, int] = {}

    def _init_from(self, spec: str) -> None:
        from ..generation.checkpoints import resolve_adapter

        source = resolve_adapter(spec)
        self.adapter.load_state_dict(source.state, spec)

    # -- data -----------------------------------------------------------------------------------
    def load_data(self) -> None:
        from ..generation.audio import AudioEmbedder
        from .gen_data import EmbeddingCache, clip_embeddings, default_cache_dir, drop_unreadable_images, list_pairs

        d = self.cfg["data"]
        self.data, dropped = drop_unreadable_images(list_pairs(d["train"], d["kind"], d["split"], d["max_items"]))
        if dropped:
            from rich.markup import escape

            self._say(f"[yellow]warning: skipped {len(dropped)} of {len(dropped) + len(self.data)} pairs whose "
                      f"image cannot be read (e.g. {escape(dropped[0])})[/]")
        cache = EmbeddingCache(Path(d["cache_dir"]) if d["cache_dir"] else default_cache_dir())

        def factory():
            return AudioEmbedder(d["separator"], d["clap"], self.device, d["clap_download"])

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("stem embeddings"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=self.console, disable=not (self.show_progress and self.accel.is_main_process)) as bar:
            task = bar.add_task("clips", total=len(self.data.clips))
            several = self.accel.num_processes > 1
            if several and not self.accel.is_main_process:
                self.accel.wait_for_everyone()   # the main process fills the cache first
            emb, stats = clip_embeddings(self.data, factory, cache, d["rank"], d["top_k"],
                                         progress=lambda _: bar.advance(task))
            if several and self.accel.is_main_process:
                self.accel.wait_for_everyone()
        if emb.shape[1] > self.adapter_config.num_tokens:
            raise ConfigError(f"the clips have {emb.shape[1]} stems but model.num_tokens is "
                              f"{self.adapter_config.num_tokens}: set data.top_k or model.num_tokens")
        if emb.shape[2] != self.adapter_config.clap_dim:
            raise ConfigError(f"stem embeddings are {emb.shape[2]}-wide, the adapter takes "
                              f"{self.adapter_config.clap_dim}")
        self.embeddings = emb
        self.embedding_stats = stats
        self.stem_order = stats.get("order", "significance")
        if self.stem_order == "mixed":
            self._say("[yellow]warning: some clips' stems are ranked and others are in the separator's order "
                      "(precomputed embeddings without a mixture embedding?): the adapter learns from both[/]")
        if self.total_steps is None:
            o = self.cfg["optim"]
            per_step = o["batch_size"] * o["grad_accum"] * self.accel.num_processes
            self.total_steps = max(1, math.ceil(self.cfg["train"]["epochs"] * len(self.data) / per_step))
            self._say(f"train.epochs={self.cfg['train']['epochs']}: {self.total_steps} optimiser steps")
        self._say(f"{len(self.data)} pairs from {len(self.data.clips)} clips; stem embeddings: "
                  f"{stats['computed']} computed, {stats['cached']} from the cache, {stats['precomputed']} given")

    def text_states(self) -> torch.Tensor:
        tok = self.pipe.tokenizer
        ids = tok([self.cfg["model"]["prompt"]], padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids.to(self.device)
        with torch.no_grad():
            return self.pipe.text_encoder(ids)[0].to(self.weight_dtype)

    def micro_batch(self, gen: torch.Generator, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) and stem embeddings (B, K, 512) for pairs ``position ..``."""
        from .gen_data import batch_indices, load_image

        d, o = self.cfg["data"], self.cfg["optim"]
        idx = batch_indices(len(self.data), self.cfg["train"]["seed"], position, o["batch_size"])
        flips = torch.rand(len(idx), generator=gen, device=gen.device).cpu() < 0.5 if d["flip"] else [False] * len(idx)
        size = (int(d["resolution"][0]), int(d["resolution"][1]))
        images = torch.stack([load_image(self.data.pairs[i].image, size, bool(f)) for i, f in zip(idx, flips)])
        stems = self.embeddings[[self.data.pairs[i].clip for i in idx]]
        return images, stems

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self) -> None:
        from ..generation.checkpoints import save_adapter

        state = {"adapter": {k: v.detach().cpu().clone() for k, v in self.adapter.state_dict().items()}}
        if self.save_state(state):
            save_adapter(self.adapter, self.run_dir / "adapter.safetensors", sd_model=self.sd_model,
                         text_tokens=self.text_tokens, metadata={"step": str(self.step)}, force=True,
                         stem_order=getattr(self, "stem_order", "significance"))

    def resume(self) -> bool:
        return self.load_state(lambda state: self.adapter.load_state_dict(state["adapter"],
                                                                          str(self.checkpoint_path)))

    # -- samples --------------------------------------------------------------------------------
    def sample(self) -> Path | None:
        """A grid of images from the first ``sample.count`` clips' embeddings, fixed seeds."""
        from ..generation.pipeline import GenerationSettings, MacsGenerator, NonFiniteImageError
        from ..generation.visual import contact_sheet, save_png

        s = self.cfg["sample"]
        if not s["count"] or not self.accel.is_main_process:
            return None
        n = min(s["count"], self.embeddings.shape[0])
        h = s["height"] or int(self.cfg["data"]["resolution"][0])
        w = s["width"] or int(self.cfg["data"]["resolution"][1])
        gen = MacsGenerator(self.pipe, self.adapter, None, self.sd_model)
        self.adapter.eval()
        try:
            with torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=self.weight_dtype != torch.float32):
                items = gen.generate(self.embeddings[:n].numpy(), GenerationSettings(
                    steps=s["steps"], guidance=float(s["guidance"]), height=h, width=w, seed=s["seed"],
                    prompt=self.cfg["model"]["prompt"]))
        except NonFiniteImageError as exc:   # a bad sample is worth a warning, not the run
            from rich.markup import escape

            self._say(f"[yellow]warning: no samples at step {self.step}: {escape(str(exc))}[/]")
            return None
        finally:
            self.adapter.train()
        names = [Path(self.data.clips[i].audio or self.data.clips[i].embedding or "").stem[:20] for i in range(n)]
        path = self.run_dir / "samples" / f"step_{self.step:06d}.png"
        save_png(contact_sheet([it.image for it in items], names, columns=min(n, 4)), path, overwrite=True)
        return path

    COLUMNS = ["step", "epoch", "lr", "loss", "seconds"]

    # -- the loop -------------------------------------------------------------------------------
    def run(self, resume: bool = False, stop_after: int | None = None, fresh: bool = False) -> dict[str, Any]:
        """Train to ``train.steps`` (or stop after step ``stop_after``, saving, as an interrupted
        run would have); returns a summary."""
        if self.accel.is_main_process:   # the others would find the main process's first files
            self.check_run_folder(self.run_dir, resume, fresh)
        if resume:
            self._say(f"resumed from step {self.step}" if self.resume()
                      else f"[yellow]no run to resume in {self.run_dir}: starting a new one[/]")
        if self.data is None:
            self.load_data()
        self.start_run_folder(fresh)
        model, self.optimizer = self.accel.prepare(self.model, self.optimizer)
        t, o = self.cfg["train"], self.cfg["optim"]
        total, accum, bsz = self.total_steps, o["grad_accum"], o["batch_size"]
        rank, world = self.accel.process_index, self.accel.num_processes
        text = self.text_states()
        vae = self.pipe.vae
        sched = self.noise_scheduler
        n_train = sched.config.num_train_timesteps
        gen = torch.Generator(device=self.device)
        params = self.adapter.parameters()
        deadline = self.deadline()
        log_f, writer = self.open_log(self.COLUMNS)
        start_time = time.time()
        per_step = bsz * accum * world
        progress = self.progress_bar()
        last_sample = None
        try:
            with progress:
                task = progress.add_task("steps", total=total, completed=self.step, info="")
                while self.step < total:
                    loss_sum = torch.zeros((), device=self.device)
                    for micro in range(accum):
                        self.seed_micro_batch(gen, micro)   # the batch draws and the MLP's dropout
                        position = self.step * per_step + (micro * world + rank) * bsz
                        images, stems = self.micro_batch(gen, position)
                        images = images.to(self.device, self.weight_dtype)
                        stems = stems.to(self.device)
                        with torch.no_grad():
                            latents = vae.encode(images).latent_dist.sample(generator=gen)
                            latents = latents * vae.config.scaling_factor
                        noise = torch.randn(latents.shape, generator=gen, device=self.device, dtype=latents.dtype)
                        timesteps = torch.randint(0, n_train, (latents.shape[0],), generator=gen, device=self.device)
                        noisy = sched.add_noise(latents, noise, timesteps)
                        drop = torch.rand(stems.shape[0], generator=gen, device=self.device) < t["uncond_prob"]
                        stems = torch.where(drop[:, None, None], torch.zeros_like(stems), stems)
                        if sched.config.prediction_type == "v_prediction":
                            target = sched.get_velocity(latents, noise, timesteps)
                        else:
                            target = noise
                        sync = micro == accum - 1
                        ctx = self.accel.no_sync(model) if not sync else contextlib.nullcontext()
                        with ctx:
                            with self.accel.autocast():
                                pred = model(noisy, timesteps, text.expand(stems.shape[0], -1, -1), stems)
                            loss = F.mse_loss(pred.float(), target.float()) / accum
                            self.accel.backward(loss)
                        loss_sum += loss.detach()
                    if o["clip_grad"]:
                        if o["clip_mode"] == "value":
                            self.accel.clip_grad_value_(params, o["clip_grad"])
                        else:
                            self.accel.clip_grad_norm_(params, o["clip_grad"])
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    step_loss = float(self.accel.reduce(loss_sum, reduction="mean"))
                    if not math.isfinite(step_loss):
                        raise ConfigError(f"training diverged at step {self.step} (loss {step_loss}); lower optim.lr")
                    out_of_time = self.past(deadline)
                    stopping = stop_after is not None and self.step >= stop_after
                    if writer is not None and (self.step % self.cfg["log"]["every"] == 0 or self.step == total):
                        writer.writerow({"step": self.step, "epoch": round(self.step * per_step / len(self.data), 4),
                                         "lr": self.scheduler.get_last_lr()[0], "loss": step_loss,
                                         "seconds": round(time.time() - start_time, 3)})
                        log_f.flush()
                    progress.update(task, completed=self.step, info=f"loss {step_loss:.4f}")
                    every = self.cfg["sample"]["every"]
                    if every and (self.step % every == 0 or self.step == total):
                        last_sample = self.sample()
                    if self.end_of_step(total, out_of_time, stopping):
                        break
        finally:
            if log_f is not None:
                log_f.close()
        if self.accel.is_main_process:
            plot_loss(self.run_dir / "metrics.csv", self.run_dir / "curves.png")
        return {"step": self.step, "run_dir": str(self.run_dir),
                "sample": None if last_sample is None else str(last_sample),
                "embeddings": self.embedding_stats}


def plot_loss(metrics_csv: Path, out_png: Path) -> None:
    """The training loss against step, as a PNG."""
    plt = pyplot()
    rows = metric_rows(metrics_csv) if plt is not None else []
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel("noise MSE")
    ax.set_title("train-gen loss")
    save_png(fig, out_png)
