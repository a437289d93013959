"""``train-gen``: paired data, the stem-embedding cache, the training loop (only the adapter
changes, exact resume, saved adapters reload to the same images) and the command line, with a
tiny SD pipeline, the tiny separator and a tiny CLAP (no network)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from macs_cli.errors import ConfigError
from macs_cli.generation import GenerationSettings, MacsGenerator, load_backbone
from macs_cli.generation.audio import AudioEmbedder
from macs_cli.training.gen_data import (StemCache, batch_indices, clip_embeddings, file_sha256, list_pairs,
                                        load_image)
from macs_cli.training.gen_trainer import GenTrainer, load_gen_config

from . import clap_fixtures as cf
from . import gen_fixtures as gf
from .conftest import tone_mix
from .gen_fixtures import tiny_sd  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]
run = gf.run


def _image(path: Path, seed: int, size=(80, 64)) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, 3)
    arr = np.clip(base + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def landscape(tmp_path_factory) -> Path:
    """<root>/train/audio/<id>.wav + <root>/train/image/<id>_frame_<k>.jpg: 3 clips x 2 frames."""
    root = tmp_path_factory.mktemp("landscape")
    for i in range(3):
        (root / "train" / "audio").mkdir(parents=True, exist_ok=True)
        sf.write(root / "train" / "audio" / f"clip{i}.wav", tone_mix(1.2, 16000, seed=i), 16000)
        for k in range(2):
            _image(root / "train" / "image" / f"clip{i}_frame_{k}.jpg", 10 * i + k)
    _image(root / "train" / "image" / "orphan_frame_0.jpg", 99)  # no clip: skipped
    return root


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A CSV manifest with precomputed (ranked) stem embeddings: no separation needed."""
    d = tmp_path_factory.mktemp("manifest")
    rows = []
    for i in range(3):
        emb = gf.write_embeddings(d / f"e{i}.npy", gf.random_embeddings(4, seed=20 + i), {"order": [0, 1, 2, 3]})
        for k in range(2):
            _image(d / "img" / f"c{i}_{k}.png", 30 + 10 * i + k)
            rows.append({"audio": f"c{i}.wav", "image": f"img/c{i}_{k}.png", "labels": "dog", "embedding": emb.name})
    path = d / "pairs.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clap") / "tiny-clap.pt"
    torch.save(cf.laion_training_checkpoint(cf.make_laion_net()), path)
    return path


def _cfg(data: Path, sd: Path, **over) -> dict:
    sets = [f"data.train={data}", f"model.sd_model={sd}", "model.num_tokens=4", "model.hidden_dim=64",
            "data.resolution=[64, 64]", "optim.batch_size=2", "optim.grad_accum=2", "train.steps=4",
            "optim.lr=1e-3", "optim.warmup=0.25", "sample.every=0", "log.every=1", "checkpoint.every=100",
            "train.uncond_prob=0.5", "data.flip=true"]
    sets += [f"{k.replace('__', '.')}={v}" for k, v in over.items()]
    return load_gen_config(None, sets)


# -- data ---------------------------------------------------------------------------------------
def test_pairs_from_layouts_and_manifest(landscape, manifest):
    for kind in ("auto", "landscape", "llp"):
        data = list_pairs(landscape, kind)
        assert len(data) == 6 and len(data.clips) == 3
        assert [Path(c.audio).name for c in data.clips] == ["clip0.wav", "clip1.wav", "clip2.wav"]
        assert all(Path(p.image).name.startswith(Path(data.clips[p.clip].audio).stem + "_frame_") for p in data.pairs)
    assert len(list_pairs(landscape / "train")) == 6         # the split folder itself
    data = list_pairs(manifest)
    assert len(data) == 6 and len(data.clips) == 3 and data.clips[0].labels == ["dog"]
    assert data.clips[0].embedding.endswith("e0.npy")
    small = list_pairs(manifest, max_items=3)
    assert len(small) == 3 and len(small.clips) == 2
    with pytest.raises(ConfigError, match="Landscape"):
        list_pairs(manifest.parent / "img")
    img = load_image(data.pairs[0].image, (64, 48), flip=False)
    assert img.shape == (3, 64, 48) and -1.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert torch.equal(load_image(data.pairs[0].image, (64, 48), flip=True), img.flip(-1))
    # the pair stream: every pair once per epoch, a different order each epoch, reproducible
    first, second = batch_indices(6, 0, 0, 6), batch_indices(6, 0, 6, 6)
    assert sorted(first) == sorted(second) == list(range(6)) and first != second
    assert batch_indices(6, 0, 4, 4) == first[4:] + second[:2]


