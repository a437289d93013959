"""The ``train-gen`` trainer (a :class:`~macs_cli.training.run.TrainingRun`): train MACS's adapter
(MLP, positional encoding, audio key/value projections) on a frozen Stable Diffusion v1.x with the
DDPM noise-prediction loss.

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

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .config import GEN_DEFAULTS as DEFAULTS, AdapterTrainingConfig
from .config import load_gen_config  # noqa: F401  (where callers have always found it)
from .plots import plot_loss
from .run import TrainingRun
from .schedule import lr_factor


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
    config_type = AdapterTrainingConfig
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
        model = self.config.model
        self.pipe = pipe if pipe is not None else load_backbone(model.sd_model, "cpu", torch.float32,
                                                                model.allow_download)
        self.sd_model = getattr(self.pipe, "macs_source", model.sd_model)
        unet = self.pipe.unet
        for module in (unet, self.pipe.vae, self.pipe.text_encoder):
            module.requires_grad_(False)
            module.eval()
        self.adapter_config = AdapterConfig(num_tokens=model.num_tokens, hidden_dim=model.hidden_dim,
                                            dropout=float(model.dropout), pe_std=float(model.pe_std),
                                            cross_attention_dim=int(unet.config.cross_attention_dim)).validate()
        torch.manual_seed(self.config.train.seed)
        self.text_tokens = int(self.pipe.tokenizer.model_max_length)
        self.adapter = install_adapter(unet, self.adapter_config, self.text_tokens)
        if model.init:
            self._init_from(str(model.init))
        # frozen parts in the compute precision, trained tensors in fp32
        with quiet_loading():  # diffusers warns about every dtype cast
            for module in (unet, self.pipe.vae, self.pipe.text_encoder):
                module.to(self.device, dtype=self.weight_dtype)
        for proc in self.adapter.processors.values():
            proc.to(dtype=torch.float32)
        self.adapter.projection.to(self.device, dtype=torch.float32)
        self.adapter.requires_grad_(True)
        self.adapter.train()
        if self.config.train.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.model = AdapterTrainingModel(unet, self.adapter.projection)
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        optim = self.config.optim
        self.optimizer = torch.optim.AdamW(self.adapter.parameters(), lr=optim.lr, betas=tuple(optim.betas),
                                           weight_decay=optim.weight_decay)
        # train.steps, or (when it is null) train.epochs passes over the pairs, known once the data is listed
        self.total_steps = self.config.train.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps or 1, optim.warmup))
        self.data = None
        self.embeddings: torch.Tensor | None = None
        self.embedding_stats: dict[str, int] = {}
        self.last_sample: Path | None = None

    def _init_from(self, spec: str) -> None:
        from ..generation.checkpoints import resolve_adapter

        source = resolve_adapter(spec)
        self.adapter.load_state_dict(source.state, spec)

    # -- data -----------------------------------------------------------------------------------
    def has_data(self) -> bool:
        return self.data is not None

    def load_data(self) -> None:
        from ..generation.audio import AudioEmbedder
        from .gen_data import StemCache, clip_embeddings, default_cache_dir, drop_unreadable_images, list_pairs

        d = self.config.data
        self.data, dropped = drop_unreadable_images(list_pairs(d.train, d.kind, d.split, d.max_items))
        if dropped:
            from rich.markup import escape

            self._say(f"[yellow]warning: skipped {len(dropped)} of {len(dropped) + len(self.data)} pairs whose "
                      f"image cannot be read (e.g. {escape(dropped[0])})[/]")
        cache = StemCache(Path(d.cache_dir) if d.cache_dir else default_cache_dir())

        def factory():
            return AudioEmbedder(d.separator, d.clap, self.device, d.clap_download)

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("stem embeddings"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=self.console, disable=not (self.show_progress and self.accel.is_main_process)) as bar:
            task = bar.add_task("clips", total=len(self.data.clips))
            several = self.accel.num_processes > 1
            if several and not self.accel.is_main_process:
                self.accel.wait_for_everyone()   # the main process fills the cache first
            emb, stats = clip_embeddings(self.data, factory, cache, d.rank, d.top_k,
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
            epochs = self.config.train.epochs
            self.total_steps = max(1, math.ceil(epochs * len(self.data) / self.pairs_per_step))
            self._say(f"train.epochs={epochs}: {self.total_steps} optimiser steps")
        self._say(f"{len(self.data)} pairs from {len(self.data.clips)} clips; stem embeddings: "
                  f"{stats['computed']} computed, {stats['cached']} from the cache, {stats['precomputed']} given")

    @property
    def pairs_per_step(self) -> int:
        optim = self.config.optim
        return optim.batch_size * optim.grad_accum * self.accel.num_processes

    def text_states(self) -> torch.Tensor:
        tok = self.pipe.tokenizer
        ids = tok([self.config.model.prompt], padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids.to(self.device)
        with torch.no_grad():
            return self.pipe.text_encoder(ids)[0].to(self.weight_dtype)

    def micro_batch(self, gen: torch.Generator, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) and stem embeddings (B, K, 512) for pairs ``position ..``."""
        from .gen_data import batch_indices, load_image

        data = self.config.data
        idx = batch_indices(len(self.data), self.config.train.seed, position, self.config.optim.batch_size)
        flips = torch.rand(len(idx), generator=gen, device=gen.device).cpu() < 0.5 if data.flip else [False] * len(idx)
        size = (int(data.resolution[0]), int(data.resolution[1]))
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

        sample = self.config.sample
        if not sample.count or not self.accel.is_main_process:
            return None
        n = min(sample.count, self.embeddings.shape[0])
        h = sample.height or int(self.config.data.resolution[0])
        w = sample.width or int(self.config.data.resolution[1])
        gen = MacsGenerator(self.pipe, self.adapter, None, self.sd_model)
        self.adapter.eval()
        try:
            with torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=self.weight_dtype != torch.float32):
                items = gen.generate(self.embeddings[:n].numpy(), GenerationSettings(
                    steps=sample.steps, guidance=float(sample.guidance), height=h, width=w, seed=sample.seed,
                    prompt=self.config.model.prompt))
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

    # -- the loop's hooks ------------------------------------------------------------------------
    def columns(self) -> list[str]:
        return ["step", "epoch", "lr", "loss", "seconds"]

    def before_loop(self) -> None:
        self.text = self.text_states()

    def train_step(self, gen: torch.Generator, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The DDPM loss of one micro-batch: encode the images, noise them at random timesteps,
        drop the stems of some items (classifier-free guidance) and predict the noise (or v)."""
        vae, sched = self.pipe.vae, self.noise_scheduler
        rank, world, bsz = self.accel.process_index, self.accel.num_processes, self.config.optim.batch_size
        position = self.step * self.pairs_per_step + (micro * world + rank) * bsz
        images, stems = self.micro_batch(gen, position)
        images = images.to(self.device, self.weight_dtype)
        stems = stems.to(self.device)
        with torch.no_grad():
            latents = vae.encode(images).latent_dist.sample(generator=gen)
            latents = latents * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen, device=self.device, dtype=latents.dtype)
        timesteps = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen,
                                  device=self.device)
        noisy = sched.add_noise(latents, noise, timesteps)
        drop = torch.rand(stems.shape[0], generator=gen, device=self.device) < self.config.train.uncond_prob
        stems = torch.where(drop[:, None, None], torch.zeros_like(stems), stems)
        target = sched.get_velocity(latents, noise, timesteps) if sched.config.prediction_type == "v_prediction" \
            else noise
        with self.accel.autocast():
            pred = self.model(noisy, timesteps, self.text.expand(stems.shape[0], -1, -1), stems)
        loss = F.mse_loss(pred.float(), target.float())
        return loss, loss.detach().float().reshape(1)

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.adapter.parameters())

    def log_fields(self, parts: torch.Tensor, val: dict[str, float]) -> dict[str, Any]:
        return {"epoch": round(self.step * self.pairs_per_step / len(self.data), 4)}

    def after_step(self, total: int) -> None:
        every = self.config.sample.every
        if every and (self.step % every == 0 or self.step == total):
            self.last_sample = self.sample()

    def plot(self, metrics_csv: Path, out_png: Path) -> None:
        plot_loss(metrics_csv, out_png)

    def summary(self) -> dict[str, Any]:
        return {"step": self.step, "run_dir": str(self.run_dir),
                "sample": None if self.last_sample is None else str(self.last_sample),
                "embeddings": self.embedding_stats}
