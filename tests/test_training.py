"""Losses against brute force, data adapters, and `macs train-sep` end to end (CPU, tiny)."""

import csv
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from macs_cli.cli.main import app
from macs_cli.evaluation.sisdr import best_grouped_sisdr, best_one_to_one_sisdr, si_sdr
from macs_cli.training.data import (ClipBank, DataError, MixSpec, clips_from_csv, clips_from_folder,
                                    clips_from_fsd50k, fixed_eval_set, load_clip_bank, mulaw_decode,
                                    mulaw_encode, synthesize)
from macs_cli.training.losses import MixITLoss, MixtureBatch

runner = CliRunner()
TINY_SETS = ["model.channels=4", "model.depth=3", "model.num_sources=4", "model.window_seconds=1.0",
             "validation.mixtures=4", "validation.every=2", "checkpoint.every=3", "log.every=1",
             "optim.batch_size=2"]


def sets(*extra):
    out = []
    for s in (*TINY_SETS, *extra):
        out += ["--set", s]
    return out


def brute_mixit(stems, m1, m2):
    best = []
    for b in range(stems.shape[0]):
        vals = []
        for assign in itertools.product((0, 1), repeat=stems.shape[1]):
            a = torch.tensor(assign, dtype=stems.dtype)
            e1 = ((1 - a)[:, None] * stems[b]).sum(0)
            e2 = (a[:, None] * stems[b]).sum(0)
            vals.append(-(si_sdr(e1, m1[b]) + si_sdr(e2, m2[b])))
        best.append(min(vals))
    return torch.stack(best).mean()


def test_mixit_matches_brute_force():
    torch.manual_seed(0)
    stems = torch.randn(3, 4, 500)
    m1 = stems[:, :2].sum(1) + 0.1 * torch.randn(3, 500)
    m2 = stems[:, 2:].sum(1) + 0.2 * torch.randn(3, 500)
    batch = MixtureBatch(torch.zeros(3, 2, 500), torch.zeros(3, 2), m1, m2)
    loss = MixITLoss(4)(batch, stems.double())
    assert torch.allclose(loss.double(), brute_mixit(stems.double(), m1.double(), m2.double()), atol=1e-4)
    # the official variant drops "everything to m2" only
    assert MixITLoss(4, exact=False).assignments.shape[0] == 15


def test_grouped_and_one_to_one_match_brute_force():
    torch.manual_seed(1)
    stems = torch.randn(2, 4, 300).double()
    refs = torch.randn(2, 3, 300).double()
    g, _ = best_grouped_sisdr(stems, refs)
    o, _ = best_one_to_one_sisdr(stems, refs)
    for b in range(2):
        bg = max(np.mean([float(si_sdr(stems[b][[i for i in range(4) if a[i] == j]].sum(0), refs[b, j]))
                          for j in range(3)])
                 for a in itertools.product(range(3), repeat=4) if len(set(a)) == 3)
        bo = max(np.mean([float(si_sdr(stems[b, p[j]], refs[b, j])) for j in range(3)])
                 for p in itertools.permutations(range(4), 3))
        assert abs(float(g[b]) - bg) < 1e-6 and abs(float(o[b]) - bo) < 1e-6


def test_si_sdr_known_values():
    ref = torch.randn(1000).double()
    assert float(si_sdr(3.0 * ref, ref)) > 100
    noise = torch.randn(1000).double()
    noise -= noise.mean()
    ref -= ref.mean()
    noise = noise - (noise @ ref) / (ref @ ref) * ref  # orthogonal
    noise = noise / noise.norm() * ref.norm() / 10     # 20 dB below
    assert abs(float(si_sdr(ref + noise, ref)) - 20.0) < 1e-6


def tiny_bank():
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(int(n)).astype(np.float32) for n in (300, 800, 1500, 2500)]
    return ClipBank.from_arrays(clips, [["a"], ["b"], ["c"], ["d"]], 1000)


def test_synthesize_structure_and_determinism():
    bank = tiny_bank()
    spec = MixSpec((1, 2), (1, 3), (-6, 6))
    g1 = torch.Generator().manual_seed(5)
    b1 = synthesize(bank, 16, 1000, g1, spec)
    assert b1.sources.shape == (16, 4, 1000) and b1.groups.shape == (16, 4)
    assert torch.allclose(b1.m1 + b1.m2, b1.sources.sum(1), atol=1e-5)
    for i in range(16):
        for g in (0, 1):
            n = int((b1.groups[i] == g).sum())
            assert 1 <= n <= 2 and len(b1.labels[i][g]) == n
    assert {int((b1.groups[i] >= 0).sum()) for i in range(16)} > {2}  # the count of sources varies
    b2 = synthesize(bank, 16, 1000, torch.Generator().manual_seed(5), spec)
    assert torch.equal(b1.sources, b2.sources)


