"""Fidelity of `generate` to the official MACS inference (issue 10, items 3 and 4): the stem order
given to the adapter belongs to the adapter, and a clip shorter than the separator's window is
padded to one window before separation for official adapters. Tiny random models, no network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from macs_cli.generation import (AdapterConfig, GenerationSettings, MacsGenerator, load_backbone, read_adapter_file,
                                 resolve_adapter, save_adapter)

from . import clap_fixtures as cf
from . import gen_fixtures as gf
from .gen_fixtures import tiny_sd  # noqa: F401  (a fixture)

CFG = AdapterConfig(num_tokens=4, cross_attention_dim=gf.CROSS_DIM, hidden_dim=64)
FAST = ["--steps", "2", "--height", "64", "--width", "64", "--device", "cpu", "-q", "--seed", "5"]
SETTINGS = GenerationSettings(steps=2, height=64, width=64, seed=5)


def pixels(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def adapters(tiny_sd, tmp_path_factory) -> dict:
    """One random adapter in our format (stem order not recorded: a legacy file) and as an official
    ``Landscape_mlp.pt`` + ``Landscape_unet.pt`` pair, with a generator to compare against."""
    root = tmp_path_factory.mktemp("adapters")
    pipe = load_backbone(str(tiny_sd))
    torch.manual_seed(7)
    gen = MacsGenerator.from_pipeline(pipe, config=CFG)
    with torch.no_grad():
        gen.adapter.projection.pe.mul_(40.0)            # positions matter a lot: a permutation shows
        for p in gen.adapter.processors.values():
            p.to_k_ip.weight.add_(0.3 * torch.randn_like(p.to_k_ip.weight))
            p.to_v_ip.weight.add_(0.3 * torch.randn_like(p.to_v_ip.weight))
    ours = save_adapter(gen.adapter, root / "ours" / "adapter.safetensors", sd_model=str(tiny_sd))
    official = root / "official"
    official.mkdir()
    mlp, full = gf.official_state_dicts(pipe.unet, gen.adapter)
    torch.save(mlp, official / "Landscape_mlp.pt")
    torch.save(full, official / "Landscape_unet.pt")
    return {"ours": ours, "official": official, "gen": gen}


def _embed_output(path: Path, emb: np.ndarray, mixture: np.ndarray) -> Path:
    """An embeddings file as `macs embed` writes it: stems in the separator's order + the mixture."""
    return gf.write_embeddings(path, emb, {"mixture_embedding": [float(v) for v in mixture]})


def _unranked_case(seed: int = 11) -> tuple[np.ndarray, np.ndarray, list[int]]:
    e = gf.random_embeddings(4, seed=seed)
    mixture = e[3] + 0.6 * e[1] + 0.2 * e[0]          # significance order 3, 1, 0, 2: not the identity
    from macs_cli.clap.api import rank_embeddings

    order = rank_embeddings(e, mixture).order
    assert order[0] == 3 and order != [0, 1, 2, 3]
    return e, mixture, order


def test_the_adapter_records_its_stem_order(adapters, tmp_path):
    ours = read_adapter_file(adapters["ours"])
    assert ours.stem_order == "significance"                      # train-gen's default: ranked stems
    legacy = json.loads(adapters["ours"].with_suffix(".json").read_text())
    assert legacy["stem_order"] == "significance"
    sep = save_adapter(adapters["gen"].adapter, tmp_path / "sep.safetensors", stem_order="separator")
    assert read_adapter_file(sep).stem_order == "separator"
    # a file written before the field existed: trained on ranked stems (data.rank's default)
    from safetensors.torch import load_file, save_file

    state = load_file(str(sep))
    cfg = {k: v for k, v in json.loads(sep.with_suffix(".json").read_text()).items()
           if k not in ("format", "stem_order")}
    save_file(state, str(tmp_path / "old.safetensors"), metadata={"format": "macs-adapter-v1",
                                                                  "macs_config": json.dumps(cfg)})
    assert read_adapter_file(tmp_path / "old.safetensors").stem_order == "significance"
    official = resolve_adapter(adapters["official"])
    assert (official.kind, official.stem_order, official.dataset, official.window_pad) == \
        ("official", "separator", "Landscape", "zeros")
    llp = tmp_path / "llp"
    llp.mkdir()
    for part in ("mlp", "unet"):
        (llp / f"LLP_{part}.pt").symlink_to(adapters["official"] / f"Landscape_{part}.pt")
    assert resolve_adapter(llp).window_pad == "reflect"           # dataloader/llp.py pads with 'reflect'
    assert ours.window_pad is None


