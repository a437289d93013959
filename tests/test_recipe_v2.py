"""Recipe v2 training options: the sparsity penalty, 1-N sources per mixture of mixtures, EQ and
reverb augmentation, their config validation, and the GPU script's shard/merge round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from macs_cli.errors import ConfigError
from macs_cli.training.augment import AugmentSpec, augment_sources, biquad_response, synthetic_rir
from macs_cli.training.config import load_config
from macs_cli.training.data import ClipBank, MixSpec, synthesize
from macs_cli.training.losses import MixITLoss, MixtureBatch, StemSparsity


def _bank(n=12, seed=0):
    rng = np.random.default_rng(seed)
    clips = [(rng.standard_normal(int(rng.integers(2000, 9000))) * 0.1).astype(np.float32) for _ in range(n)]
    return ClipBank.from_arrays(clips, [[f"l{i % 5}"] for i in range(n)], 16000)


def _batch_for(stems):
    b, m, length = stems.shape
    mix = stems.detach().sum(1)
    return MixtureBatch(torch.zeros(b, 2, length), torch.zeros(b, 2, dtype=torch.long), mix, torch.zeros_like(mix))


# -- the sparsity penalty ------------------------------------------------------------------------
def test_sparsity_l1_l2_values_on_known_stems():
    length = 1000
    one = torch.zeros(2, 6, length)
    one[:, 0] = 1.0                                       # everything on one stem
    assert StemSparsity()(_batch_for(one), one).item() == pytest.approx(1.0, abs=1e-3)   # (eps: 5 x 1e-4)
    even = torch.ones(2, 6, length)                       # spread evenly over six
    assert StemSparsity()(_batch_for(even), even).item() == pytest.approx(math.sqrt(6), rel=1e-5)
    two = torch.zeros(1, 6, length)
    two[0, 0], two[0, 1] = 3.0, 4.0                       # RMS 3 and 4: (3 + 4) / 5
    exact = StemSparsity(eps=0.0)
    assert exact(_batch_for(two), two).item() == pytest.approx(7 / 5, rel=1e-6)
    assert StemSparsity()(_batch_for(two), two).item() == pytest.approx(7 / 5, abs=1e-3)
    # scale-free
    assert exact(_batch_for(10 * two), 10 * two).item() == pytest.approx(7 / 5, rel=1e-6)
    # l1: sum of stem RMS over the mixture's RMS (|3 + 4| = 7 here: 7 / 7)
    assert StemSparsity("l1", eps=0.0)(_batch_for(two), two).item() == pytest.approx(1.0, rel=1e-6)
    assert StemSparsity("l1")(_batch_for(even), even).item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError):
        StemSparsity("l2")


def test_sparsity_gradient_matches_the_formula():
    length = 500
    x = torch.zeros(1, 6, length, dtype=torch.float32)
    x[0, 0], x[0, 1] = 3.0, 4.0
    x.requires_grad_(True)
    StemSparsity(eps=0.0)(_batch_for(x), x).backward()
    # f = (r1 + r2) / sqrt(r1^2 + r2^2); df/dr1 = 1/n - (r1 + r2) r1 / n^3 = 0.2 - 21/125;
    # dr1/dx_t = x_t / (L r1) = 1 / L
    assert x.grad[0, 0].mean().item() == pytest.approx((0.2 - 21 / 125) / length, rel=1e-4)
    assert x.grad[0, 1].mean().item() == pytest.approx((0.2 - 28 / 125) / length, rel=1e-4)
    # moving energy from the smaller stem to the larger one lowers the penalty
    assert x.grad[0, 0].mean() > 0 > x.grad[0, 1].mean()


# -- one to N sources per mixture of mixtures ---------------------------------------------------
def test_total_sources_counts_and_stream():
    bank = _bank()
    b = synthesize(bank, 64, 4000, torch.Generator().manual_seed(1), MixSpec(total_sources=(1, 4)))
    n1, n2 = (b.groups == 0).sum(1), (b.groups == 1).sum(1)
    total = n1 + n2
    assert total.min() == 1 and total.max() == 4 and (n1 >= 1).all()
    assert ((total == 1) == (n2 == 0)).all()                    # m2 is empty only with one source
    assert set(total.tolist()) == {1, 2, 3, 4}
    assert torch.equal(b.m2[n2 == 0], torch.zeros_like(b.m2[n2 == 0]))
    # the default (total_sources None) stream is that of the per-mixture counts, unchanged
    a = synthesize(bank, 8, 4000, torch.Generator().manual_seed(3), MixSpec())
    c = synthesize(bank, 8, 4000, torch.Generator().manual_seed(3), MixSpec((1, 2), (1, 3), (-6.0, 6.0)), None)
    assert torch.equal(a.mix, c.mix)
    for bad in ((0, 3), (2, 1), (1, 1), (1, 9)):
        with pytest.raises(ConfigError):
            MixSpec(total_sources=bad).validate()


def test_mixit_with_an_empty_reference():
    torch.manual_seed(0)
    m1 = torch.randn(2, 800)
    batch = MixtureBatch(torch.zeros(2, 2, 800), torch.zeros(2, 2, dtype=torch.long), m1, torch.zeros_like(m1))
    stems = torch.randn(2, 4, 800)
    stems = stems + (m1 - stems.sum(1))[:, None] / 4          # mixture consistent
    stems.requires_grad_(True)
    loss = MixITLoss(4, empty_refs=True)(batch, stems)
    # the only admissible assignment puts every stem on m1: -SI-SDR(sum of stems, m1), very good
    assert loss.item() < -60
    loss.backward()
    assert torch.isfinite(stems.grad).all()
    # without the option, the silent m2 costs the -80 dB of an empty group
    assert MixITLoss(4)(batch, stems).item() > loss.item() + 50


# -- augmentation -------------------------------------------------------------------------------
def test_biquad_responses_hit_their_gains():
    f = torch.tensor([0.0, 8000.0])
    low = biquad_response("lowshelf", torch.tensor(200.0), torch.tensor(6.0), None, f, 16000)
    high = biquad_response("highshelf", torch.tensor(3000.0), torch.tensor(-4.0), None, f, 16000)
    peak = biquad_response("peak", torch.tensor(1000.0), torch.tensor(5.0), torch.tensor(1.0),
                           torch.tensor([1000.0, 0.0]), 16000)
    db = lambda h: (20 * torch.log10(h.abs())).tolist()  # noqa: E731
    assert db(low) == pytest.approx([6.0, 0.0], abs=1e-3)
    assert db(high) == pytest.approx([0.0, -4.0], abs=1e-3)
    assert db(peak) == pytest.approx([5.0, 0.0], abs=1e-3)


def test_synthetic_rir_decay_and_drr():
    g = torch.Generator().manual_seed(0)
    rir = synthetic_rir((3,), 16000, torch.tensor([0.3, 0.3, 0.3]), torch.tensor([0.0, 6.0, 12.0]), g, 8000)
    assert rir.shape == (3, 8000) and torch.all(rir[:, 0] == 1)
    tail = rir[:, 1:].square().sum(-1)
    assert (10 * torch.log10(1 / tail)).tolist() == pytest.approx([0.0, 6.0, 12.0], abs=1e-3)
    early, late = rir[0, 1:800].square().mean(), rir[0, 4000:4800].square().mean()   # 50 ms vs 250-300 ms
    assert 10 * torch.log10(early / late) > 25                 # -60 dB in 0.3 s: ~40 dB between them


def test_augmentation_keeps_shape_finiteness_and_levels():
    bank = _bank()
    spec = AugmentSpec(eq_prob=1.0, eq_db=12.0, reverb_prob=1.0, rt60=(0.3, 1.0)).validate()
    plain = synthesize(bank, 6, 16000, torch.Generator().manual_seed(2), MixSpec())
    aug = synthesize(bank, 6, 16000, torch.Generator().manual_seed(2), MixSpec(), spec)
    assert aug.sources.shape == plain.sources.shape and torch.equal(aug.groups, plain.groups)
    assert torch.isfinite(aug.sources).all() and torch.isfinite(aug.mix).all()
    rms = lambda x: x.square().mean(-1).sqrt()  # noqa: E731
    assert torch.allclose(rms(aug.sources), rms(plain.sources), rtol=1e-4, atol=1e-7)
    present = plain.groups >= 0
    changed = (aug.sources - plain.sources).abs().amax(-1)
    assert (changed[present] > 1e-3).all() and (changed[~present] == 0).all()
    # m1, m2 are the sums of the augmented sources
    assert torch.allclose(aug.m1, (aug.sources * (aug.groups == 0)[..., None]).sum(1), atol=1e-6)
    # off: nothing drawn, the same batch
    off = synthesize(bank, 6, 16000, torch.Generator().manual_seed(2), MixSpec(), AugmentSpec())
    assert torch.equal(off.mix, plain.mix)
    # a source of probability-0 augmentation is untouched
    x = torch.randn(2, 3, 4000)
    assert torch.equal(augment_sources(x, torch.ones(2, 3, dtype=torch.bool), torch.Generator(),
                                       AugmentSpec(), 16000), x)


# -- config -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,needle", [
    ("loss.sparsity=-1", "loss.sparsity must be a number in [0, 100]"),
    ("loss.sparsity=abc", "loss.sparsity must be a number"),
    ("loss.sparsity=.nan", "loss.sparsity must be a number"),
    ("loss.sparsity_kind=l2", "loss.sparsity_kind must be l1_l2 or l1"),
    ("mix.total_sources=[0,4]", "mix.total_sources must be null or two integers"),
    ("mix.total_sources=[1,1]", "mix.total_sources must be null or two integers"),
    ("mix.total_sources=[3,2]", "mix.total_sources must be null or two integers"),
    ("mix.total_sources=4", "mix.total_sources must be null or two integers"),
    ("augment.eq_prob=1.5", "augment.eq_prob must be in [0, 1]"),
    ("augment.reverb_prob=-0.1", "augment.reverb_prob must be in [0, 1]"),
    ("augment.eq_db=30", "augment.eq_db must be in [0, 24]"),
    ("augment.rt60=[0.8,0.2]", "augment.rt60 must be two numbers"),
    ("augment.rt60=[0.01,0.5]", "augment.rt60 must be two numbers"),
    ("augment.drr_db=[5]", "augment.drr_db must be two numbers"),
    ("augment.foo=1", "unknown config key 'augment.foo'"),
])
def test_config_rejects_bad_v2_values(value, needle):
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["data.train=x", value])
    assert needle in str(exc.value)


def test_config_v2_defaults_are_off_and_good_values_pass():
    cfg = load_config(None, ["data.train=x"])
    assert cfg["loss"]["sparsity"] == 0 and cfg["mix"]["total_sources"] is None
    assert cfg["augment"]["eq_prob"] == 0 and cfg["augment"]["reverb_prob"] == 0
    cfg = load_config(None, ["data.train=x", "loss.sparsity=2", "loss.sparsity_kind=l1", "mix.total_sources=[1,4]",
                             "augment.eq_prob=0.5", "augment.reverb_prob=1", "augment.rt60=[0.1,1.5]"])
    assert cfg["mix"]["total_sources"] == [1, 4]


def test_trainer_builds_the_v2_terms(tmp_path):
    from macs_cli.training.trainer import Trainer

    cfg = load_config(None, ["data.train=x", "model.channels=4", "model.depth=2", "loss.sparsity=2",
                             "mix.total_sources=[1,3]", "augment.eq_prob=0.5"])
    tr = Trainer(cfg, tmp_path / "run", device="cpu", progress=False)
    names = [t.name for t in tr.terms]
    assert names == ["mixit", "sparsity"] and tr.terms[1].weight(0, 10) == 2.0
    assert tr.terms[0].fn.empty_refs and tr.spec.total_sources == (1, 3) and tr.augment.eq_prob == 0.5
    plain = Trainer(load_config(None, ["data.train=x", "model.channels=4", "model.depth=2"]),
                    tmp_path / "run2", device="cpu", progress=False)
    assert [t.name for t in plain.terms] == ["mixit"] and not plain.terms[0].fn.empty_refs
    assert not plain.augment.active


# -- the GPU script (tiny CPU mode) and its shard merge --------------------------------------------
def _load_gpu_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / "default-separator" / "train_gpu_v2.py"
    spec = importlib.util.spec_from_file_location("train_gpu_v2", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _mulaw_corpus(path, seed=0):
    from macs_cli.training.data import mulaw_encode

    rng = np.random.default_rng(seed)
    clips, labels, splits = [], [], []
    for i in range(24):
        n = int(rng.integers(8000, 24000))
        t = np.arange(n) / 16000
        x = 0.3 * np.sin(2 * np.pi * (200 + 150 * (i % 6)) * t) * (0.5 + 0.5 * rng.random(n))
        clips.append(mulaw_encode(x.astype(np.float32)))
        labels.append(f"class{i % 6}")
        splits.append("heldout" if i % 4 == 0 else "train")
    offsets = np.concatenate([[0], np.cumsum([c.size for c in clips])]).astype(np.int64)
    np.savez_compressed(path, audio=np.concatenate(clips), offsets=offsets, labels=np.array(labels),
                        groups=np.array(labels), splits=np.array(splits), sample_rate=np.int64(16000),
                        encoding=np.array("mulaw"))


def test_gpu_v2_script_tiny_run_shards_and_merge(tmp_path):
    import json

    from macs_cli.weights.separator import load_separator

    mod = _load_gpu_script()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _mulaw_corpus(corpus / "corpus.npz")
    with pytest.raises(SystemExit, match="READY"):
        mod.resolve_corpus(str(corpus))
    (corpus / "READY").write_text("")
    assert mod.resolve_corpus(str(corpus)) == corpus / "corpus.npz"
    out = tmp_path / "run"
    mod.main(["--corpus", str(corpus), "--out", str(out), "--tiny", "--tiny-steps", "2"])
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 2 and report["final"]["step"] == 2
    assert "grouped" in report["final"]["validation"]
    shards = sorted((out / "shards").glob("shard_*.safetensors"))
    assert shards and all(f.stat().st_size < 16 * 2 ** 20 for f in shards)
    # several shards (a small limit) merge back into the run's model, up to float16 rounding
    trained = load_separator(str(out))
    multi = tmp_path / "multi"
    mod.write_shards(trained, multi, limit=4000)
    assert len(list(multi.glob("shard_*.safetensors"))) > 2
    merged = mod.merge(multi, tmp_path / "v2.safetensors")
    model = load_separator(str(merged))
    x = torch.randn(1, trained.config.window_samples) * 0.1
    with torch.no_grad():
        assert torch.allclose(model(x), trained(x), atol=1e-3)
    with pytest.raises(Exception):
        mod.merge(multi, tmp_path / "v2.safetensors")          # never over an existing file
    (multi / "shard_0.safetensors").unlink()
    with pytest.raises(SystemExit, match="do not make the model"):
        mod.merge(multi, tmp_path / "v3.safetensors")


def test_resume_of_a_run_older_than_a_setting_reports_no_change():
    """A checkpoint saved before loss.* / augment.* existed: their defaults are no change; a real
    change still is."""
    import yaml

    from macs_cli.training.config import DEFAULTS
    from macs_cli.training.run import config_changes

    cfg = yaml.safe_load(yaml.safe_dump(DEFAULTS))
    old = {k: v for k, v in cfg.items() if k not in ("loss", "augment")}
    old["mix"] = {k: v for k, v in cfg["mix"].items() if k != "total_sources"}
    saved = yaml.safe_dump(old)
    assert config_changes(saved, cfg) != []                     # without defaults: spurious changes
    assert config_changes(saved, cfg, DEFAULTS) == []
    cfg["loss"]["sparsity"] = 2.0
    assert config_changes(saved, cfg, DEFAULTS) == ["loss.sparsity (0.0 -> 2.0)"]


# -- category-balanced clip draws (mix.balance) ---------------------------------------------------
def _skewed_bank():
    """36 clips of 'speech', 3 of 'dog', 1 of 'bell'; each clip's first sample names it."""
    labels = [["speech"]] * 36 + [["dog"]] * 3 + [["bell", "metal"]]
    clips = [np.full(3000, 0.1, dtype=np.float32) for _ in labels]
    return ClipBank.from_arrays(clips, labels, 16000)


