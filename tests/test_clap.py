"""CLAP: preprocessing, the torch log-mel front end, both encoder backends and every loading error.

All models are tiny and randomly initialised, built locally by ``tests/clap_fixtures.py``;
nothing touches the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from macs_cli.clap import (CLIP_SAMPLES, HFClapEncoder, LaionClapEncoder, chunk_10s, load_clap, normalize,
                           repeat_pad, resample_to_48k, to_clap_input)
from macs_cli.clap.encoders import check_tokenizer
from macs_cli.clap.melspec import ClapLogMel
from macs_cli.clap.preprocess import resampled_length
from macs_cli.errors import AudioError, ModelError

from . import clap_fixtures as cf

N = CLIP_SAMPLES
REPO_ROOT = Path(__file__).resolve().parents[1]


def noise(seconds: float, rate: int, batch: int | None = 2, seed: int = 0, scale: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (int(seconds * rate),) if batch is None else (batch, int(seconds * rate))
    return scale * torch.randn(shape, generator=g)


# -- fixtures: tiny models saved the way users' files are ------------------------------------------
@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clap")


@pytest.fixture(scope="module")
def tok_dir(clap_dir) -> Path:
    return cf.make_tokenizer(clap_dir / "tokenizer")


@pytest.fixture(scope="module")
def laion_net():
    return cf.make_laion_net()


@pytest.fixture(scope="module")
def laion_ckpt(clap_dir, laion_net) -> Path:
    path = clap_dir / "tiny-clap.pt"
    torch.save(cf.laion_training_checkpoint(laion_net), path)
    return path


@pytest.fixture(scope="module")
def laion(laion_ckpt, tok_dir) -> LaionClapEncoder:
    return load_clap(laion_ckpt, tokenizer=tok_dir)


@pytest.fixture(scope="module")
def hf_dir(clap_dir, tok_dir) -> Path:
    return cf.make_hf_clap(clap_dir / "hf-clap", tok_dir)


@pytest.fixture(scope="module")
def hf(hf_dir) -> HFClapEncoder:
    return load_clap(hf_dir)


@pytest.fixture(params=["laion", "hf"])
def encoder(request):
    return request.getfixturevalue(request.param)


# -- preprocessing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [16_000, 22_050, 44_100, 48_000])
def test_resample_lengths(rate):
    x = noise(1.0, rate)
    assert resample_to_48k(x, rate).shape == (2, 48_000)
    assert to_clap_input(x, rate).shape == (2, N)
    assert to_clap_input(x[0], rate).shape == (1, N)  # 1-D input: a batch of one
    assert to_clap_input(x, rate).dtype == torch.float32
    odd = noise(1.0, rate)[:, : rate - 7]
    assert resample_to_48k(odd, rate).shape[-1] == resampled_length(rate - 7, rate)


def test_repeat_pad_is_claps_repeatpad():
    x = noise(100_000 / 48_000, 48_000)  # 100,000 samples: 4 whole copies fit in 480,000
    out = repeat_pad(x)
    assert torch.equal(out[:, :400_000], x.repeat(1, 4))
    assert torch.equal(out[:, 400_000:], torch.zeros(2, 80_000))  # laion-clap: tile, then zero-pad
    assert torch.equal(repeat_pad(x, mode="repeat"), x.repeat(1, 5)[:, :N])  # tile, then cut
    assert torch.equal(repeat_pad(x, mode="pad")[:, 100_000:], torch.zeros(2, 380_000))
    exact = noise(10.0, 48_000)
    assert torch.equal(to_clap_input(exact, 48_000), exact)


def test_to_clap_input_tiles_the_resampled_clip():
    x = noise(3.0, 16_000)
    x48 = resample_to_48k(x, 16_000)
    assert x48.shape[-1] == 144_000
    out = to_clap_input(x, 16_000)
    assert torch.equal(out[:, :432_000], x48.repeat(1, 3))
    assert torch.equal(out[:, 432_000:], torch.zeros(2, N - 432_000))


def test_chunk_10s_long_audio():
    x = noise(25.0, 48_000, batch=None)
    chunks, mask = chunk_10s(x, 48_000)
    assert chunks.shape == (1, 3, N) and mask.tolist() == [[True, True, True]]
    assert torch.equal(chunks[0, 0], x[:N]) and torch.equal(chunks[0, 1], x[N:2 * N])
    assert torch.equal(chunks[0, 2], x[-N:])  # the tail chunk is aligned with the clip's end
    chunks, mask = chunk_10s(noise(20.0, 48_000), 48_000)
    assert chunks.shape == (2, 2, N) and mask.all()
    short = noise(4.0, 16_000, batch=None)
    chunks, mask = chunk_10s(short, 16_000)
    assert chunks.shape == (1, 1, N) and torch.equal(chunks[0], to_clap_input(short, 16_000))


def test_chunk_10s_batch_with_lengths():
    x = noise(25.0, 16_000)
    x[0, 5 * 16_000:] = 0  # row 0 is a 5 s clip padded into the batch
    chunks, mask = chunk_10s(x, 16_000, lengths=[5 * 16_000, 25 * 16_000])
    assert chunks.shape == (2, 3, N)
    assert mask.tolist() == [[True, False, False], [True, True, True]]
    assert torch.allclose(chunks[0, 0], to_clap_input(x[0, :5 * 16_000], 16_000)[0], atol=1e-6)
    assert torch.equal(chunks[0, 1:], torch.zeros(2, N))
    with pytest.raises(ValueError):
        chunk_10s(x, 16_000, lengths=[1, 2, 3])


def test_silence_and_gradients_are_finite():
    x = torch.zeros(2, 16_000, requires_grad=True)
    y = to_clap_input(x, 16_000)
    assert torch.equal(y, torch.zeros(2, N))
    mel = ClapLogMel()(y)
    assert torch.isfinite(mel).all() and mel.max() == -100.0
    mel.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_preprocess_errors():
    with pytest.raises(ValueError, match="chunk_10s"):
        to_clap_input(noise(10.5, 16_000), 16_000)
    with pytest.raises(AudioError):
        to_clap_input(torch.zeros(2, 0), 16_000)
    with pytest.raises(ValueError):
        to_clap_input(noise(1.0, 16_000), 0)
    with pytest.raises(ValueError):
        to_clap_input(torch.zeros(1, 2, 100), 16_000)
    with pytest.raises(ValueError):
        repeat_pad(noise(1.0, 48_000), mode="mirror")


# -- the torch log-mel front end --------------------------------------------------------------------
def test_logmel_matches_clap_feature_extractor():
    from transformers import ClapFeatureExtractor

    fe = ClapFeatureExtractor(frequency_min=50, frequency_max=14_000, truncation="rand_trunc",
                              padding="repeatpad")
    front = ClapLogMel.from_feature_extractor(fe)
    t = torch.arange(N) / 48_000
    quiet_tone = 1e-3 * torch.sin(2 * np.pi * 440 * t)  # reaches down to the low-dB range
    batch = torch.stack([noise(10.0, 48_000, batch=None), quiet_tone])
    ref = fe(list(batch.numpy()), sampling_rate=48_000, return_tensors="pt")["input_features"]
    ours = front(batch)
    assert ours.shape == ref.shape == (2, 1, 1001, 64)
    assert (ours - ref).abs().max() < 1e-3  # dB
    short = noise(2.5, 48_000, batch=None).numpy()  # the extractor's own repeat-padding vs ours
    ref = fe([short], sampling_rate=48_000, return_tensors="pt")["input_features"]
    assert (front(to_clap_input(torch.from_numpy(short), 48_000)) - ref).abs().max() < 1e-3


# -- both backends ------------------------------------------------------------------------------------
def test_embed_audio_shape_and_determinism(encoder):
    w = to_clap_input(noise(3.0, 16_000), 16_000)
    a, b = encoder.embed_audio(w), encoder.embed_audio(w.clone())
    assert a.shape == (2, 512) and encoder.dim == 512 and encoder.sample_rate == 48_000
    assert torch.equal(a, b)
    assert torch.isfinite(a).all() and not torch.allclose(a[0], a[1])
    assert torch.allclose(normalize(a).norm(dim=-1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="to_clap_input"):
        encoder.embed_audio(noise(1.0, 48_000))


def test_embed_text(encoder):
    texts = ["The sound of dog barking", "The sound of Noise", "Noise"]
    a, b = encoder.embed_text(texts), encoder.embed_text(texts)
    assert a.shape == (3, 512) and torch.equal(a, b) and torch.isfinite(a).all()
    assert not torch.allclose(a[0], a[1])
    assert torch.allclose(encoder.embed_text("Noise")[0], a[2], atol=1e-5)
    assert encoder.embed_text([]).shape == (0, 512)


def test_gradient_reaches_the_waveform(encoder):
    x = noise(2.0, 16_000).requires_grad_(True)
    emb = normalize(encoder.embed_audio(to_clap_input(x, 16_000)))
    (emb * torch.linspace(-1, 1, 512)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in encoder.model.parameters())  # CLAP itself stays frozen


def test_embed_waveforms_averages_chunks(encoder):
    clips = [noise(2.5, 16_000, batch=None, seed=1).numpy(), noise(23.0, 16_000, batch=None, seed=2),
             noise(10.0, 16_000, batch=None, seed=3).double().numpy()]
    out = encoder.embed_waveforms(clips, 16_000, batch_size=2)
    assert out.shape == (3, 512) and out.dtype == torch.float32 and out.device.type == "cpu"
    with torch.no_grad():
        first = encoder.embed_audio(to_clap_input(torch.from_numpy(clips[0]), 16_000))[0]
        chunks, mask = chunk_10s(clips[1], 16_000)
        long = encoder.embed_audio(chunks[0]).mean(0)
    assert mask.shape == (1, 3)
    assert torch.allclose(out[0], first, atol=1e-5) and torch.allclose(out[1], long, atol=1e-5)
    assert torch.allclose(encoder.embed_waveforms(clips, 16_000, batch_size=8), out, atol=1e-5)
    unit = encoder.embed_waveforms(clips, 16_000, normalize=True)
    assert torch.allclose(unit.norm(dim=-1), torch.ones(3), atol=1e-5)
    with pytest.raises(AudioError, match="non-finite"):
        encoder.embed_waveforms([np.full(1000, np.nan, dtype=np.float32)], 16_000)


# -- laion-clap specifics -------------------------------------------------------------------------
def test_laion_checkpoint_round_trip(laion, laion_net, tok_dir):
    assert isinstance(laion, LaionClapEncoder) and "module." in laion.source
    w = to_clap_input(noise(1.0, 16_000), 16_000)
    with torch.no_grad():
        assert torch.equal(laion.embed_audio(w), laion_net.audio_embedding(w))
        tok = laion.tokenizer(["Noise"], padding="max_length", truncation=True, max_length=77,
                              return_tensors="pt")
        direct = laion_net.text_embedding(tok["input_ids"], tok["attention_mask"])
    assert torch.equal(laion.embed_text(["Noise"]), direct)


def test_official_separator_checkpoint_embeds_clap(clap_dir, laion, laion_net, tok_dir):
    path = clap_dir / "separator_FSD50K_full.pt"
    torch.save(cf.official_separator_checkpoint(laion_net), path)
    enc = load_clap(path, tokenizer=tok_dir)
    assert "clap.model." in enc.source
    w = to_clap_input(noise(1.0, 16_000), 16_000)
    assert torch.equal(enc.embed_audio(w), laion.embed_audio(w))
    from safetensors.torch import save_file  # a bare laion-layout state dict as safetensors

    save_file({k: v.contiguous() for k, v in laion_net.state_dict().items()}, str(clap_dir / "clap.safetensors"))
    enc = load_clap(clap_dir / "clap.safetensors", tokenizer=tok_dir)
    assert torch.equal(enc.embed_audio(w), laion.embed_audio(w))


class NotAllowed:  # pickled into a checkpoint: weights_only loading must refuse it
    pass


def test_laion_checkpoint_errors(tmp_path, laion_net, tok_dir):
    def err(spec, **kw) -> str:
        with pytest.raises(ModelError) as info:
            load_clap(spec, tokenizer=tok_dir, **kw)
        msg = str(info.value)
        assert "\n" not in msg
        return msg

    assert "no such" in err(tmp_path / "missing.pt")
    # deterministic garbage (random bytes start with a pickle's 0x80 one time in 256)
    (tmp_path / "garbage.pt").write_bytes(bytes(range(1, 256)) * 16)
    assert "not a PyTorch checkpoint" in err(tmp_path / "garbage.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "not a PyTorch checkpoint" in err(tmp_path / "empty.pt")
    (tmp_path / "garbage.safetensors").write_bytes(os.urandom(64))
    assert "safetensors" in err(tmp_path / "garbage.safetensors")
    torch.save({"state_dict": laion_net.state_dict(), "extra": NotAllowed()}, tmp_path / "unsafe.pt")
    msg = err(tmp_path / "unsafe.pt")
    assert "cannot load checkpoint safely" in msg and "NotAllowed" in msg
    torch.save({"model.unet.in_conv.0.weight": torch.zeros(6, 1, 3, 3)}, tmp_path / "sep_only.pt")
    assert "no laion-clap CLAP weights" in err(tmp_path / "sep_only.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert "state dict" in err(tmp_path / "list.pt")
    state = dict(laion_net.state_dict())
    torch.save({**state, "audio_branch.fusion_model.local_att.0.weight": torch.zeros(1)}, tmp_path / "fusion.pt")
    assert "fusion" in err(tmp_path / "fusion.pt")
    state.pop("audio_projection.2.bias")
    torch.save(state, tmp_path / "partial.pt")
    assert "missing key" in err(tmp_path / "partial.pt")
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a CLAP checkpoint" in err(tmp_path / "notes.txt")
    (tmp_path / "folder").mkdir()
    assert "no config.json" in err(tmp_path / "folder")


def test_missing_roberta_is_a_clear_error(laion_ckpt, tmp_path):
    enc = load_clap(laion_ckpt, cache_dir=tmp_path / "empty-hf-cache")  # tokenizer: roberta-base
    assert enc.embed_audio(to_clap_input(noise(1.0, 16_000), 16_000)).shape == (2, 512)  # audio needs none
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        enc.embed_text(["The sound of dog"])
    assert time.monotonic() - start < 5
    msg = str(info.value)
    assert "roberta-base" in msg and "hf download roberta-base" in msg and "\n" not in msg
    with pytest.raises(ModelError, match="roberta-base"):  # or at once, when text will be needed
        load_clap(laion_ckpt, cache_dir=tmp_path / "empty-hf-cache", require_text=True)


def test_placeholder_tokenizer_is_detected(laion_ckpt, hf, tmp_path):
    from transformers import RobertaTokenizer

    placeholder = RobertaTokenizer()  # what transformers 5 returns offline when the files are missing
    assert len(placeholder) == 5
    with pytest.raises(ModelError, match="only 5 tokens"):
        load_clap(laion_ckpt, tokenizer=placeholder)
    (tmp_path / "tok").mkdir()  # a tokenizer folder without vocab/merges gives the same placeholder
    enc = load_clap(laion_ckpt, tokenizer=tmp_path / "tok")
    with pytest.raises(ModelError, match="only 5 tokens"):
        enc.embed_text(["Noise"])
    with pytest.raises(ModelError, match="only 5 tokens"):
        HFClapEncoder(hf.model, placeholder)
    with pytest.raises(ModelError, match="more than"):
        check_tokenizer(hf.tokenizer, 100, "tiny")


# -- transformers' ClapModel specifics ----------------------------------------------------------
def test_hf_folder_and_prefix_load_the_same(hf, hf_dir):
    assert isinstance(hf, HFClapEncoder)
    assert hf.frontend.f_min == 50.0 and hf.frontend.f_max == 14_000.0  # read from the saved extractor
    again = load_clap(f"hf:{hf_dir}")
    w = to_clap_input(noise(1.0, 16_000), 16_000)
    assert torch.equal(again.embed_audio(w), hf.embed_audio(w))


def test_hf_matches_transformers_own_pipeline(hf, hf_dir):
    from transformers import ClapFeatureExtractor

    fe = ClapFeatureExtractor.from_pretrained(str(hf_dir))
    w = to_clap_input(noise(4.0, 16_000), 16_000)
    feats = fe(list(w.numpy()), sampling_rate=48_000, return_tensors="pt")
    tok = hf.tokenizer(["Noise", "The sound of dog"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref_audio = hf.model.get_audio_features(**feats).pooler_output  # normalised by transformers
        ref_text = hf.model.get_text_features(**tok).pooler_output
    assert torch.allclose(normalize(hf.embed_audio(w)), ref_audio, atol=1e-5)
    assert torch.allclose(normalize(hf.embed_text(["Noise", "The sound of dog"])), ref_text, atol=1e-5)


def test_hf_errors(tmp_path, hf_dir):
    def err(spec) -> str:
        with pytest.raises(ModelError) as info:
            load_clap(spec, cache_dir=tmp_path / "empty-hf-cache")
        assert "\n" not in str(info.value)
        return str(info.value)

    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert "not a CLAP model" in err(tmp_path / "bert")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert "unreadable config.json" in err(tmp_path / "broken")
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text((hf_dir / "config.json").read_text())
    assert "cannot load the CLAP model" in err(tmp_path / "no-weights")
    msg = err("hf:someone/not-cached-clap")
    assert "hf download someone/not-cached-clap" in msg and "--clap PATH" in msg
    assert "no such folder" in err(f"hf:{tmp_path / 'nowhere'}")
    fused = SimpleNamespace(config=SimpleNamespace(audio_config=SimpleNamespace(enable_fusion=True)))
    with pytest.raises(ModelError, match="fusion"):
        HFClapEncoder(fused, None)


# -- failing fast with nothing cached ------------------------------------------------------------------
def test_missing_weights_fail_fast_offline(tmp_path):
    """With an empty HF_HOME and no network, the default specs fail in seconds with one clear line."""
    script = textwrap.dedent("""
        import json, time
        from macs_cli.clap import load_clap
        from macs_cli.errors import ModelError
        out = {}
        for spec in (None, "hf"):
            start = time.monotonic()
            try:
                load_clap(spec)
                out[str(spec)] = ["loaded", 0.0]
            except ModelError as exc:
                out[str(spec)] = [str(exc), time.monotonic() - start]
        print(json.dumps(out))
    """)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    default_msg, default_s = out["None"]
    hf_msg, hf_s = out["hf"]
    assert default_s < 10 and hf_s < 10
    assert "hf download lukewys/laion_clap 630k-audioset-best.pt" in default_msg and "--clap PATH" in default_msg
    assert "hf download laion/clap-htsat-unfused" in hf_msg and "--clap PATH" in hf_msg