def test_mulaw_roundtrip():
    x = np.linspace(-1, 1, 10001).astype(np.float32)
    y = mulaw_decode(mulaw_encode(x))
    # logarithmic quantisation: the error is relative (about 2%), tiny near zero
    assert np.all(np.abs(y - x) <= 0.025 * np.abs(x) + 2e-4)


def test_data_adapters(tmp_path, clip_folder):
    clips = clips_from_folder(clip_folder)
    assert {c.split for c in clips} == {"train", "heldout"}
    assert all(c.labels and c.labels[0].startswith("label") for c in clips)
    # csv manifest with relative paths
    man = tmp_path / "m.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for c in clips:
            w.writerow([os.path.relpath(c.path, tmp_path), c.labels[0], c.split])
    assert len(clips_from_csv(man)) == len(clips)
    bank = load_clip_bank(man, "heldout", 16000)
    assert len(bank) == sum(c.split == "heldout" for c in clips)
    # FSD50K layout
    root = tmp_path / "fsd"
    (root / "ground_truth").mkdir(parents=True)
    (root / "dev_audio").mkdir()
    (root / "eval_audio").mkdir()
    import soundfile as sf

    for i, split in enumerate(["train", "train", "val"]):
        sf.write(root / "dev_audio" / f"{i}.wav", np.random.randn(4000).astype(np.float32) * 0.1, 16000)
    sf.write(root / "eval_audio" / "9.wav", np.random.randn(4000).astype(np.float32) * 0.1, 16000)
    (root / "ground_truth" / "dev.csv").write_text(
        "fname,labels,mids,split\n0,Bark,/m/1,train\n1,\"Music,Guitar\",/m/2,train\n2,Rain,/m/3,val\n")
    (root / "ground_truth" / "eval.csv").write_text("fname,labels,mids\n9,Speech,/m/4\n")
    fsd = clips_from_fsd50k(root)
    assert [c.split for c in fsd] == ["train", "train", "heldout", "heldout"]
    assert fsd[1].labels == ["Music", "Guitar"]
    assert len(load_clip_bank(root, "train", 16000)) == 2


def test_train_sep_cli_runs_and_model_is_usable(tmp_path, clip_folder):
    run_dir = tmp_path / "run"
    r = runner.invoke(app, ["train-sep", "--data", str(clip_folder), "-o", str(run_dir), "--steps", "4",
                            "--device", "cpu", "-q", *sets()])
    assert r.exit_code == 0, r.output
    for f in ("config.yaml", "checkpoint.pt", "separator.safetensors", "separator.json",
              "metrics.csv", "curves.png"):
        assert (run_dir / f).exists(), f
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert rows[1]["val_grouped"] != "" and rows[0]["mixit"] != ""
    # running again without --resume/--force refuses
    r = runner.invoke(app, ["train-sep", "--data", str(clip_folder), "-o", str(run_dir), "--steps", "4", "-q",
                            *sets()])
    assert r.exit_code != 0 and "--resume" in r.output
    # --force restarts, removing only the run's own files: the user's notes in the folder stay
    (run_dir / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["train-sep", "--data", str(clip_folder), "-o", str(run_dir), "--steps", "2", "-q",
                            "--force", "--device", "cpu", *sets()])
    assert r.exit_code == 0, r.output
    assert (run_dir / "notes.txt").read_text() == "mine"
    assert [int(r["step"]) for r in csv.DictReader(open(run_dir / "metrics.csv"))] == [1, 2]
    # an output path that is a file is refused
    r = runner.invoke(app, ["train-sep", "--data", str(clip_folder), "-o", str(run_dir / "notes.txt"),
                            "--steps", "2", "-q", *sets()])
    assert r.exit_code == 1 and "not a folder" in r.output
    # the trained run folder is a model for `separate`
    import soundfile as sf

    wav = tmp_path / "x.wav"
    sf.write(wav, np.random.randn(20000).astype(np.float32) * 0.1, 16000)
    r = runner.invoke(app, ["separate", str(wav), "-o", str(tmp_path / "sep"), "--model", str(run_dir), "-q"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "sep" / "x").glob("stem_*.wav"))) == 4