def test_balance_weights_and_shares():
    bank = _skewed_bank()
    assert bank.category_shares(0.0) == pytest.approx({"speech": 0.9, "dog": 0.075, "bell": 0.025})
    assert bank.category_shares(1.0) == pytest.approx({"speech": 1 / 3, "dog": 1 / 3, "bell": 1 / 3})
    half = bank.category_shares(0.5)             # shares go as sqrt(n): 6 : sqrt(3) : 1
    z = 6 + math.sqrt(3) + 1
    assert half == pytest.approx({"speech": 6 / z, "dog": math.sqrt(3) / z, "bell": 1 / z})
    w = bank.draw_weights(1.0)
    assert w.shape == (40,) and float(w.sum()) == pytest.approx(1.0)
    assert float(w[39]) == pytest.approx(36 * float(w[0]))     # the one bell clip weighs as much as all 36 speech clips


def test_balance_draws_categories_evenly():
    bank = _skewed_bank()

    def drawn(balance, seed=0):
        b = synthesize(bank, 600, 3000, torch.Generator().manual_seed(seed),
                       MixSpec((1, 1), (1, 1), (0.0, 0.0), balance=balance))
        first = [labs[0] for item in b.labels for labs in item]
        return {name: first.count(name) / len(first) for name in ("speech", "dog", "bell")}

    even, plain = drawn(1.0), drawn(0.0)
    assert all(abs(v - 1 / 3) < 0.05 for v in even.values())        # 1200 draws: sd of a share ~0.014
    assert plain["speech"] > 0.85 and plain["bell"] < 0.05
    # balance 0 keeps the draw of earlier versions: the same batches as the default spec
    a = synthesize(bank, 8, 3000, torch.Generator().manual_seed(3), MixSpec())
    c = synthesize(bank, 8, 3000, torch.Generator().manual_seed(3), MixSpec(balance=0.0))
    assert torch.equal(a.mix, c.mix)
    for bad in (-0.1, 1.5, True, "1", float("nan")):
        with pytest.raises(ConfigError):
            MixSpec(balance=bad).validate()


def test_train_sep_reports_balance_and_keeps_it_in_the_run_config(tmp_path, clip_folder):
    from typer.testing import CliRunner

    from macs_cli.cli.main import app

    run_dir = tmp_path / "run"
    sets = ["model.channels=4", "model.depth=3", "model.num_sources=4", "model.window_seconds=1.0",
            "validation.mixtures=0", "checkpoint.every=2", "optim.batch_size=2", "mix.balance=1"]
    r = CliRunner().invoke(app, ["train-sep", "--data", str(clip_folder), "-o", str(run_dir), "--steps", "1",
                                 "--device", "cpu", *[x for s in sets for x in ("--set", s)]])
    assert r.exit_code == 0, r.output
    assert "clips drawn with mix.balance 1" in r.stderr and "categories" in r.stderr
    assert "balance: 1" in (run_dir / "config.yaml").read_text()
    r = CliRunner().invoke(app, ["train-sep", "--data", str(clip_folder), "-o", str(tmp_path / "bad"), "-q",
                                 "--steps", "1", "--device", "cpu", "--set", "mix.balance=2"])
    assert r.exit_code != 0 and "mix.balance must be a number in [0, 1]" in r.stderr