def test_generate_feeds_an_official_adapter_the_separator_order(tiny_sd, adapters, tmp_path):
    e, mixture, order = _unranked_case()
    emb = _embed_output(tmp_path / "in" / "mix.npy", e, mixture)
    gen = MacsGenerator.load(str(tiny_sd), adapter=adapters["official"])
    as_separator = np.asarray(gen.generate(e, SETTINGS)[0].image)
    as_ranked = np.asarray(gen.generate(e[order], SETTINGS)[0].image)
    assert not np.array_equal(as_separator, as_ranked)          # the order changes the image

    r = gf.run("generate", "-e", emb, "--adapter", adapters["official"], "--sd-model", tiny_sd,
               "-o", tmp_path / "a.png", *FAST)
    assert r.exit_code == 0, r.output
    side = json.loads((tmp_path / "a.json").read_text())
    assert side["order"] == {"stem_order": "separator", "from": "adapter", "adapter_stem_order": "separator"}
    assert side["input"]["order"] == [0, 1, 2, 3] and side["input"]["ranked_here"] is False
    assert np.array_equal(pixels(tmp_path / "a.png"), as_separator)
    # --order overrides the adapter's
    r = gf.run("generate", "-e", emb, "--adapter", adapters["official"], "--sd-model", tiny_sd,
               "-o", tmp_path / "b.png", "--order", "significance", *FAST)
    assert r.exit_code == 0, r.output
    side = json.loads((tmp_path / "b.json").read_text())
    assert side["order"]["stem_order"] == "significance" and side["order"]["from"] == "--order"
    assert side["input"]["order"] == order
    assert np.array_equal(pixels(tmp_path / "b.png"), as_ranked)
    # `macs rank` output (significance order) goes back into the separator's order
    ranked = gf.write_embeddings(tmp_path / "ranked" / "mix.npy", e[order],
                                 {"order": order, "kept": order, "mixture_embedding": [float(v) for v in mixture]})
    r = gf.run("generate", "-e", ranked, "--adapter", adapters["official"], "--sd-model", tiny_sd,
               "-o", tmp_path / "c.png", *FAST)
    assert r.exit_code == 0, r.output
    assert np.array_equal(pixels(tmp_path / "c.png"), as_separator)
    # ... which needs every stem: a top-k file is refused with the reason
    top = gf.write_embeddings(tmp_path / "top" / "mix.npy", e[order[:2]],
                              {"order": order, "kept": order[:2], "mixture_embedding": [float(v) for v in mixture]})
    r = gf.run("generate", "-e", top, "--adapter", adapters["official"], "--sd-model", tiny_sd,
               "-o", tmp_path / "d.png", *FAST)
    assert r.exit_code == 2 and "separator's order" in r.output and not (tmp_path / "d.png").exists()
    # our adapter (trained on ranked stems) gets `macs embed` output ranked
    r = gf.run("generate", "-e", emb, "--adapter", adapters["ours"], "-o", tmp_path / "e.png", *FAST)
    assert r.exit_code == 0, r.output
    side = json.loads((tmp_path / "e.json").read_text())
    assert side["order"]["stem_order"] == "significance" and side["input"]["order"] == order


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clap") / "tiny-clap.pt"
    torch.save(cf.laion_training_checkpoint(cf.make_laion_net()), path)
    return path


def _official_by_hand(separator_path: Path, clap_path: Path, wav: np.ndarray, mode: str) -> np.ndarray:
    """The official inference on a short 16 kHz clip: pad to the window, separate the whole window,
    resample the stems with torchaudio's Resample(16000, 48000), repeat-pad to 10 s, embed."""
    import torchaudio

    from macs_cli.clap import load_clap, normalize
    from macs_cli.weights.separator import load_separator

    sep = load_separator(separator_path)
    n = sep.config.window_samples
    x = np.pad(wav, (0, n - wav.size), mode=mode).astype(np.float32)
    with torch.no_grad():
        stems = sep(torch.from_numpy(x)[None])[0]                       # (M, n): whole windows
        x48 = torchaudio.transforms.Resample(16000, 48000)(stems)
        reps = 480000 // x48.shape[1]
        clip = torch.cat([x48.repeat(1, reps), torch.zeros(x48.shape[0], 480000 - reps * x48.shape[1])], 1)
        return normalize(load_clap(clap_path).embed_audio(clip)).numpy()


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_short_clips_are_padded_to_the_window_before_separation(tiny_model_path, tiny_clap, tmp_path, mode):
    from macs_cli.generation.audio import AudioEmbedder
    from macs_cli.separation.api import SeparateOptions, separate_file
    from macs_cli.weights.separator import load_separator

    rng = np.random.default_rng(3)
    wav = (0.2 * rng.standard_normal(9600)).astype(np.float32)          # 0.6 s; the tiny model's window is 1 s
    path = tmp_path / "short.wav"
    sf.write(path, wav, 16000, subtype="FLOAT")
    want = _official_by_hand(tiny_model_path, tiny_clap, wav, "constant" if mode == "zeros" else "reflect")
    padded = AudioEmbedder(str(tiny_model_path), str(tiny_clap), "cpu", precision="fp32", window_pad=mode).embed(path)
    np.testing.assert_allclose(padded.stems, want, atol=2e-5)
    assert padded.info["padded_from_s"] == pytest.approx(0.6) and padded.info["window_pad"] == mode
    plain = AudioEmbedder(str(tiny_model_path), str(tiny_clap), "cpu", precision="fp32").embed(path)
    assert np.abs(plain.stems - want).max() > 1e-3                    # 0.6 s stems, repeat-padded: not the same
    # `separate` itself still writes stems of the input's length
    man = separate_file(load_separator(tiny_model_path), path, tmp_path / "sep", SeparateOptions(precision="fp32"))
    assert sf.info(tmp_path / "sep" / "short" / man["stems"][0]["file"]).frames == wav.size