@pytest.mark.parametrize("args,needle", [
    (["--set", "optim.lr=-1"], "optim.lr"),
    (["--set", "optim.nope=1"], "unknown config key"),
    (["--set", "model.channels=0"], "channels"),
    (["--set", "validation.sources=9"], "validation.sources"),
    (["--steps", "0"], "train.steps"),
    (["--set", "lr"], "section.key=value"),
])
def test_train_sep_bad_config(tmp_path, clip_folder, args, needle):
    r = runner.invoke(app, ["train-sep", "--data", str(clip_folder), "-o", str(tmp_path / "r"), "-q", *args])
    assert r.exit_code != 0 and "Traceback" not in r.output and needle in r.output, r.output


def test_train_sep_missing_data_and_bad_yaml(tmp_path):
    # missing data is an input problem (exit 1); a broken recipe is a config problem (exit 2)
    r = runner.invoke(app, ["train-sep", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "r"), "-q"])
    assert r.exit_code == 1 and "not found" in r.output, r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    r = runner.invoke(app, ["train-sep", "--config", str(bad), "-o", str(tmp_path / "r"), "-q"])
    assert r.exit_code == 2 and "not valid YAML" in r.output


def _one_error_line(r, code):
    lines = r.output.strip().splitlines()
    assert r.exit_code == code, r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit), repr(r.exception)
    return lines[0]


@pytest.mark.parametrize("value,needle", [
    ("optim.clip_grad=-1", "optim.clip_grad must be >= 0"),
    ("optim.clip_grad=abc", "optim.clip_grad must be >= 0"),
    ("mix.gain_db=[a,b]", "mix.gain_db must be two numbers"),
    ("mix.gain_db=[6,-6]", "mix.gain_db must be two numbers"),
    ("mix.gain_db=1", "mix.gain_db must be two numbers"),
    ("mix.sources_per_mixture=[0,1]", "mix.sources_per_mixture must be two integers lo, hi with 1 <= lo <= hi <= 8"),
    ("mix.sources_per_mixture=[1.5,2]", "mix.sources_per_mixture must be two integers"),
    ("mix.repeats=[3,1]", "mix.repeats must be two integers lo, hi"),
    ("mix.loop_prob=2", "mix.loop_prob must be in [0, 1]"),
    ("data.kind=foo", "data.kind must be one of auto, folder, csv, fsd50k, npz"),
    ("data.max_seconds=-5", "data.max_seconds must be > 0"),
    ("data.max_seconds=0", "data.max_seconds must be > 0"),
    ("data.max_seconds=abc", "data.max_seconds must be > 0"),
    ("data.max_clips=0", "data.max_clips must be a positive integer"),
    ("data.max_clips=2.5", "data.max_clips must be a positive integer"),
    ("data.heldout=5", "data.heldout must be a path"),
    ("optim.betas=[2,3]", "optim.betas must be two numbers in [0, 1)"),
    ("optim.betas=[0.9]", "optim.betas must be two numbers in [0, 1)"),
    ("optim.betas=[0.9,1.0]", "optim.betas must be two numbers in [0, 1)"),
    ("optim.lr=0", "optim.lr must be in (0, 1)"),
    ("optim.lr=.nan", "optim.lr must be in (0, 1)"),
    ("optim.lr=true", "optim.lr must be in (0, 1)"),
    ("optim.weight_decay=-0.1", "optim.weight_decay must be >= 0"),
    ("optim.warmup=1", "optim.warmup must be in [0, 1)"),
    ("optim.grad_accum=0", "optim.grad_accum must be a positive integer"),
    ("train.seed=abc", "train.seed must be a non-negative integer"),
    ("train.seed=-1", "train.seed must be a non-negative integer"),
    ("train.seed=1.5", "train.seed must be a non-negative integer"),
    ("train.epochs=0", "train.epochs must be a positive integer"),
    ("train.max_minutes=0", "train.max_minutes must be > 0 or null"),
    ("train.exact_mixit=maybe", "train.exact_mixit must be true or false"),
    ("train.precision=fp8", "train.precision must be"),
    ("log.every=0", "log.every must be a positive integer"),
    ("log.every=x", "log.every must be a positive integer"),
    ("checkpoint.every=0", "checkpoint.every must be a positive integer"),
    ("validation.every=0", "validation.every must be a positive integer"),
    ("validation.mixtures=-1", "validation.mixtures must be an integer >= 0"),
    ("validation.sources=2.0", "validation.sources must be 2, 3 or 4"),
    ("validation.sources=4", "must not exceed model.num_sources"),
    ("validation.seed=x", "validation.seed must be a non-negative integer"),
    ("validation.loop_prob=-0.5", "validation.loop_prob must be in [0, 1]"),
    ("validation.loop_prob=0.5", "validation.loop_prob applies to validation.mode=sparse"),
    ("validation.mode=hard", "validation.mode must be real or sparse"),
    ("validation.sources=[2, 5]", "validation.sources must be 2, 3 or 4"),
    ("validation.sources=[]", "validation.sources must be 2, 3 or 4"),
    ("model.dropout=x", "dropout must be in [0, 1)"),
    ("clap.tau1=0", "clap.tau1 must be > 0"),
    ("clap.tau2_init=x", "clap.tau2_init must be a number"),
    ("clap.rank_regularization=-1", "clap.rank_regularization must be > 0"),
    ("clap.batch_chunk=0", "clap.batch_chunk must be a positive integer or null"),
    ("clap.tokenizer=''", "clap.tokenizer must be a tokenizer folder or null"),
    ("clap.text_template='{x} {}'", "clap.text_template must contain one {} for the label"),
    ("clap.soft_rank=x", "clap.soft_rank must be"),
    ("clap.losses=1", "clap.losses must be true or false"),
])
def test_train_sep_bad_set_values_are_one_line_config_errors(tmp_path, clip_folder, value, needle):
    run_dir = tmp_path / "r"
    extra = ["model.num_sources=3"] if "must not exceed" in needle else []
    r = runner.invoke(app, ["train-sep", "--data", str(clip_folder), "-o", str(run_dir), "--steps", "2",
                            "--device", "cpu", "-q", *sets(*extra, value)])
    line = _one_error_line(r, 2)
    assert needle in line, line
    assert not run_dir.exists()  # refused before the run folder is written