def test_stem_embeddings_are_cached_once_per_clip(landscape, tiny_model_path, tiny_clap, tmp_path):
    data = list_pairs(landscape)
    cache = StemCache(tmp_path / "cache")
    def factory():
        return AudioEmbedder(str(tiny_model_path), str(tiny_clap), "cpu")

    emb, stats = clip_embeddings(data, factory, cache)
    assert emb.shape == (3, 4, 512) and stats == {"cached": 0, "computed": 3, "precomputed": 0, "order": "significance"}
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 3
    again, stats = clip_embeddings(data, factory, cache)
    assert stats["cached"] == 3 and stats["computed"] == 0 and torch.equal(again, emb)
    # ranked: the separator's stems, most similar to the mixture first
    unranked, unranked_stats = clip_embeddings(data, factory, cache, rank=False)
    assert unranked_stats["order"] == "separator"       # recorded in the adapter: generate follows it
    ids = factory().cache_ids()
    for c in range(3):
        match = (emb[c] @ unranked[c].T).argmax(1)
        assert sorted(match.tolist()) == [0, 1, 2, 3]
        mixture = torch.from_numpy(cache.get(cache.key(file_sha256(Path(data.clips[c].audio)), ids))[1])
        cos = emb[c] @ mixture
        assert torch.all(cos[:-1] >= cos[1:])
    top, _ = clip_embeddings(data, factory, cache, top_k=2)
    assert torch.equal(top, emb[:, :2])


# -- training -----------------------------------------------------------------------------------
def _frozen_state(pipe) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, module in (("unet", pipe.unet), ("vae", pipe.vae), ("text", pipe.text_encoder)):
        for k, v in module.state_dict().items():
            out[f"{prefix}.{k}"] = v.detach().clone()
    return out


def test_only_the_adapter_trains_and_the_saved_adapter_reloads(tiny_sd, manifest, tmp_path):
    cfg = _cfg(manifest, tiny_sd, sample__every=2, sample__count=2, sample__steps=2)
    pipe = load_backbone(str(tiny_sd))
    trainer = GenTrainer(cfg, tmp_path / "run", device="cpu", progress=False, pipe=pipe)
    before = _frozen_state(pipe)     # the audio projections live in the UNet's state dict too
    start = {k: v.clone() for k, v in trainer.adapter.state_dict().items()}
    result = trainer.run()
    assert result["step"] == 4 and result["embeddings"]["precomputed"] == 3
    after = _frozen_state(pipe)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    ip = {k for k in changed if k.endswith(("to_k_ip.weight", "to_v_ip.weight"))}
    assert changed == ip and len(ip) == 14          # the UNet, VAE and text encoder are untouched
    end = trainer.adapter.state_dict()
    assert all(not torch.equal(start[k], end[k]) for k in ("pe", "adapter.1.weight", "adapter.4.weight"))
    assert all(not torch.equal(start[k], end[k]) for k in end if k.endswith("_ip.weight"))
    run_dir = tmp_path / "run"
    for name in ("checkpoint.pt", "adapter.safetensors", "adapter.json", "metrics.csv", "curves.png",
                 "config.yaml", "samples/step_000002.png", "samples/step_000004.png"):
        assert (run_dir / name).exists(), name
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and all(np.isfinite(float(r["loss"])) for r in rows)
    # the adapter file, loaded the way users load it, gives the trainer's images
    s = GenerationSettings(steps=2, height=64, width=64, seed=3)
    e = gf.random_embeddings(4, seed=5)
    in_memory = MacsGenerator(trainer.pipe, trainer.adapter.eval(), None, str(tiny_sd)).generate(e, s)[0]
    loaded = MacsGenerator.load(adapter=run_dir)            # the run folder; backbone from the adapter
    assert json.loads((run_dir / "adapter.json").read_text())["sd_model"] == str(tiny_sd)
    assert json.loads((run_dir / "adapter.json").read_text())["stem_order"] == "significance"
    assert loaded.source.stem_order == "significance"
    assert np.array_equal(np.asarray(loaded.generate(e, s)[0].image), np.asarray(in_memory.image))


