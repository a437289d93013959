"""Speed of ``macs generate`` against diffusers' plain ``StableDiffusionPipeline``, same settings.

A full-size Stable Diffusion v1.x (the UNet, VAE and CLIP text encoder built from SD v1's configs,
written below as dicts, with random weights: speed does not depend on the values, and nothing is
downloaded) generates 512 x 512 images with DPM-Solver multistep, 20 steps, guidance 7.5:

* ``plain``: ``StableDiffusionPipeline(prompt="", negative_prompt="")`` with diffusers' stock
  attention processors, ``num_images_per_prompt = batch``;
* ``macs``: :class:`macs_cli.generation.MacsGenerator` on the same pipeline object, the adapter
  installed (6 ranked stem embeddings -> MLP -> 6 audio tokens appended to the 77 text tokens;
  every ``attn2`` runs the decoupled text + audio attention), unconditional branch = zeroed
  embeddings through the MLP.

Both include prompt encoding, the 20 UNet steps (x2 for guidance) and VAE decoding to PIL images.
Runs alternate (plain, macs, plain, macs, ...) after a warm-up of each, so drift hits both alike;
the script reports the median seconds per image at batch 1, images/s at batch 8, and the ratio
macs / plain (target <= 1.05).

    python benchmarks/generation_speed.py --device cuda --out benchmarks/results/generation_speed_h100.json
    python benchmarks/generation_speed.py --smoke            # tiny model, 64 x 64, CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# -- Stable Diffusion v1.x component configs (CompVis/stable-diffusion-v1-4 and v1-5 share them) -------
SD_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 768, "attention_head_dim": 8,
}
SD_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 512,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "act_fn": "silu",
    "norm_num_groups": 32, "scaling_factor": 0.18215,
}
SD_TEXT = {  # CLIP ViT-L/14's text tower
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "projection_dim": 768, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
SD_SCHEDULER = {  # SD v1's scheduler_config.json (PNDM); the pipelines switch it to DPM-Solver
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False,
}
# --smoke: the same structure, tiny
TINY_UNET = {**SD_UNET, "sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1,
             "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
             "cross_attention_dim": 32, "attention_head_dim": 4}
TINY_VAE = {**SD_VAE, "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4,
            "sample_size": 64}
TINY_TEXT = {**SD_TEXT, "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
             "num_attention_heads": 4, "projection_dim": 32}


def clip_tokenizer(folder: Path):
    """A CLIP BPE tokenizer over the 256 byte symbols (SD's own needs a download; the prompt is
    empty here, so only <|startoftext|>, <|endoftext|> and padding matter)."""
    from transformers import CLIPTokenizer

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    symbols = [chr(c) for c in cs]
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77,
                                                             "tokenizer_class": "CLIPTokenizer"}))
    return CLIPTokenizer.from_pretrained(str(folder))


def build_pipeline(tiny: bool, device: str, dtype: torch.dtype):
    from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, PNDMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD_UNET))
    vae = AutoencoderKL(**(TINY_VAE if tiny else SD_VAE))
    text = CLIPTextModel(CLIPTextConfig(**(TINY_TEXT if tiny else SD_TEXT)))
    tok = clip_tokenizer(Path(tempfile.mkdtemp(prefix="sd-tok-")))
    scheduler = DPMSolverMultistepScheduler.from_config(PNDMScheduler(**SD_SCHEDULER).config)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    for m in (unet, vae, text):
        m.requires_grad_(False).eval()
    from macs_cli.generation.backbone import quiet_loading

    with quiet_loading():  # diffusers warns about casting a model with .to(dtype)
        return pipe.to(device, dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny model at 64 x 64, 2 steps: proves the script works")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default 20; --smoke: 2)")
    ap.add_argument("--size", type=int, default=None, help="image side in pixels (default 512; --smoke: 64)")
    ap.add_argument("--batch", type=int, default=8, help="batch for the images/s figure")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per pipeline and batch size")
    ap.add_argument("--stems", type=int, default=6, help="stem embeddings per image (M)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()

    from macs_cli.generation import AdapterConfig, GenerationSettings, MacsGenerator
    from macs_cli.generation.backbone import resolve_dtype

    tiny = args.smoke
    steps = args.steps or (2 if tiny else 20)
    size = args.size or (64 if tiny else 512)
    dtype = resolve_dtype("auto", args.device)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    t0 = time.time()
    pipe = build_pipeline(tiny, args.device, dtype)
    build_s = time.time() - t0
    unet = pipe.unet
    stock = dict(unet.attn_processors)                       # diffusers' AttnProcessor2_0 everywhere
    cross = int(unet.config.cross_attention_dim)
    gen = MacsGenerator.from_pipeline(pipe, config=AdapterConfig(num_tokens=args.stems, cross_attention_dim=cross))
    ours = dict(unet.attn_processors)
    rng = np.random.default_rng(0)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def plain(batch: int) -> None:
        unet.set_attn_processor(dict(stock))  # (diffusers empties the dict it is given)
        gens = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
        pipe(prompt="", negative_prompt="", num_images_per_prompt=batch, num_inference_steps=steps,
             guidance_scale=7.5, height=size, width=size, generator=gens, output_type="pil")
        sync()

    def macs(batch: int) -> None:
        unet.set_attn_processor(dict(ours))
        e = rng.standard_normal((args.stems, 512)).astype(np.float32)
        gen.generate(e / np.linalg.norm(e, axis=1, keepdims=True),
                     GenerationSettings(steps=steps, guidance=7.5, height=size, width=size, seed=0,
                                        num_images=batch, batch_size=batch))
        sync()

    results: dict = {"device": args.device, "dtype": str(dtype).replace("torch.", ""), "smoke": tiny, "steps": steps,
                     "size": size, "guidance": 7.5, "stems": args.stems, "repeats": args.repeats,
                     "scheduler": "DPMSolverMultistepScheduler", "build_seconds": round(build_s, 2),
                     "torch": torch.__version__, "python": platform.python_version()}
    import diffusers

    results["diffusers"] = diffusers.__version__
    if args.device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    for batch in sorted({1, args.batch}):
        plain(batch)
        macs(batch)                                           # warm-up (kernels, allocator)
        times: dict[str, list[float]] = {"plain": [], "macs": []}
        for _ in range(args.repeats):
            for name, fn in (("plain", plain), ("macs", macs)):
                t = time.perf_counter()
                fn(batch)
                times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        results[f"batch_{batch}"] = {
            "seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
            "seconds_per_image": {k: round(v / batch, 4) for k, v in med.items()},
            "images_per_second": {k: round(batch / v, 3) for k, v in med.items()},
            "ratio_macs_over_plain": round(med["macs"] / med["plain"], 4),
        }
        print(f"batch {batch}: plain {med['plain'] / batch:.3f} s/image ({batch / med['plain']:.2f} img/s), "
              f"macs {med['macs'] / batch:.3f} s/image ({batch / med['macs']:.2f} img/s), "
              f"ratio {med['macs'] / med['plain']:.3f}", flush=True)
    if args.device.startswith("cuda"):
        results["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