def test_config_accepts_boundary_values():
    from macs_cli.training.config import load_config

    cfg = load_config(None, ["data.train=x", "optim.clip_grad=0", "data.max_seconds=null", "data.max_clips=3",
                             "optim.betas=[0, 0.5]", "optim.warmup=0", "train.seed=0", "mix.gain_db=[0, 0]",
                             "validation.mixtures=0", "train.max_minutes=0.5", "clap.text_template=A {}"])
    assert cfg["optim"]["clip_grad"] == 0 and cfg["data"]["max_seconds"] is None


def test_mixspec_validate_rejects_bad_types():
    from macs_cli.errors import ConfigError

    for spec in (MixSpec(("a", 2)), MixSpec((1, 2), (1, "x")), MixSpec((1, 2), (1, 3), ("a", "b")),
                 MixSpec((1, 2), (1, 3), (6.0, -6.0)), MixSpec(loop_prob="x"), MixSpec((0, 1))):
        with pytest.raises(ConfigError):
            spec.validate()
    with pytest.raises(ConfigError, match="two integers lo, hi with 1 <= lo <= hi <= 8"):
        MixSpec((3, 1)).validate()


def _write_bad_clips(folder):
    """One clip of every unusable kind: not audio, NaN, empty, one sample, silent."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "text.wav").write_text("this is not audio")
    sf.write(folder / "nan.wav", np.full(4000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(folder / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(folder / "one.wav", np.full(1, 0.1, np.float32), 16000)
    sf.write(folder / "silent.wav", np.zeros(4000, np.float32), 16000)


def test_load_clip_bank_reports_skipped_clips(tmp_path):
    from tests.conftest import make_clip_folder

    root = make_clip_folder(tmp_path / "clips", n_labels=2, per_label=2)
    _write_bad_clips(root / "label_0")
    bank = load_clip_bank(root, "train", 16000)
    assert len(bank) == 4 and bank.considered == 9
    assert bank.skipped == {"unreadable": 1, "non-finite": 1, "empty": 1, "too short": 1, "silent": 1}
    msg = bank.skip_warning()
    assert msg.startswith("warning: skipped 5 of 9 clips (") and "1 unreadable" in msg and "1 silent" in msg
    assert "\n" not in msg
    moved = bank.to("cpu")
    assert moved.skipped == bank.skipped and moved.skip_warning() == msg
    # a clean collection reports nothing
    assert load_clip_bank(root, "heldout", 16000).skip_warning() is None
    # CSV rows pointing to a missing file, or to no file at all, count as missing
    man = tmp_path / "m.csv"
    good = sorted((root / "label_1").glob("*.wav"))
    man.write_text("path,label\n" + "".join(f"{g},b\n" for g in good) + "nowhere.wav,a\n,c\n")
    bank = load_clip_bank(man, "train", 16000)
    assert len(bank) == len(good) and bank.skipped == {"missing": 2}
    assert "2 missing" in bank.skip_warning() and "nowhere.wav" in bank.skip_warning()


def test_npz_corpus_skips_bad_clips(tmp_path):
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(3000) * 0.1).astype(np.float32), np.zeros(3000, np.float32),
             np.full(3000, np.nan, np.float32), (rng.standard_normal(2000) * 0.1).astype(np.float32)]
    offsets = np.concatenate([[0], np.cumsum([c.size for c in clips])]).astype(np.int64)
    path = tmp_path / "c.npz"
    np.savez(path, audio=np.concatenate(clips), offsets=offsets, labels=np.array(["a", "b", "c", "d"]),
             splits=np.array(["train"] * 4), sample_rate=np.int64(16000))
    bank = load_clip_bank(path, "train", 16000)
    assert len(bank) == 2 and bank.skipped == {"silent": 1, "non-finite": 1}
    assert bank.labels == [["a"], ["d"]]
    bad = tmp_path / "bad.npz"
    np.savez(bad, audio=np.zeros(10, np.float32), offsets=np.array([0, 5, 99]), labels=np.array(["a", "b"]),
             splits=np.array(["train"] * 2), sample_rate=np.int64(16000))
    with pytest.raises(DataError, match="not a macs corpus"):
        load_clip_bank(bad, "train", 16000)


def test_all_bad_clips_is_a_one_line_data_error(tmp_path):
    _write_bad_clips(tmp_path / "bad" / "x")
    with pytest.raises(DataError, match="no usable 'train' clips"):
        load_clip_bank(tmp_path / "bad", "train", 16000)
    r = runner.invoke(app, ["train-sep", "--data", str(tmp_path / "bad"), "-o", str(tmp_path / "r"),
                            "--steps", "2", "--device", "cpu", "-q", *sets()])
    line = _one_error_line(r, 1)
    assert str(tmp_path / "bad") in line and "all 5 skipped" in line and "unreadable" in line


def _text_file(name, content):
    def make(d):
        path = d / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path
    return make


@pytest.mark.parametrize("make,needle", [
    (lambda d: d / "none", "not found"),
    (_text_file("m.csv", ""), "manifest has no rows"),
    (_text_file("m.csv", "x,y\n1,2\n"), "needs a 'path' column"),
    (_text_file("m.csv", b"\xff\xfe\x00\x81path\n"), "not a CSV text file"),
    (lambda d: (d / "e").mkdir() or d / "e", "holds no audio files"),
    (_text_file("c.npz", "nope"), "not a macs corpus"),
    (_text_file("notes.txt", "hi"), "not training data"),
])
def test_train_sep_data_problems_exit_1(tmp_path, make, needle):
    data = make(tmp_path)
    r = runner.invoke(app, ["train-sep", "--data", str(data), "-o", str(tmp_path / "r"), "--steps", "2",
                            "--device", "cpu", "-q", *sets()])
    assert needle in _one_error_line(r, 1)


def test_data_kind_checks_the_source_cheaply(tmp_path, clip_folder):
    from macs_cli.errors import ConfigError
    from macs_cli.training.data import data_kind

    assert data_kind(clip_folder) == "folder"
    (tmp_path / "m.csv").write_text("path\n")
    assert data_kind(tmp_path / "m.csv") == "csv"
    with pytest.raises(DataError, match="not a folder"):
        data_kind(tmp_path / "m.csv", "folder")
    with pytest.raises(DataError, match="not found"):
        data_kind(tmp_path / "none")
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(DataError, match="is a folder, not a .npz file"):
        data_kind(tmp_path / "d.npz", "npz")
    with pytest.raises(ConfigError, match="data.kind must be one of"):
        data_kind(clip_folder, "foo")


def test_train_sep_trains_around_bad_clips(tmp_path, clip_folder):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(clip_folder, data)
    _write_bad_clips(data / "label_0")
    r = runner.invoke(app, ["train-sep", "--data", str(data), "-o", str(tmp_path / "r"), "--steps", "2",
                            "--device", "cpu", "-q", *sets("validation.mixtures=0")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "separator.safetensors").exists()
    assert "warning: skipped" in r.output and "of" in r.output    # said even with -q


def test_data_path_is_never_parsed_as_yaml_and_resume_mismatch_is_named(tmp_path, clip_folder):
    import shutil

    data = tmp_path / "2024"                      # YAML would read this as a number
    shutil.copytree(clip_folder, data)
    run_dir = tmp_path / "r"
    r = runner.invoke(app, ["train-sep", "--data", str(data), "-o", str(run_dir), "--steps", "2",
                            "--device", "cpu", "-q", *sets("validation.mixtures=0")])
    assert r.exit_code == 0, r.output
    # resuming with another model size: one line that says what does not fit
    r = runner.invoke(app, ["train-sep", "--data", str(data), "-o", str(run_dir), "--steps", "3", "--resume",
                            "--device", "cpu", "-q", *sets("validation.mixtures=0", "model.channels=8")])
    assert r.exit_code == 1 and "does not fit model.*" in r.output and "shape mismatch" in r.output, r.output
    # a bad --data writes nothing
    r = runner.invoke(app, ["train-sep", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "r2"), "-q",
                            *sets()])
    assert r.exit_code == 1 and not (tmp_path / "r2").exists()


def test_files_right_inside_the_heldout_folder_have_no_label(tmp_path, clip_folder):
    import shutil

    shutil.copytree(clip_folder / "label_0", tmp_path / "label_0")
    (tmp_path / "heldout").mkdir()
    for i, f in enumerate(sorted((clip_folder / "heldout" / "label_1").glob("*.wav"))):
        shutil.copy(f, tmp_path / "heldout" / f"{i}.wav")
    held = [c for c in clips_from_folder(tmp_path) if c.split == "heldout"]
    assert held and all(c.labels == [] for c in held)
    # (these once made the validation set loop forever: every clip had the label "heldout")
    mixes, _ = fixed_eval_set(load_clip_bank(tmp_path, "heldout", 16000), 2, 2, 8000)
    assert mixes.shape == (2, 8000)


def test_fixed_eval_set_with_unlabelled_or_same_label_clips():
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (300, 500, 700)]
    mixes, refs = fixed_eval_set(ClipBank.from_arrays(clips, [[], [], []], 1000), 3, 2, 400)
    assert mixes.shape == (3, 400) and refs.shape == (3, 2, 400)
    with pytest.raises(DataError, match="differently labelled"):
        fixed_eval_set(ClipBank.from_arrays(clips, [["a"], ["a"], ["a"]], 1000), 2, 2, 400)


def _train_cmd(data, run_dir, steps, *extra):
    return [sys.executable, "-m", "macs_cli", "train-sep", "--data", str(data), "-o", str(run_dir),
            "--steps", str(steps), "--device", "cpu", "-q", *sets(), *extra]


def test_killed_and_resumed_run_ends_where_an_unbroken_one_does(tmp_path, clip_folder):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, broken = tmp_path / "full", tmp_path / "broken"
    subprocess.run(_train_cmd(clip_folder, full, 6), check=True, env=env)
    r = subprocess.run(_train_cmd(clip_folder, broken, 6), env={**env, "MACS_FAULT_AFTER_STEP": "5"})
    assert r.returncode == 137  # died after step 5; the last checkpoint is step 3
    assert int(torch.load(broken / "checkpoint.pt", weights_only=True)["step"]) == 3
    subprocess.run(_train_cmd(clip_folder, broken, 6, "--resume"), check=True, env=env)
    a = load_file(str(full / "separator.safetensors"))
    b = load_file(str(broken / "separator.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    la = list(csv.DictReader(open(full / "metrics.csv")))
    lb = list(csv.DictReader(open(broken / "metrics.csv")))
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def test_two_process_training_with_gloo(tmp_path, clip_folder):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           "29561", "-m", "macs_cli", "train-sep", "--data", str(clip_folder), "-o", str(tmp_path / "ddp"),
           "--steps", "3", "--device", "cpu", "-q", *sets()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "ddp" / "metrics.csv")))
    assert [int(x["step"]) for x in rows] == [1, 2, 3]
    assert (tmp_path / "ddp" / "separator.safetensors").exists()


def test_overrides_parse_scientific_floats():
    from macs_cli.training.config import load_config, parse_override

    assert parse_override("optim.lr=5e-4") == (["optim", "lr"], 5e-4)
    assert parse_override("mix.gain_db=[-3, 3]") == (["mix", "gain_db"], [-3, 3])
    assert parse_override("train.steps=7") == (["train", "steps"], 7)
    cfg = load_config(None, ["data.train=x", "optim.lr=3e-4"])
    assert cfg["optim"]["lr"] == 3e-4
