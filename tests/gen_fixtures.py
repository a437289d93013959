"""Tiny, randomly initialised Stable Diffusion pipelines for the generation tests (no network).

:func:`make_tiny_sd` writes a diffusers pipeline folder (``model_index.json``, ``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) with the same structure as
``CompVis/stable-diffusion-v1-4``, only tiny:

- a CLIP BPE tokenizer whose vocabulary is the 256 byte symbols (alone and word-final) plus a
  few merges, so any text tokenises without unknown tokens; ``model_max_length`` 77 as in SD;
- a 2-layer, 32-wide ``CLIPTextModel``;
- a ``UNet2DConditionModel`` with two cross-attention down blocks, a cross-attention mid block
  and two cross-attention up blocks (so ``attn2`` layers live in down, mid and up blocks, as in
  SD v1.x) and a 32-wide cross-attention;
- an ``AutoencoderKL`` with four 8-channel blocks: 8x spatial downsampling, like SD's VAE;
- SD v1.x's PNDM scheduler configuration.

Everything is loaded back by the tests through ``StableDiffusionPipeline.from_pretrained``, the
code path users take.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

CROSS_DIM = 32
TEXT_TOKENS = 77


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


MERGES = ["t h", "th e</w>", "o f</w>", "s o", "so u", "sou n", "soun d</w>", "d o", "do g</w>"]


def make_clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    for m in MERGES:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": TEXT_TOKENS, "tokenizer_class": "CLIPTokenizer", "pad_token": "<|endoftext|>",
         "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))
    tok = CLIPTokenizer.from_pretrained(str(folder))
    assert len(tok) == len(vocab), len(tok)
    return tok


def build_tiny_components(seed: int = 0, tmp: Path | None = None) -> dict:
    """The five components of a tiny SD v1.x-like pipeline, randomly initialised from ``seed``."""
    import tempfile

    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = make_clip_tokenizer(Path(tmp or tempfile.mkdtemp()) / "tok")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_DIM, attention_head_dim=4)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=4, sample_size=64)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=CROSS_DIM, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=TEXT_TOKENS, projection_dim=CROSS_DIM,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1,
                              set_alpha_to_one=False)
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text.eval(), "tokenizer": tok,
            "scheduler": scheduler}


def make_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Save a tiny SD v1.x-like pipeline into ``folder`` (a diffusers pipeline folder)."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    parts = build_tiny_components(seed, folder.parent)
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return folder


def random_embeddings(m: int = 4, seed: int = 0, batch: int | None = None) -> np.ndarray:
    """L2-normalised random (M, 512) or (N, M, 512) float32 'CLAP' embeddings."""
    rng = np.random.default_rng(seed)
    shape = (m, 512) if batch is None else (batch, m, 512)
    e = rng.standard_normal(shape).astype(np.float32)
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


def write_embeddings(path: Path, emb: np.ndarray, sidecar: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb.astype(np.float32))
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def official_state_dicts(unet, adapter) -> tuple[dict, dict]:
    """What the official MACS training script saves for an adapter installed on ``unet``:
    ``<Dataset>_mlp.pt`` (the MLP and ``pe``) and ``<Dataset>_unet.pt`` (the whole UNet state
    dict, ``...attn2.processor.to_k_ip/to_v_ip.weight`` included)."""
    mlp = {k: v.detach().clone() for k, v in adapter.projection.state_dict().items()}
    full = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    return mlp, full


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny SD v1.x-like pipeline folder (import this fixture into a test module to use it)."""
    return make_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


def run(*args):
    """``macs generate`` / ``macs train-gen`` through typer's test runner, as main.py registers them.

    The verbs use every core on the CPU unless OMP_NUM_THREADS is set; the tests keep one thread
    (several threads on a busy 2-core machine slow these tiny models down many times over)."""
    import typer
    from typer.testing import CliRunner

    from macs_cli.cli.generate import generate
    from macs_cli.cli.train_gen import train_gen

    app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    app.command("generate", no_args_is_help=True)(generate)
    app.command("train-gen", no_args_is_help=True)(train_gen)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        return CliRunner().invoke(app, [str(a) for a in args])

