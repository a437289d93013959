"""The public API in memory: separate(waveform) equals the file path's stems, and the examples of
docs/api.md run as written (tiny local CLAP and Stable Diffusion stand in for the real ones)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import macs_cli
from macs_cli.separation.api import SeparateOptions, separate_file
from macs_cli.weights.separator import load_separator

from . import clap_fixtures as cf
from . import gen_fixtures as gf
from .conftest import tone_mix
from .gen_fixtures import tiny_sd  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("options", [{}, {"num_sources": 2, "sample_rate": "input"},
                                     {"num_sources": "auto", "sample_rate": 44100, "drop_silent": True}])
def test_separate_waveform_equals_the_file_path(tiny_model_path, tmp_path, options):
    model = load_separator(tiny_model_path)
    x = tone_mix(3.3, 22050, channels=2, seed=4)
    sf.write(tmp_path / "mix.wav", x, 22050, subtype="FLOAT")
    manifest = separate_file(model, tmp_path / "mix.wav", tmp_path / "out", SeparateOptions(**options))
    stems = macs_cli.separate(x.T, 22050, model, num_sources=options.get("num_sources"),
                              output_rate=options.get("sample_rate", "model"),
                              drop_silent=options.get("drop_silent", False))
    files = [sf.read(tmp_path / "out" / "mix" / s["file"], dtype="float32")[0] for s in manifest["stems"]]
    assert len(files) == len(stems) > 0
    assert all(np.array_equal(f, a) for f, a in zip(files, stems.audio))
    assert stems.sample_rate == manifest["sample_rate"]
    assert stems.activity == [s["activity"] for s in manifest["stems"]]
    assert stems.grouping == manifest["grouping"]
    assert manifest["source"].endswith("mix.wav") and stems.manifest["source"] is None


def test_separate_rejects_bad_waveforms(tiny_model_path):
    from macs_cli.errors import AudioError

    model = load_separator(tiny_model_path)
    for bad, rate in [(np.zeros((2, 2, 2)), 16000), (np.array([0.0, np.nan] * 800), 16000),
                      (np.zeros(1600), 12.5), (np.zeros(0), 16000)]:
        with pytest.raises(AudioError):
            macs_cli.separate(bad, rate, model)


def test_import_macs_cli_stays_light():
    code = "import sys, macs_cli; macs_cli.__version__; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert callable(macs_cli.separate) and "generate" in dir(macs_cli)
    with pytest.raises(AttributeError):
        macs_cli.no_such_thing  # noqa: B018


@pytest.fixture
def stand_ins(tmp_path_factory, tiny_sd, monkeypatch):  # noqa: F811
    """load_clap and load_generator of macs_cli.api return tiny local models."""
    from macs_cli.clap.loading import load_clap
    from macs_cli.generation import AdapterConfig, MacsGenerator
    from macs_cli.generation.backbone import load_backbone
    from macs_cli.generation.checkpoints import save_adapter

    d = tmp_path_factory.mktemp("api")
    tok = cf.make_tokenizer(d / "tok")
    torch.save(cf.laion_training_checkpoint(cf.make_laion_net()), d / "clap.pt")
    torch.manual_seed(0)
    gen = MacsGenerator.from_pipeline(load_backbone(str(tiny_sd)),
                                      config=AdapterConfig(num_tokens=4, cross_attention_dim=gf.CROSS_DIM,
                                                           hidden_dim=64))
    adapter = save_adapter(gen.adapter, d / "adapter.safetensors", sd_model=str(tiny_sd))
    monkeypatch.setattr("macs_cli.api.load_clap",
                        lambda name="default", device="cpu", **kw: load_clap(d / "clap.pt", device, tokenizer=tok))
    monkeypatch.setattr("macs_cli.api.load_generator",
                        lambda adapter_spec, **kw: MacsGenerator.load(str(tiny_sd), adapter=adapter))
    return d


def test_docs_api_examples_run(stand_ins, tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
    assert len(blocks) >= 4
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {}
    try:
        for code in blocks:
            code = code.replace("steps=20", "steps=2")   # a tiny backbone: two steps show the same path
            exec(compile(code, "docs/api.md", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "image.png").is_file()
    assert "Stems(6 x 160000 samples at 16000 Hz)" in capsys.readouterr().out
    assert namespace["ranked"].meta["order"][:3] == list(np.argsort(-np.array(namespace["ranked"].meta["scores"]),
                                                                   kind="stable")[:3])


@pytest.mark.parametrize("merged", [False, True])
def test_drop_silent_at_the_inputs_rate_drops_and_the_kept_stems_sum_to_the_input(monkeypatch, tmp_path, merged):
    """At ``sample_rate="input"`` the band above 8 kHz is shared among the outputs; a stem silent
    at the model's rate must still be dropped (it used to pick up its share and pass the bar),
    and the kept stems, with that band, sum to the input. ``merged``: through the rendering that
    --num-sources (and auto) uses, with the model's own number of outputs."""
    import macs_cli.separation.api as A
    from macs_cli.separation.model import Separator

    from .conftest import tiny_config

    def mixture_in_stem_0(model, precision="auto"):
        def run(batch):
            out = np.zeros((batch.shape[0], model.config.num_sources, batch.shape[1]), np.float32)
            out[:, 0] = batch
            return out
        run.precision = "fp32"
        return run

    monkeypatch.setattr(A, "model_window_fn", mixture_in_stem_0)
    model = Separator(tiny_config()).eval()
    t = np.arange(44100 * 3) / 44100
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32)
    extra = {"stem_mode": "clean", "num_sources": model.config.num_sources} if merged else {"stem_mode": "raw"}
    s = A.separate_waveform(model, x, 44100, A.SeparateOptions(sample_rate="input", drop_silent=True, **extra))
    assert len(s.manifest["stems"]) == 1 and len(s.manifest["dropped"]) == model.config.num_sources - 1
    assert np.abs(s.audio.sum(0) - x).max() < 1e-5
    assert all(e["rms_db"] < -100 for e in s.manifest["dropped"])   # what dropped them: the model rate
    kept = s.manifest["stems"][0]
    assert kept["rms"] == pytest.approx(float(np.sqrt(np.mean(np.square(s.audio[0], dtype=np.float64)))), rel=1e-4)
    sf.write(tmp_path / "hf.wav", x, 44100)   # the same through files (FolderStore)
    m = A.separate_file(model, tmp_path / "hf.wav", tmp_path / "out",
                        A.SeparateOptions(sample_rate="input", drop_silent=True, **extra))
    files = sorted(p.name for p in (tmp_path / "out" / "hf").iterdir())
    assert files == ["manifest.json", "stem_00.wav"] and len(m["stems"]) == 1
    y, _ = sf.read(tmp_path / "out" / "hf" / "stem_00.wav", dtype="float32")
    assert np.abs(y - sf.read(tmp_path / "hf.wav", dtype="float32")[0]).max() < 1e-5
