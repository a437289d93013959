"""Generating images from ranked stem embeddings: the importable API behind ``macs generate``.

    from macs_cli.generation import MacsGenerator, GenerationSettings

    gen = MacsGenerator.load(sd_model="CompVis/stable-diffusion-v1-4", adapter="runs/landscape",
                             device="cuda")
    images = gen.generate(embeddings, GenerationSettings(seed=7))   # (K, 512) or (N, K, 512)
    images[0].image.save("out.png")

Inference follows the official code: DPM-Solver multistep (20 steps), classifier-free guidance
7.5 whose unconditional branch is the all-zero stem embeddings through the MLP (plus the
negative prompt), latents scaled by the VAE's factor (0.18215 for SD v1.x). It runs diffusers'
own ``StableDiffusionPipeline`` with ``prompt_embeds = [text tokens | audio tokens]``, so the
denoising loop is exactly the stock one.

Reproducibility: image ``k`` of a call uses a CPU ``torch.Generator`` seeded with ``seed + k``
for its initial latents, whatever the batch it runs in; the same seed and inputs give the same
image on the same device.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import ConfigError, MacsError, ModelError
from ..weights.statecheck import describe_mismatch
from .adapter import AdapterConfig, AttentionRecorder, MacsAdapter, install_adapter
from .backbone import DEFAULT_SD_MODEL, OFFICIAL_SD_MODEL, load_backbone
from .checkpoints import AdapterSource, resolve_adapter


MAX_GUIDANCE = 100.0     # CFG scales in use stay far below (7.5 is the paper's); larger ones only overflow
MAX_SIDE = 4096          # pixels; SD v1.x works at 512 (a 4096 x 4096 image needs tens of GB already)
MAX_AUDIO_SCALE = 100.0


@dataclass
class GenerationSettings:
    steps: int = 20
    guidance: float = 7.5
    prompt: str = ""
    negative_prompt: str = ""
    height: int = 512
    width: int = 512
    audio_scale: float = 1.0
    seed: int = 0
    num_images: int = 1          # images per embedding set (seeds seed, seed + 1, ...)
    batch_size: int = 1          # images per denoising batch
    top_k: int | None = None     # keep the first k (most significant) stems

    def validate(self) -> "GenerationSettings":
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        need(isinstance(self.steps, int) and 1 <= self.steps <= 1000, f"--steps must be in 1..1000 (got {self.steps})")
        need(np.isfinite(self.guidance) and 0 <= self.guidance <= MAX_GUIDANCE,
             f"--guidance must be in 0..{MAX_GUIDANCE:g} (got {self.guidance})")
        for name in ("height", "width"):
            v = getattr(self, name)
            need(isinstance(v, int) and 64 <= v <= MAX_SIDE and v % 8 == 0,
                 f"--{name} must be a multiple of 8 in 64..{MAX_SIDE} (got {v})")
        need(np.isfinite(self.audio_scale) and abs(self.audio_scale) <= MAX_AUDIO_SCALE,
             f"--audio-scale must be in -{MAX_AUDIO_SCALE:g}..{MAX_AUDIO_SCALE:g} (got {self.audio_scale})")
        need(isinstance(self.seed, int) and 0 <= self.seed < 2 ** 63, f"--seed must be in 0..2^63-1 (got {self.seed})")
        need(self.num_images >= 1, f"--num-images must be >= 1 (got {self.num_images})")
        need(self.seed + self.num_images - 1 < 2 ** 63,
             f"--seed + --num-images - 1 must be below 2^63 (image k uses seed + k; got {self.seed})")
        need(self.batch_size >= 1, f"--batch-size must be >= 1 (got {self.batch_size})")
        need(self.top_k is None or self.top_k >= 1, f"--top-k must be >= 1 (got {self.top_k})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NonFiniteImageError(MacsError):
    """The denoising produced NaN or infinite values (an image of them would be written as black)."""


@dataclass
class GeneratedImage:
    image: Any                       # PIL.Image
    seed: int
    source_index: int                # which embedding set (row of the input batch)
    attention: np.ndarray | None = None   # (K, h, w) per-stem maps on the latent grid (sum 1 over stems)
    info: dict[str, Any] = field(default_factory=dict)


def as_batch(embeddings: np.ndarray | torch.Tensor, source: str = "embeddings") -> np.ndarray:
    """(K, D) or (N, K, D) -> (N, K, D) float32; rejects other shapes and non-finite values."""
    e = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
    if e.ndim == 2:
        e = e[None]
    if e.ndim != 3 or e.shape[1] < 1 or e.shape[0] < 1:
        raise ConfigError(f"{source}: expected an (M, 512) or (N, M, 512) array, got shape {tuple(e.shape)}")
    if not (np.issubdtype(e.dtype, np.floating) or np.issubdtype(e.dtype, np.integer)):
        raise ConfigError(f"{source}: expected real numbers, got {e.dtype} values")
    if not np.all(np.isfinite(e)):
        raise ConfigError(f"{source}: holds non-finite values")
    return e.astype(np.float32)


class MacsGenerator:
    """A Stable Diffusion v1.x pipeline with the MACS adapter installed."""

    def __init__(self, pipe, adapter: MacsAdapter, source: AdapterSource | None = None,
                 sd_model: str | None = None):
        from diffusers import DPMSolverMultistepScheduler

        self.pipe = pipe
        self.adapter = adapter
        self.source = source
        self.sd_model = sd_model or getattr(pipe, "macs_source", None)
        self.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        self.infer_pipe = type(pipe)(**{**pipe.components, "scheduler": self.scheduler},
                                     requires_safety_checker=False)
        self.infer_pipe.set_progress_bar_config(disable=True)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def load(cls, sd_model: str | None = None, adapter: str | os.PathLike | None = None,
             adapter_mlp: str | os.PathLike | None = None, adapter_unet: str | os.PathLike | None = None,
             device: str | torch.device = "cpu", dtype: Any = "auto", allow_download: bool = False,
             backbone_weights: bool = True, cache_dir: str | os.PathLike | None = None,
             source: AdapterSource | None = None) -> "MacsGenerator":
        """Resolve the adapter first (cheap, and it may name its backbone), then load the backbone.

        Without ``sd_model`` the backbone is the one the adapter records, else SD v1.4 for official
        adapters (the official code's) and SD v1.5 (the paper's) otherwise. ``source``: an adapter
        already resolved with :func:`resolve_adapter` (then ``adapter*`` are not used).
        """
        if source is None:
            source = resolve_adapter(adapter, adapter_mlp, adapter_unet, allow_download, backbone_weights)
        recorded = not sd_model and bool(source.sd_model)
        if not sd_model:
            sd_model = source.sd_model or (OFFICIAL_SD_MODEL if source.kind == "official" else DEFAULT_SD_MODEL)
        try:
            pipe = load_backbone(sd_model, device, dtype, allow_download, cache_dir)
        except ModelError as exc:
            if recorded:
                raise ModelError(f"{exc} [the adapter was trained on {sd_model}; pass --sd-model to use another "
                                 "copy of it]") from None
            raise
        return cls.from_pipeline(pipe, source, sd_model)

    @classmethod
    def from_pipeline(cls, pipe, source: AdapterSource | None = None, sd_model: str | None = None,
                      config: AdapterConfig | None = None) -> "MacsGenerator":
        """Install an adapter on a loaded pipeline: ``source``'s weights, or a fresh one from
        ``config`` (random MLP; audio projections copied from the text ones)."""
        text_tokens = int(pipe.tokenizer.model_max_length)
        if source is not None and source.text_tokens and int(source.text_tokens) != text_tokens:
            raise ModelError(f"the adapter was trained with {source.text_tokens} text tokens but this backbone's "
                             f"tokenizer makes {text_tokens}")
        if source is not None and source.backbone_state is not None:
            _load_backbone_state(pipe.unet, source.backbone_state, source.files[-1])
        adapter = install_adapter(pipe.unet, source.config if source else config, text_tokens)
        if source is not None:
            adapter.load_state_dict(source.state, " + ".join(source.files))
        dtype = pipe.unet.dtype
        for proc in adapter.processors.values():
            proc.to(dtype=dtype)
        adapter.eval()
        return cls(pipe, adapter, source, sd_model)

    # -- pieces ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        # the UNet's device (diffusers' _execution_device walks every module of every component)
        return self.pipe.unet.device

    @property
    def num_tokens(self) -> int:
        return self.adapter.config.num_tokens

    def audio_tokens(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, K, 512) stem embeddings -> (B, K, C) audio tokens in the UNet's dtype."""
        proj = self.adapter.projection
        with torch.no_grad():
            return proj(embeddings.to(self.device, proj.pe.dtype)).to(self.pipe.unet.dtype)

    def text_tokens(self, prompt: str, negative_prompt: str,
                    guidance: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            cond, uncond = self.infer_pipe.encode_prompt(prompt, self.device, 1, guidance, negative_prompt)
        return cond, uncond

    def prepare(self, embeddings: np.ndarray, top_k: int | None) -> np.ndarray:
        e = as_batch(embeddings)
        if top_k is not None:
            if top_k > e.shape[1]:
                raise ConfigError(f"--top-k {top_k}: the embeddings hold only {e.shape[1]} stems")
            e = e[:, :top_k]
        if e.shape[2] != self.adapter.config.clap_dim:
            raise ConfigError(f"embeddings are {e.shape[2]}-wide, the adapter takes {self.adapter.config.clap_dim}")
        if e.shape[1] > self.num_tokens:
            raise ConfigError(f"{e.shape[1]} stems but the adapter takes at most {self.num_tokens} (its "
                              f"positional encoding has {self.num_tokens} rows): pass --top-k {self.num_tokens}")
        return e

    # -- generation -----------------------------------------------------------------------------
    def generate(self, embeddings: np.ndarray | torch.Tensor, settings: GenerationSettings | None = None,
                 attention_maps: bool = False, seeds: Sequence[int] | None = None,
                 on_image: Callable[[GeneratedImage], None] | None = None) -> list[GeneratedImage]:
        """Images for every embedding set (rows of an (N, K, 512) array) x ``num_images`` seeds.

        ``seeds`` overrides the per-set seeds ``seed, seed + 1, ...``. Jobs are run in batches of
        ``batch_size``; ``on_image`` is called as each image is done.
        """
        s = (settings or GenerationSettings()).validate()
        e = self.prepare(embeddings, s.top_k)
        seeds = list(seeds) if seeds is not None else [s.seed + k for k in range(s.num_images)]
        jobs = [(row, seed) for row in range(e.shape[0]) for seed in seeds]
        use_cfg = s.guidance > 1.0
        cond_text, uncond_text = self.text_tokens(s.prompt, s.negative_prompt, use_cfg)
        k = e.shape[1]
        null = self.audio_tokens(torch.zeros(1, k, e.shape[2])) if use_cfg else None
        self.adapter.set_scale(s.audio_scale)
        out: list[GeneratedImage] = []
        factor = self.infer_pipe.vae_scale_factor
        try:
            for start in range(0, len(jobs), s.batch_size):
                batch = jobs[start: start + s.batch_size]
                b = len(batch)
                tokens = self.audio_tokens(torch.from_numpy(e[[row for row, _ in batch]]))
                prompt_embeds = torch.cat([cond_text.expand(b, -1, -1), tokens], dim=1)
                negative = None
                if use_cfg:
                    negative = torch.cat([uncond_text.expand(b, -1, -1), null.expand(b, -1, -1)], dim=1)
                generators = [torch.Generator("cpu").manual_seed(seed) for _, seed in batch]
                recorder = AttentionRecorder((s.height // factor, s.width // factor)) if attention_maps else None
                self.adapter.set_recorder(recorder)
                with torch.inference_mode(), self.adapter.caching():
                    result = self.infer_pipe(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative,
                                             num_inference_steps=s.steps, guidance_scale=s.guidance,
                                             height=s.height, width=s.width, generator=generators,
                                             output_type="np")
                pixels = np.asarray(result.images)
                if not np.all(np.isfinite(pixels)):
                    raise NonFiniteImageError(
                        f"the denoising produced NaN or infinite values (seed {batch[0][1]}, guidance "
                        f"{s.guidance:g}, {str(self.pipe.unet.dtype).replace('torch.', '')}); no image written: "
                        "try a lower --guidance or --audio-scale, or --dtype fp32")
                images = self.infer_pipe.numpy_to_pil(pixels)
                maps = None
                if recorder is not None and recorder.result() is not None:
                    maps = recorder.result().numpy()[-b:]  # the conditional half comes second
                for i, ((row, seed), image) in enumerate(zip(batch, images)):
                    item = GeneratedImage(image, seed, row, None if maps is None else maps[i])
                    out.append(item)
                    if on_image is not None:
                        on_image(item)
        finally:
            self.adapter.set_recorder(None)
        return out

    def interpolate(self, a: np.ndarray, b: np.ndarray, frames: int, settings: GenerationSettings | None = None,
                    on_image: Callable[[GeneratedImage], None] | None = None,
                    ) -> tuple[list[GeneratedImage], np.ndarray]:
        """Images along the straight line from embedding set ``a`` to ``b`` (``frames`` >= 2, both
        ends included), all from the same seed; returns the images and the (frames,) positions."""
        s = (settings or GenerationSettings()).validate()
        if frames < 2:
            raise ConfigError(f"--frames must be >= 2 (got {frames})")
        ea, eb = as_batch(a, "first --interpolate input"), as_batch(b, "second --interpolate input")
        if ea.shape[0] != 1 or eb.shape[0] != 1:
            raise ConfigError("--interpolate takes two single (M, 512) embedding sets")
        k = min(ea.shape[1], eb.shape[1], s.top_k or 10 ** 9)
        ea, eb = ea[0, :k], eb[0, :k]
        t = np.linspace(0.0, 1.0, frames, dtype=np.float32)
        path = np.stack([(1 - x) * ea + x * eb for x in t])
        single = GenerationSettings(**{**s.to_dict(), "num_images": 1, "top_k": None})
        return self.generate(path, single, seeds=[s.seed], on_image=on_image), t

    # -- records --------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Backbone, adapter and scheduler, for an image's JSON sidecar."""
        import diffusers

        return {"sd_model": self.sd_model, "sd_revision": getattr(self.pipe, "macs_revision", None),
                "adapter": {**(self.source.describe() if self.source else {"kind": "in-memory"}),
                            "sha256": self.adapter.fingerprint()},
                "scheduler": type(self.scheduler).__name__, "dtype": str(self.pipe.unet.dtype).replace("torch.", ""),
                "device": str(self.device), "text_tokens": int(self.pipe.tokenizer.model_max_length),
                "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__}}


def _load_backbone_state(unet, state: dict[str, torch.Tensor], source: str) -> None:
    """Load an official full UNet state dict's backbone weights into ``unet`` (shapes checked)."""
    base = {k: v for k, v in unet.state_dict().items() if ".processor." not in k}
    problem = describe_mismatch(base, state)
    if problem:
        raise ModelError(f"{source}: its UNet weights do not fit this backbone ({problem}); "
                         "is --sd-model a Stable Diffusion v1.x model?")
    with torch.no_grad():
        for k, v in base.items():
            v.copy_(state[k].to(dtype=v.dtype))
