"""MACS stage 2 inference: the adapter, its checkpoints, backbone loading and ``macs generate``,
on a tiny random Stable Diffusion pipeline saved locally (tests/gen_fixtures.py; no network)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from macs_cli.errors import ConfigError, ModelError
from macs_cli.generation import (AdapterConfig, AudioAttnProcessor, MacsGenerator, GenerationSettings,
                                 install_adapter, load_backbone, read_adapter_file, resolve_adapter, save_adapter)
from macs_cli.generation.adapter import cross_attention_layers

from . import clap_fixtures as cf
from . import gen_fixtures as gf
from .conftest import tone_mix
from .gen_fixtures import tiny_sd  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]
CFG = AdapterConfig(num_tokens=4, cross_attention_dim=gf.CROSS_DIM, hidden_dim=64)
FAST = ["--steps", "2", "--height", "64", "--width", "64", "--device", "cpu", "-q"]

run = gf.run


def pixels(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="session")
def adapter_file(tiny_sd, tmp_path_factory) -> Path:
    """A random adapter (audio projections perturbed away from the text ones) in our format."""
    pipe = load_backbone(str(tiny_sd))
    torch.manual_seed(3)
    gen = MacsGenerator.from_pipeline(pipe, config=CFG)
    with torch.no_grad():
        for p in gen.adapter.processors.values():
            p.to_k_ip.weight.add_(0.3 * torch.randn_like(p.to_k_ip.weight))
            p.to_v_ip.weight.add_(0.3 * torch.randn_like(p.to_v_ip.weight))
    return save_adapter(gen.adapter, tmp_path_factory.mktemp("adapter") / "adapter.safetensors", sd_model=str(tiny_sd))


@pytest.fixture(scope="session")
def emb_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("emb")
    return {"a": gf.write_embeddings(d / "a.npy", gf.random_embeddings(4, seed=1), {"order": [0, 1, 2, 3]}),
            "b": gf.write_embeddings(d / "b.npy", gf.random_embeddings(4, seed=2)),
            "batch": gf.write_embeddings(d / "batch.npy", gf.random_embeddings(4, seed=3, batch=2)),
            "six": gf.write_embeddings(d / "six.npy", gf.random_embeddings(6, seed=4))}


def _unet_inputs(unet, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, 8, 8, generator=g)
    text = torch.randn(batch, 77, gf.CROSS_DIM, generator=g)
    audio = torch.randn(batch, 4, gf.CROSS_DIM, generator=g)
    return latents, torch.tensor([10, 500]), text, audio


# -- the adapter --------------------------------------------------------------------------------
def test_text_branch_is_exactly_diffusers_processor_when_audio_scale_is_zero(tiny_sd):
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe = load_backbone(str(tiny_sd))
    unet = pipe.unet
    unet.set_attn_processor(AttnProcessor2_0())
    latents, t, text, audio = _unet_inputs(unet)
    with torch.no_grad():
        stock = unet(latents, t, encoder_hidden_states=text).sample
        adapter = install_adapter(unet, CFG, text_tokens=77)
        assert len(adapter.processors) == 7  # down 2, mid 1, up 2 x 2 in the tiny UNet: every attn2
        adapter.set_scale(0.0)
        with_audio = unet(latents, t, encoder_hidden_states=torch.cat([text, audio], 1)).sample
        text_only = unet(latents, t, encoder_hidden_states=text).sample
        adapter.set_scale(1.0)
        states = torch.cat([text, audio], 1)
        mixed = unet(latents, t, encoder_hidden_states=states).sample
        with adapter.caching():   # audio keys/values computed once, reused at the next steps
            cached = [unet(latents, t, encoder_hidden_states=states).sample for _ in range(2)]
            assert all(len(p.kv_cache) == 1 for p in adapter.processors.values())
        assert all(p.kv_cache is None for p in adapter.processors.values())
    assert torch.equal(with_audio, stock) and torch.equal(text_only, stock)
    assert not torch.allclose(mixed, stock, atol=1e-4)
    assert all(torch.equal(c, mixed) for c in cached)
    # the audio branch adds Attn(Q, K_audio, V_audio) before the output projection: checked on one layer
    name, attn = next(iter(cross_attention_layers(unet).items()))
    proc = adapter.processors[name]
    x = torch.randn(2, 16, attn.to_q.in_features)
    ctx = torch.cat([text, audio], 1)
    with torch.no_grad():
        out = proc(attn, x, ctx)
        q = attn.to_q(x).view(2, -1, attn.heads, attn.to_q.out_features // attn.heads).transpose(1, 2)

        def heads(t):
            return t.view(2, -1, attn.heads, q.shape[-1]).transpose(1, 2)

        def att(k, v):
            w = (q @ heads(k).transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
            return (w @ heads(v)).transpose(1, 2).reshape(2, -1, attn.heads * q.shape[-1])

        h = att(attn.to_k(text), attn.to_v(text)) + att(proc.to_k_ip(audio), proc.to_v_ip(audio))
        expect = attn.to_out[0](h)
    assert torch.allclose(out, expect, atol=1e-5)


def test_adapter_layout_and_initialisation(tiny_sd):
    pipe = load_backbone(str(tiny_sd))
    torch.manual_seed(0)
    adapter = install_adapter(pipe.unet, CFG)
    state = adapter.state_dict()
    proj = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("_ip.weight")}
    assert proj == {"pe": (4, 512), "adapter.0.weight": (512,), "adapter.0.bias": (512,),
                    "adapter.1.weight": (64, 512), "adapter.1.bias": (64,),
                    "adapter.4.weight": (gf.CROSS_DIM, 64), "adapter.4.bias": (gf.CROSS_DIM,),
                    "adapter.5.weight": (gf.CROSS_DIM,), "adapter.5.bias": (gf.CROSS_DIM,)}
    assert 0.03 < float(state["pe"].std()) < 0.07
    for name, attn in cross_attention_layers(pipe.unet).items():
        assert isinstance(attn.processor, AudioAttnProcessor)
        assert torch.equal(state[f"{name}.to_k_ip.weight"], attn.to_k.weight)
        assert torch.equal(state[f"{name}.to_v_ip.weight"], attn.to_v.weight)
        assert attn.processor.to_k_ip.bias is None
        # the official key names appear in the UNet's own state dict
        assert f"{name}.to_k_ip.weight" in pipe.unet.state_dict()
    proj_module = adapter.projection
    x = torch.randn(2, 3, 512)
    proj_module.eval()
    assert proj_module(x).shape == (2, 3, gf.CROSS_DIM)
    with pytest.raises(ConfigError, match="top-k 4"):
        proj_module(torch.randn(1, 5, 512))


def test_saved_adapter_reloads_to_the_same_images(tiny_sd, adapter_file):
    source = read_adapter_file(adapter_file)
    assert source.sd_model == str(tiny_sd) and source.text_tokens == 77 and source.config.num_tokens == 4
    meta = json.loads(adapter_file.with_suffix(".json").read_text())
    assert meta["format"] == "macs-adapter-v1" and meta["layers"] == 7
    from safetensors import safe_open

    with safe_open(str(adapter_file), "pt") as f:
        keys = set(f.keys())
    assert all(k == "pe" or k.startswith("adapter.") or k.endswith(("to_k_ip.weight", "to_v_ip.weight")) for k in keys)
    g1 = MacsGenerator.load(adapter=adapter_file)  # backbone from the adapter's record
    pipe = load_backbone(str(tiny_sd))
    g2 = MacsGenerator.from_pipeline(pipe, config=CFG)
    g2.adapter.load_state_dict(source.state)
    s = GenerationSettings(steps=2, height=64, width=64, seed=5)
    e = gf.random_embeddings(4, seed=9)
    a, b = g1.generate(e, s)[0], g2.generate(e, s)[0]
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert g1.adapter.fingerprint() == g2.adapter.fingerprint()


def test_official_checkpoint_pair_loads_with_weights_only(tiny_sd, adapter_file, tmp_path):
    # a synthetic official pair with the official layout, built from the tiny UNet
    pipe = load_backbone(str(tiny_sd))
    ours = MacsGenerator.from_pipeline(pipe, read_adapter_file(adapter_file))
    mlp, full = gf.official_state_dicts(pipe.unet, ours.adapter)
    assert "pe" in mlp and any(k.endswith("attn2.processor.to_k_ip.weight") for k in full)
    bias_key = "conv_in.bias"
    original_bias = full[bias_key].clone()
    full[bias_key] = full[bias_key] + 0.01        # the official UNet file's backbone weights are used too
    torch.save(mlp, tmp_path / "Tiny_mlp.pt")
    torch.save(full, tmp_path / "Tiny_unet.pt")
    s = GenerationSettings(steps=2, height=64, width=64, seed=1)
    e = gf.random_embeddings(4, seed=2)
    for spec in ({"adapter_mlp": tmp_path / "Tiny_mlp.pt", "adapter_unet": tmp_path / "Tiny_unet.pt"},
                 {"adapter": tmp_path}, {"adapter": tmp_path / "Tiny_mlp.pt"}):
        official = MacsGenerator.load(sd_model=str(tiny_sd), **spec)
        assert official.source.kind == "official"
        assert official.adapter.fingerprint() == ours.adapter.fingerprint()
        assert torch.allclose(official.pipe.unet.state_dict()[bias_key], full[bias_key])
    # without the backbone change the images equal our format's
    full[bias_key] = original_bias              # (x + 0.01) - 0.01 is not x in float32
    torch.save(full, tmp_path / "Tiny_unet.pt")
    official = MacsGenerator.load(sd_model=str(tiny_sd), adapter=tmp_path)
    assert np.array_equal(np.asarray(official.generate(e, s)[0].image), np.asarray(ours.generate(e, s)[0].image))
    # a pickled object is refused, not run
    torch.save({"pe": torch.zeros(4, 512), "x": object()}, tmp_path / "Bad_mlp.pt")
    torch.save(full, tmp_path / "Bad_unet.pt")
    with pytest.raises(ModelError, match="cannot load checkpoint safely"):
        resolve_adapter(tmp_path / "Bad_mlp.pt")
    with pytest.raises(ModelError, match="several official adapters"):
        resolve_adapter(tmp_path)
    # an official UNet file from another backbone: one line naming the mismatch
    wrong = dict(full)
    wrong["conv_in.bias"] = torch.zeros(wrong["conv_in.bias"].shape[0] + 1)
    del wrong["conv_out.bias"]
    other = tmp_path / "other"
    other.mkdir()
    torch.save(mlp, other / "Other_mlp.pt")
    torch.save(wrong, other / "Other_unet.pt")
    with pytest.raises(ModelError, match=r"do not fit this backbone \(1 shape mismatch.*conv_in.bias.*"
                                         r"1 missing key.*conv_out.bias"):
        MacsGenerator.load(sd_model=str(tiny_sd), adapter=other)


def test_backbone_by_hub_id_from_the_cache(tiny_sd, adapter_file, tmp_path):
    """Both SD v1.x hub ids load from a Hugging Face cache (offline), laid out as the hub writes it."""
    cache = tmp_path / "hub"
    for repo in ("CompVis/stable-diffusion-v1-4", "stable-diffusion-v1-5/stable-diffusion-v1-5"):
        folder = cache / ("models--" + repo.replace("/", "--"))
        commit = "0123456789abcdef0123456789abcdef01234567"
        shutil.copytree(tiny_sd, folder / "snapshots" / commit)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(commit)
        gen = MacsGenerator.load(sd_model=repo, adapter=adapter_file, cache_dir=cache)
        assert gen.describe()["sd_revision"] == commit and gen.sd_model == repo
    with pytest.raises(ModelError, match="hf download CompVis/other-model"):
        load_backbone("CompVis/other-model", cache_dir=cache)


def test_missing_sd_weights_is_one_line_error(tmp_path, adapter_file, emb_files):
    """Offline with an empty Hugging Face cache: one line naming --sd-model and `hf download`, quickly."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    code = ("import typer; from macs_cli.cli.generate import generate; app = typer.Typer(); "
            "app.command('generate')(generate); app.command('other')(lambda: None); app()")
    r = subprocess.run([sys.executable, "-c", code, "generate", "-e", str(emb_files["a"]), "--adapter",
                        str(adapter_file), "--sd-model", "CompVis/stable-diffusion-v1-4", "-o",
                        str(tmp_path / "x.png"), "-q"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "--sd-model" in lines[0] and "hf download CompVis/stable-diffusion-v1-4" in lines[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "x.png").exists()


# -- macs generate ----------------------------------------------------------------------------
def test_generate_from_embeddings_with_sidecar_and_same_seed_same_image(tiny_sd, adapter_file, emb_files, tmp_path):
    out = tmp_path / "one.png"
    r = run("generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", out, "--seed", 7, *FAST)
    assert r.exit_code == 0, r.output
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["seed"] == 7 and side["settings"]["steps"] == 2 and side["settings"]["guidance"] == 7.5
    assert side["sd_model"] == str(tiny_sd) and side["scheduler"] == "DPMSolverMultistepScheduler"
    assert side["adapter"]["kind"] == "macs" and len(side["adapter"]["sha256"]) == 64
    assert side["input"]["sha256"] == hashlib.sha256(emb_files["a"].read_bytes()).hexdigest()
    assert side["input"]["stems_used"] == 4 and side["settings"]["height"] == 64
    im = pixels(out)
    assert im.shape == (64, 64, 3)
    r = run("generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", out, "--seed", 7, *FAST)
    assert r.exit_code == 1 and "already exists" in r.output
    # a sidecar someone left is not overwritten either; -o x.jpg is refused (PNG only), no folder made
    (tmp_path / "side.json").write_text("{}")
    r = run("generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", tmp_path / "side.png", *FAST)
    assert r.exit_code == 1 and "side.json: exists and is not a macs generate sidecar" in r.output
    assert not (tmp_path / "side.png").exists()
    r = run("generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", tmp_path / "x.jpg", *FAST)
    assert r.exit_code == 2 and "PNG" in r.output and not (tmp_path / "x.jpg").exists()
    r = run("generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", tmp_path / "again.png", "--seed", 7,
            *FAST)
    assert r.exit_code == 0 and np.array_equal(pixels(tmp_path / "again.png"), im)
    r = run("generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", tmp_path / "other.png", "--seed", 8,
            *FAST)
    assert r.exit_code == 0 and not np.array_equal(pixels(tmp_path / "other.png"), im)
    # other audio, same seed: another image; audio scale 0: the audio no longer matters
    r = run("generate", "-e", emb_files["b"], "--adapter", adapter_file, "-o", tmp_path / "b.png", "--seed", 7, *FAST)
    assert r.exit_code == 0 and not np.array_equal(pixels(tmp_path / "b.png"), im)
    for name in ("a", "b"):
        r = run("generate", "-e", emb_files[name], "--adapter", adapter_file, "-o", tmp_path / f"{name}0.png",
                "--seed", 7, "--audio-scale", 0, *FAST)
        assert r.exit_code == 0, r.output
    assert np.array_equal(pixels(tmp_path / "a0.png"), pixels(tmp_path / "b0.png"))


def test_generate_batch_num_images_and_reproduction_from_sidecar(adapter_file, emb_files, tmp_path):
    out = tmp_path / "many"
    r = run("generate", "-e", emb_files["batch"], "--adapter", adapter_file, "-o", out, "--seed", 3,
            "--num-images", 2, "--batch-size", 3, "--guidance", 5, "--prompt", "the sound",
            "--negative-prompt", "dog", "--top-k", 3, *FAST)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["batch_000_00.png", "batch_000_01.png", "batch_001_00.png", "batch_001_01.png"]
    side = json.loads((out / "batch_001_01.json").read_text())
    assert side["seed"] == 4 and side["input"]["row"] == 1 and side["input"]["stems_used"] == 3
    assert side["settings"]["prompt"] == "the sound" and side["settings"]["top_k"] == 3
    # that image alone, from its sidecar's settings: the same pixels
    row = np.load(emb_files["batch"])[1]
    single = gf.write_embeddings(tmp_path / "row1.npy", row)
    s = side["settings"]
    r = run("generate", "-e", single, "--adapter", adapter_file, "-o", tmp_path / "re.png", "--seed", side["seed"],
            "--guidance", s["guidance"], "--prompt", s["prompt"], "--negative-prompt", s["negative_prompt"],
            "--top-k", s["top_k"], *FAST)
    assert r.exit_code == 0, r.output
    assert np.array_equal(pixels(tmp_path / "re.png"), pixels(out / "batch_001_01.png"))


def test_generate_rejects_bad_options_in_one_line(adapter_file, emb_files, tmp_path):
    cases = [
        (["--height", 100], "multiple of 8"),
        (["--width", 32], "multiple of 8"),
        (["--steps", 0], "--steps"),
        (["--num-images", 2], "pass a folder"),
    ]
    for extra, msg in cases:
        args = ["generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", tmp_path / "x.png", *FAST, *extra]
        r = run(*args)
        assert r.exit_code == 2 and msg in r.output, (extra, r.output)
        assert len(r.output.strip().splitlines()) == 1
    r = run("generate", "-e", emb_files["six"], "--adapter", adapter_file, "-o", tmp_path / "x.png", *FAST)
    assert r.exit_code == 2 and "--top-k 4" in r.output
    r = run("generate", "-e", emb_files["a"], "-o", tmp_path / "x.png", *FAST)
    assert r.exit_code == 2 and "--adapter" in r.output
    r = run("generate", "-e", emb_files["a"], "--audio", emb_files["b"], "--adapter", adapter_file, "-o", tmp_path,
            *FAST)
    assert r.exit_code == 2 and "exactly one input" in r.output
    r = run("generate", "-e", emb_files["a"], "--adapter", tmp_path / "nope.safetensors", "-o", tmp_path / "x.png",
            *FAST)
    assert r.exit_code == 1 and "no such adapter" in r.output
    assert not (tmp_path / "x.png").exists()


def test_embed_output_is_ranked_before_generation(adapter_file, tmp_path):
    """`macs embed` output (stem order, mixture in the sidecar) is ranked here, as `macs rank` would."""
    from macs_cli.clap.api import rank_embeddings

    e = gf.random_embeddings(4, seed=11)
    mix = e[2] * 0.9 + e[0] * 0.1
    raw = gf.write_embeddings(tmp_path / "raw.npy", e, {"mixture_embedding": mix.tolist()})
    ranked = gf.write_embeddings(tmp_path / "ranked.npy", rank_embeddings(e, mix).embeddings, {"order": [2, 0, 1, 3]})
    out = tmp_path / "out"
    for path in (raw, ranked):
        r = run("generate", "-e", path, "--adapter", adapter_file, "-o", out / f"{path.stem}.png", "--seed", 1, *FAST)
        assert r.exit_code == 0, r.output
    side = json.loads((out / "raw.json").read_text())
    assert side["input"]["ranked_here"] is True and side["input"]["order"][0] == 2
    assert json.loads((out / "ranked.json").read_text())["input"]["ranked_here"] is False
    assert np.array_equal(pixels(out / "raw.png"), pixels(out / "ranked.png"))


def test_interpolation_frames_and_contact_sheet(adapter_file, emb_files, tmp_path):
    out = tmp_path / "interp"
    r = run("generate", "--interpolate", emb_files["a"], emb_files["b"], "--frames", 3, "--adapter", adapter_file,
            "-o", out, "--seed", 4, *FAST)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("*.png")) == ["contact_sheet.png", "frame_000.png", "frame_001.png",
                                                         "frame_002.png"]
    assert json.loads((out / "frame_001.json").read_text())["input"]["t"] == 0.5
    assert pixels(out / "contact_sheet.png").shape[1] > 3 * 64
    # the ends are the two inputs' own images (same seed)
    for end, name in ((emb_files["a"], "frame_000.png"), (emb_files["b"], "frame_002.png")):
        r = run("generate", "-e", end, "--adapter", adapter_file, "-o", tmp_path / f"end_{name}", "--seed", 4, *FAST)
        assert r.exit_code == 0, r.output
        assert np.array_equal(pixels(tmp_path / f"end_{name}"), pixels(out / name))
    # options that do not apply to a path are refused, not silently ignored
    for extra in (["-n", 2], ["--attention-maps"]):
        r = run("generate", "--interpolate", emb_files["a"], emb_files["b"], "--adapter", adapter_file,
                "-o", tmp_path / "x", *extra, *FAST)
        assert r.exit_code == 2 and "do not apply" in r.output


def test_attention_maps(adapter_file, emb_files, tmp_path):
    out = tmp_path / "att"
    r = run("generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", out, "--seed", 2,
            "--attention-maps", *FAST)
    assert r.exit_code == 0, r.output
    maps = np.load(out / "a_attention.npy")
    assert maps.shape == (4, 8, 8) and np.allclose(maps.sum(0), 1.0, atol=1e-4)  # softmax over the stems
    assert pixels(out / "a_attention.png").shape[1] > 64 * 4
    # recording the maps does not change the image
    r = run("generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", tmp_path / "plain.png", "--seed", 2,
            *FAST)
    assert r.exit_code == 0 and np.array_equal(pixels(tmp_path / "plain.png"), pixels(out / "a.png"))


def test_generate_from_audio_with_tiny_separator_and_clap(adapter_file, tiny_model_path, tmp_path):
    clap = tmp_path / "tiny-clap.pt"
    torch.save(cf.laion_training_checkpoint(cf.make_laion_net()), clap)
    wav = tmp_path / "mix.wav"
    sf.write(wav, tone_mix(1.5, 16000, seed=3), 16000)
    r = run("generate", "--audio", wav, "--separator", tiny_model_path, "--clap", clap, "--adapter", adapter_file,
            "-o", tmp_path / "out", "--seed", 0, "--top-k", 3, *FAST)
    assert r.exit_code == 0, r.output
    side = json.loads((tmp_path / "out" / "mix.json").read_text())
    inp = side["input"]
    assert inp["kind"] == "audio" and inp["ranked"] is True and len(inp["order"]) == 3
    assert inp["separator"] == str(tiny_model_path) and len(inp["separator_sha256"]) == 64
    assert inp["stems_used"] == 3 and pixels(tmp_path / "out" / "mix.png").shape == (64, 64, 3)


def test_generate_output_safety(tiny_sd, adapter_file, emb_files, tmp_path):
    """Nothing is lost or half-written: same-name inputs, a later bad input, attention files, seeds."""
    twin = gf.write_embeddings(tmp_path / "other" / "a.npy", gf.random_embeddings(4, seed=9), {"order": [0, 1, 2, 3]})
    out = tmp_path / "out"
    r = run("generate", "-e", emb_files["a"], "-e", twin, "--adapter", adapter_file, "-o", out, *FAST)
    assert r.exit_code == 2 and "same file name" in r.output and not out.exists()
    # the second input does not fit the adapter (6 stems > 4): refused before the first image is written
    r = run("generate", "-e", emb_files["a"], "-e", emb_files["six"], "--adapter", adapter_file, "-o", out, *FAST)
    assert r.exit_code == 2 and "six.npy" in r.output and not out.exists()
    # attention files are outputs too: one that is not ours is never replaced
    out.mkdir()
    (out / "a_attention.png").write_bytes(b"mine")
    r = run("generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", out, "--attention-maps", *FAST)
    assert r.exit_code == 1 and "a_attention.png: exists and is not a macs generate attention map" in r.output
    assert (out / "a_attention.png").read_bytes() == b"mine" and not (out / "a.png").exists()
    # seeds: image k uses seed + k, which must stay a valid seed
    r = run("generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", tmp_path / "s", "--seed",
            2 ** 63 - 1, "-n", 2, *FAST)
    assert r.exit_code == 2 and "--seed" in r.output
    # bad --dtype and a .npz given as embeddings: one line each
    r = run("generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", tmp_path / "d.png", "--dtype", "fp8",
            *FAST)
    assert r.exit_code == 2 and "--dtype fp8" in r.output
    np.savez(tmp_path / "z.npz", x=np.zeros((4, 512)))
    r = run("generate", "-e", tmp_path / "z.npz", "--adapter", adapter_file, "-o", tmp_path / "z.png", *FAST)
    assert r.exit_code == 1 and ".npz archive" in r.output and "Traceback" not in r.output


def test_attention_titles_follow_the_ranking(emb_files, tmp_path):
    """`macs embed` output ranked inside generate: each stem keeps its own label."""
    from macs_cli.generation.files import labels_of as _labels_of, load_embeddings as _load_embeddings

    e = gf.random_embeddings(3, seed=5)
    mix = e[2] * 2 + e[1]                                  # stem 2 most like the mixture, then 1, then 0
    labels = [[{"label": f"STEM{i}", "score": 1.0, "cosine": 0.1}] for i in range(3)]
    f = gf.write_embeddings(tmp_path / "emb.npy", e, {"mixture_embedding": mix.tolist(), "labels": labels})
    _, meta, record = _load_embeddings(f)
    assert record["order"] == [2, 1, 0]
    assert _labels_of(meta, 3) == ["#1 STEM2", "#2 STEM1", "#3 STEM0"]
    assert _labels_of({"labels": "dog"}, 2) == ["#1", "#2"]           # a hand-edited sidecar: no crash


def test_generate_goes_on_past_a_bad_input_skips_existing_and_shards(adapter_file, emb_files, tmp_path, monkeypatch):
    """generate runs on the batch runner: a bad input fails alone, --skip-existing keeps an input's
    images (and loads no model when nothing is left to do), launched processes share the inputs."""
    out, bad = tmp_path / "out", tmp_path / "bad.npy"
    bad.write_bytes(b"not an array")
    r = run("generate", "-e", emb_files["a"], "-e", bad, "-e", emb_files["batch"], "--adapter", adapter_file,
            "-o", out, "--seed", 1, *FAST)
    said = " ".join(r.output.split())
    assert r.exit_code == 1 and "error:" in said and "bad.npy: not a .npy array" in said, said
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "batch_000.png", "batch_001.png"]
    first = pixels(out / "a.png")
    # nothing left to do: every image kept, listed on stdout, and the (missing) backbone never loaded
    r = run("generate", "-e", emb_files["a"], "-e", emb_files["batch"], "--adapter", adapter_file, "-o", out,
            "--skip-existing", "--json", "--sd-model", tmp_path / "no-such-backbone", *FAST)
    assert r.exit_code == 0, r.output
    kept = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [(Path(k["path"]).name, k["skipped"]) for k in kept] == [
        ("a.png", True), ("batch_000.png", True), ("batch_001.png", True)]
    r = run("generate", "-e", emb_files["a"], "--adapter", adapter_file, "-o", out, "--skip-existing", "--force",
            *FAST)
    assert r.exit_code == 2 and "contradict" in r.output
    # an input with one image missing is made again; the other is kept as it is
    (out / "batch_001.png").unlink()
    before = (out / "a.json").read_text()
    r = run("generate", "-e", emb_files["a"], "-e", emb_files["batch"], "--adapter", adapter_file, "-o", out,
            "--skip-existing", "--json", "--seed", 1, *FAST)
    assert r.exit_code == 0, r.output
    recs = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [(Path(k["path"]).name, k["skipped"]) for k in recs] == [
        ("a.png", True), ("batch_000.png", False), ("batch_001.png", False)]
    assert (out / "a.json").read_text() == before and np.array_equal(pixels(out / "a.png"), first)
    # two processes: every 2nd input from RANK on, counted over the inputs given
    shards = tmp_path / "shards"
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, expect in (("0", ["a.png", "b.png"]), ("1", ["a.png", "b.png", "six.png"])):
        monkeypatch.setenv("RANK", rank)
        r = run("generate", "-e", emb_files["a"], "-e", emb_files["six"], "-e", emb_files["b"], "--adapter",
                adapter_file, "-o", shards, "--top-k", 4, *FAST)
        assert r.exit_code == 0, r.output
        assert sorted(p.name for p in shards.glob("*.png")) == expect


