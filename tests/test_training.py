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
from macs_cli.training.data import (ClipBank, MixSpec, clips_from_csv, clips_from_folder,
                                    clips_from_fsd50k, load_clip_bank, mulaw_decode, mulaw_encode,
                                    synthesize)
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
    r = runner.invoke(app, ["train-sep", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "r"), "-q"])
    assert r.exit_code != 0 and "not found" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    r = runner.invoke(app, ["train-sep", "--config", str(bad), "-o", str(tmp_path / "r"), "-q"])
    assert r.exit_code != 0 and "not valid YAML" in r.output


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