def test_generate_audio_with_an_official_adapter_uses_the_official_separator_and_padding(
        tiny_sd, adapters, tiny_model_path, tiny_clap, tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    wav = tmp_path / "clip.wav"
    sf.write(wav, (0.2 * rng.standard_normal(8000)).astype(np.float32), 16000, subtype="FLOAT")
    # no official separator in the cache: the error says why one is wanted and how to use another
    monkeypatch.delenv("MACS_OFFICIAL_SEPARATOR", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    r = gf.run("generate", "--audio", wav, "--clap", tiny_clap, "--adapter", adapters["official"], "--sd-model",
               tiny_sd, "-o", tmp_path / "x.png", *FAST)
    assert r.exit_code == 1 and "--separator defaults to official" in r.output, r.output
    # an official-layout separator checkpoint stands in for the authors' file
    from macs_cli.weights.separator import load_separator

    state = {"model.unet." + k[len("unet."):]: v for k, v in load_separator(tiny_model_path).state_dict().items()}
    official_sep = tmp_path / "separator_FSD50K_full.pt"
    torch.save(state, official_sep)
    monkeypatch.setenv("MACS_OFFICIAL_SEPARATOR", str(official_sep))
    r = gf.run("generate", "--audio", wav, "--clap", tiny_clap, "--adapter", adapters["official"], "--sd-model",
               tiny_sd, "-o", tmp_path / "y.png", "--precision", "fp32", *FAST)
    assert r.exit_code == 0, r.output
    inp = json.loads((tmp_path / "y.json").read_text())["input"]
    assert inp["separator"] == str(official_sep) and inp["window_pad"] == "zeros"
    assert inp["padded_from_s"] == pytest.approx(0.5) and inp["stem_order"] == "separator"
    assert inp["order"] == [0, 1, 2, 3] and inp["precision"] == {"separator": "fp32", "clap": "fp32"}


def test_audio_embedder_in_memory_equals_the_files_route(tiny_model_path, tiny_clap, tmp_path):
    """`generate --audio` keeps the stems in memory: the same embeddings as `macs separate` files
    fed to `macs embed`'s reader (a 44.1 kHz stereo input: resampled and averaged the same way)."""
    from macs_cli.clap import load_clap
    from macs_cli.clap.api import embed_stems
    from macs_cli.generation.audio import AudioEmbedder
    from macs_cli.separation.api import SeparateOptions, separate_file
    from macs_cli.weights.separator import load_separator

    rng = np.random.default_rng(5)
    path = tmp_path / "mix.wav"
    sf.write(path, (0.2 * rng.standard_normal((int(2.3 * 44100), 2))).astype(np.float32), 44100)
    got = AudioEmbedder(str(tiny_model_path), str(tiny_clap), "cpu", precision="fp32").embed(path)
    man = separate_file(load_separator(tiny_model_path), path, tmp_path / "sep", SeparateOptions(precision="fp32"))
    files = [tmp_path / "sep" / "mix" / s["file"] for s in man["stems"]]
    want = embed_stems(load_clap(str(tiny_clap)), files, path)
    assert got.stems.shape == want.embeddings.shape and got.info["stems"] == len(files)
    np.testing.assert_array_equal(got.stems, want.embeddings)
    np.testing.assert_array_equal(got.mixture, want.mixture)
    assert got.info["duration_s"] == man["duration_s"]
