from pathlib import Path

import pytest
import torch

from macs_cli.errors import ConfigError, ModelError
from macs_cli.separation.config import SeparatorConfig, official_config
from macs_cli.separation.model import Separator, count_parameters, mixture_consistency
from macs_cli.weights.separator import load_separator, save_separator

from .conftest import tiny_config

KEYS = Path(__file__).parent / "data" / "official_separator_keys.txt"


def official_layout() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in KEYS.read_text().splitlines():
        name, shape = line.split(" ", 1)
        out[name] = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
    return out


def test_official_architecture_matches_checkpoint_layout():
    model = Separator(official_config())
    ours = {"model.unet." + k[len("unet."):]: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_layout()
    assert count_parameters(model) == pytest.approx(58.1e6, rel=0.001)


def test_stems_sum_to_mixture_and_shapes():
    model = Separator(tiny_config()).eval()
    x = torch.randn(3, model.config.window_samples)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (3, 4, model.config.window_samples)
    assert torch.allclose(y.sum(1), x, atol=1e-5)


def test_mixture_consistency_projection():
    stems = torch.randn(2, 5, 100)
    mix = torch.randn(2, 100)
    out = mixture_consistency(stems, mix)
    assert torch.allclose(out.sum(1), mix, atol=1e-5)
    # the correction is shared equally
    d = out - stems
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-6)


def test_safetensors_roundtrip(tmp_path):
    torch.manual_seed(3)
    model = Separator(tiny_config()).eval()
    path = save_separator(model, tmp_path / "m.safetensors")
    assert path.with_suffix(".json").exists()
    loaded = load_separator(path)
    x = torch.randn(1, model.config.window_samples)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)
    # config also travels inside the file's metadata
    path.with_suffix(".json").unlink()
    assert load_separator(path).config == model.config
    # a folder holding it resolves too
    assert load_separator(tmp_path).config.channels == model.config.channels


def test_official_checkpoint_layout_loads_with_weights_only(tmp_path):
    torch.manual_seed(4)
    cfg = tiny_config(input_transform="power")
    model = Separator(cfg).eval()
    state = {"model.unet." + k[len("unet."):]: v for k, v in model.state_dict().items()}
    state["model.tau2"] = torch.tensor(2.65)
    state["unperm"] = torch.zeros(15, 2, 4)
    state["clap.some.weight"] = torch.zeros(3)
    state["model.clap.some.weight"] = torch.zeros(3)
    path = tmp_path / "separator_FSD50K_full.pt"
    torch.save(state, path)
    loaded = load_separator(path)
    assert loaded.config.num_sources == 4 and loaded.config.channels == 4 and loaded.config.depth == 3
    assert loaded.config.input_transform == "power"
    x = torch.randn(1, cfg.window_samples)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)
    # nested under 'state_dict' as Lightning writes it
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "nested.pt")
    assert load_separator(tmp_path / "nested.pt").config.channels == 4


def test_official_full_size_config_inferred(tmp_path):
    model = Separator(official_config())
    state = {"model.unet." + k[len("unet."):]: v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "o.pt")
    cfg = load_separator(tmp_path / "o.pt").config
    assert (cfg.num_sources, cfg.channels, cfg.depth, cfg.n_fft, cfg.hop_length, cfg.frames) == \
        (6, 64, 5, 400, 200, 641)


def test_wrong_shape_checkpoint_is_a_clear_error(tmp_path):
    model = Separator(tiny_config())
    save_separator(model, tmp_path / "m.safetensors")
    bad = SeparatorConfig(**{**model.config.to_dict(), "channels": 8})
    bad.save(tmp_path / "m.json")
    with pytest.raises(ModelError, match="shape mismatch"):
        load_separator(tmp_path / "m.safetensors")


def test_garbage_checkpoints(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable safetensors"):
        load_separator(tmp_path / "junk.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ModelError, match="cannot load checkpoint safely"):
        load_separator(tmp_path / "junk.pt")
    with pytest.raises(ModelError, match="no such checkpoint"):
        load_separator(tmp_path / "missing.safetensors")
    (tmp_path / "song.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")   # --model given an audio file
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        load_separator(tmp_path / "song.wav")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="safely"):
        load_separator(tmp_path / "evil.pt")


def test_official_missing_offline_gives_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("MACS_OFFICIAL_SEPARATOR", raising=False)
    with pytest.raises(ModelError, match="hf download alxzzz/MACS"):
        load_separator("official")


@pytest.mark.parametrize("bad", [dict(num_sources=1), dict(channels=0), dict(dropout=1.5),
                                 dict(input_transform="mel"), dict(window_seconds=0.0),
                                 dict(hop_length=1000)])
def test_bad_config_values(bad):
    with pytest.raises(ConfigError):
        tiny_config(**bad)
    with pytest.raises(ConfigError, match="unknown key"):
        SeparatorConfig.from_dict({"nope": 1})


def test_official_size_flops_per_window():
    from macs_cli.separation.model import conv_flops

    model = Separator(official_config()).eval()
    x = torch.randn(1, model.config.window_samples)
    feats = model.features(model.stft(x))
    assert conv_flops(model.unet, feats) / 1e9 == pytest.approx(158, rel=0.01)


def test_official_resolves_from_the_hugging_face_cache(monkeypatch, tmp_path):
    """`--model official` finds separator_FSD50K_full.pt in the HF cache layout, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("MACS_OFFICIAL_SEPARATOR", raising=False)
    repo = tmp_path / "hf" / "hub" / "models--alxzzz--MACS"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    model = Separator(tiny_config(input_transform="power")).eval()
    torch.save({"model.unet." + k[len("unet."):]: v for k, v in model.state_dict().items()},
               snap / "separator_FSD50K_full.pt")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"), raising=False)
    loaded = load_separator("official")
    assert loaded.config.channels == 4 and loaded.source.endswith("separator_FSD50K_full.pt")