def test_generate_interpolation_skip_existing(adapter_file, emb_files, tmp_path):
    out = tmp_path / "path"
    args = ["generate", "--interpolate", emb_files["a"], emb_files["b"], "--frames", 2, "--adapter", adapter_file,
            "-o", out, *FAST]
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("*.png")) == ["contact_sheet.png", "frame_000.png", "frame_001.png"]
    r = run(*args)
    assert r.exit_code == 1 and "already exists" in r.output
    r = run(*args, "--skip-existing", "--sd-model", tmp_path / "no-such-backbone")
    assert r.exit_code == 0 and [Path(p).name for p in r.stdout.split()] == ["frame_000.png", "frame_001.png"]


def test_generate_audio_inputs_fail_alone(adapter_file, tiny_model_path, tmp_path):
    clap = tmp_path / "tiny-clap.pt"
    torch.save(cf.laion_training_checkpoint(cf.make_laion_net()), clap)
    good, broken = tmp_path / "mix.wav", tmp_path / "broken.wav"
    sf.write(good, tone_mix(1.5, 16000, seed=3), 16000)
    broken.write_bytes(b"RIFF but not audio")
    r = run("generate", "--audio", good, "--audio", tmp_path / "gone.wav", "--audio", broken, "--separator",
            tiny_model_path, "--clap", clap, "--adapter", adapter_file, "-o", tmp_path / "out", "--seed", 0,
            *[a for a in FAST if a != "-q"])
    said = " ".join(r.output.split())
    assert r.exit_code == 1 and "gone.wav: no such audio file" in said and "broken.wav" in said, said
    assert "1 image(s) written" in said and "2 failed" in said and "Traceback" not in said
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mix.json", "mix.png"]
    # a separator that cannot load is the run's one error, not one per input
    r = run("generate", "--audio", good, "--audio", broken, "--separator", tmp_path / "none.safetensors", "--clap",
            clap, "--adapter", adapter_file, "-o", tmp_path / "out2", *FAST)
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert r.exit_code != 0 and len(lines) == 1 and "none.safetensors" in lines[0], r.output