def test_resume_continues_exactly(tiny_sd, manifest, tmp_path):
    cfg = _cfg(manifest, tiny_sd)
    full = GenTrainer(cfg, tmp_path / "full", device="cpu", progress=False, pipe=load_backbone(str(tiny_sd)))
    full.run()
    broken = GenTrainer(cfg, tmp_path / "broken", device="cpu", progress=False, pipe=load_backbone(str(tiny_sd)))
    assert broken.run(stop_after=2)["step"] == 2
    resumed = GenTrainer(cfg, tmp_path / "broken", device="cpu", progress=False, pipe=load_backbone(str(tiny_sd)))
    assert resumed.run(resume=True)["step"] == 4
    a, b = full.adapter.state_dict(), resumed.adapter.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(tmp_path / "full" / "metrics.csv") as f1, open(tmp_path / "broken" / "metrics.csv") as f2:
        assert [r["loss"] for r in csv.DictReader(f1)] == [r["loss"] for r in csv.DictReader(f2)]


def test_train_gen_cli_on_the_landscape_layout(tiny_sd, landscape, tiny_model_path, tiny_clap, tmp_path):
    out = tmp_path / "run"
    common = ["--data", landscape, "--sd-model", tiny_sd, "--device", "cpu", "-q",
              "--set", f"data.separator={tiny_model_path}", "--set", f"data.clap={tiny_clap}",
              "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "model.num_tokens=4",
              "--set", "model.hidden_dim=64", "--set", "data.resolution=[64, 64]", "--set", "sample.every=0",
              "--set", "optim.grad_accum=1"]
    r = run("train-gen", "-o", out, "--config", ROOT / "recipes" / "landscape" / "config.yaml", "--steps", 2,
            "--batch-size", 2, *common)
    assert r.exit_code == 0, r.output
    assert "trained to step 2" in r.output
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 3
    r = run("train-gen", "-o", out, "--steps", 2, *common)
    assert r.exit_code == 1 and "--resume" in r.output
    r = run("train-gen", "-o", out, "--steps", 2, "--resume", "--force", *common)
    assert r.exit_code == 2
    r = run("train-gen", "-o", out, "--steps", 3, "--resume", *common)
    assert r.exit_code == 0 and "trained to step 3" in r.output, r.output
    r = run("train-gen", "-o", tmp_path / "bad", "--set", "optim.clip_mode=sideways", *common)
    assert r.exit_code == 2 and "clip_mode" in r.output and len(r.output.strip().splitlines()) == 1
    # the run folder is an --adapter for generate
    emb = gf.write_embeddings(tmp_path / "e.npy", gf.random_embeddings(4))
    r = run("generate", "-e", emb, "--adapter", out, "-o", tmp_path / "img.png", "--steps", 2, "--height", 64,
            "--width", 64, "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output


def test_landscape_recipe_matches_the_paper():
    cfg = load_gen_config(ROOT / "recipes" / "landscape" / "config.yaml", ["data.train=/data/Landscape"])
    o, t, m = cfg["optim"], cfg["train"], cfg["model"]
    assert (o["lr"], o["batch_size"], o["grad_accum"], o["clip_grad"], o["clip_mode"]) == (1e-4, 2, 8, 1.0, "value")
    assert (t["uncond_prob"], t["precision"], t["epochs"], t["steps"]) == (0.1, "fp16", 15, None)
    assert (m["num_tokens"], m["hidden_dim"], m["dropout"], m["pe_std"], m["prompt"]) == (6, 2048, 0.5, 0.05, "")
    assert cfg["data"]["kind"] == "landscape" and cfg["data"]["resolution"] == [288, 512]
    with pytest.raises(ConfigError, match="unknown config key"):
        load_gen_config(None, ["data.train=x", "optim.nope=1"])


def test_force_clears_only_the_runs_own_files(tmp_path):
    from PIL import Image
    from safetensors.torch import save_file

    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(run / "samples" / "step_000001.png")
    torch.save({"adapter": {}, "optimizer": {}, "scheduler": {}, "step": 1,          # as save_state writes it
                "config": "train:\n  steps: 1\noptim:\n  lr: 0.1\n"}, run / "checkpoint.pt")
    (run / "config.yaml").write_text("model: {}\ntrain: {steps: 1}\noptim: {lr: 0.1}\n")
    (run / "metrics.csv").write_text("step,epoch,lr,loss,seconds\n1,0,0.1,0.5,1\n")
    save_file({"x": torch.zeros(1)}, str(run / "adapter.safetensors"), metadata={"format": "macs-adapter-v1"})
    (run / "adapter.json").write_text('{"format": "macs-adapter-v1"}')
    (run / "mine.txt").write_text("x")
    (run / "data").mkdir()
    removed = GenTrainer.clear_run(run)
    assert sorted(removed) == sorted(["checkpoint.pt", "config.yaml", "metrics.csv", "adapter.safetensors",
                                      "adapter.json", "samples"])
    assert sorted(p.name for p in run.iterdir()) == ["data", "mine.txt"]
    assert GenTrainer.clear_run(run) == []          # nothing left to remove: no error
    # files under those names that are not a run's are never removed
    for name in ("checkpoint.pt", "config.yaml", "metrics.csv", "adapter.json"):
        (run / name).write_text("a file of the user's")
    assert GenTrainer.clear_run(run) == []
    assert (run / "config.yaml").read_text() == "a file of the user's"


def test_a_run_that_fails_before_training_leaves_the_old_run_intact(tiny_sd, landscape, tiny_model_path, tiny_clap,
                                                                    tmp_path):
    out = tmp_path / "run"
    common = ["--sd-model", tiny_sd, "--device", "cpu", "-q",
              "--set", f"data.separator={tiny_model_path}", "--set", f"data.clap={tiny_clap}",
              "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "model.num_tokens=4",
              "--set", "model.hidden_dim=64", "--set", "data.resolution=[64, 64]", "--set", "sample.every=0",
              "--set", "optim.grad_accum=1", "--set", "optim.batch_size=2"]
    assert run("train-gen", "-o", out, "--data", landscape, "--steps", 2, *common).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    # --force with a mistyped --data: an error, and the trained run is still there, untouched
    r = run("train-gen", "-o", out, "--data", tmp_path / "typo", "--steps", 2, "--force", *common)
    assert r.exit_code != 0 and r.output.startswith("error:")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # a resume that cannot load the checkpoint does not rewrite config.yaml
    r = run("train-gen", "-o", out, "--data", landscape, "--steps", 3, "--resume", *common,
            "--set", "model.hidden_dim=32")
    assert r.exit_code == 1 and (out / "config.yaml").read_bytes() == before["config.yaml"]
    # a resume with changed settings says which
    r = run("train-gen", "-o", out, "--data", landscape, "--steps", 3, "--resume", *common, "--set", "optim.lr=5e-5")
    assert r.exit_code == 0 and "changed settings: optim.lr (0.0001 -> 5e-05)" in r.output, r.output


@pytest.mark.parametrize("value", ["optim.betas=[x,y]", "optim.betas=[2,0.9]", "sample.guidance=abc",
                                   "train.seed=100000000000000000000000", "data.split=5", "sample.every=true",
                                   "data.cache_dir=7"])
def test_train_gen_bad_values_are_one_line_config_errors(value, tmp_path):
    r = run("train-gen", "-o", tmp_path / "r", "--data", tmp_path / "pairs.csv", "--set", value, "-q")
    assert r.exit_code == 2 and r.output.startswith("error: invalid train-gen config"), (value, r.output)
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_sixteen_bit_images_are_scaled_not_clipped_and_nan_embeddings_refused(tmp_path):
    from PIL import Image

    from macs_cli.training.gen_data import Clip, _precomputed, load_image

    ramp = np.linspace(1, 65529, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    x = load_image(tmp_path / "g16.png", (64, 64))
    assert x.shape == (3, 64, 64) and float((x > 0.99).float().mean()) < 0.01 and abs(float(x.mean())) < 0.02
    np.save(tmp_path / "nan.npy", np.full((4, 512), np.nan, np.float32))
    with pytest.raises(ConfigError, match="NaN"):
        _precomputed(Clip(str(tmp_path / "a.wav"), embedding=str(tmp_path / "nan.npy")))


def test_csv_rows_with_their_own_embeddings_stay_separate_clips(tmp_path):
    from macs_cli.training.gen_data import pairs_from_csv

    for i in range(3):
        np.save(tmp_path / f"e{i}.npy", np.random.default_rng(i).standard_normal((4, 512)).astype(np.float32))
    (tmp_path / "p.csv").write_text("audio,image,embedding\n,a.jpg,e0.npy\n,b.jpg,e1.npy\nsame.wav,c.jpg,e2.npy\n"
                                    "same.wav,d.jpg,e2.npy\n")
    data = pairs_from_csv(tmp_path / "p.csv")
    assert len(data.clips) == 3 and [p.clip for p in data.pairs] == [0, 1, 2, 2]
    assert [Path(c.embedding).name for c in data.clips] == ["e0.npy", "e1.npy", "e2.npy"]
    (tmp_path / "bad.csv").write_text("audio,image\n,a.jpg\n")
    with pytest.raises(ConfigError, match="line 2: no audio file and no precomputed embedding"):
        pairs_from_csv(tmp_path / "bad.csv")


def test_pairs_with_unreadable_images_are_dropped_up_front(manifest, tmp_path):
    from macs_cli.training.gen_data import drop_unreadable_images, list_pairs

    d = tmp_path / "m"
    d.mkdir()
    text = manifest.read_text().replace("e0.npy", str(manifest.parent / "e0.npy")).replace(
        "e1.npy", str(manifest.parent / "e1.npy")).replace("e2.npy", str(manifest.parent / "e2.npy"))
    text = text.replace("img/", str(manifest.parent / "img") + "/")
    (d / "garbage.png").write_bytes(b"not an image")
    (d / "empty.jpg").write_bytes(b"")
    text += f"x.wav,{d / 'garbage.png'},dog,{manifest.parent / 'e0.npy'}\n"
    text += f"y.wav,{d / 'empty.jpg'},dog,{manifest.parent / 'e1.npy'}\n"
    text += f"z.wav,{d / 'missing.png'},dog,{manifest.parent / 'e2.npy'}\n"
    (d / "pairs.csv").write_text(text)
    data, dropped = drop_unreadable_images(list_pairs(d / "pairs.csv"))
    assert len(data) == 6 and len(dropped) == 3 and len(data.clips) == 3
    assert all(p.clip < len(data.clips) for p in data.pairs)
    (d / "bad.csv").write_text(f"audio,image,embedding\nx.wav,{d / 'garbage.png'},{manifest.parent / 'e0.npy'}\n")
    with pytest.raises(ConfigError, match="no readable image"):
        drop_unreadable_images(list_pairs(d / "bad.csv"))
