"""Nothing a user has is lost (issue 9), for the trainers and generation: the run folder, the log
after a resume, stale checkpoint temporaries, resuming from the run's own config, generation bounds
and non-finite images, FIFOs in train-gen data, stdout of the trainers and of generate/eval."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from macs_cli.cli.main import app

from . import gen_fixtures as gf
from .gen_fixtures import tiny_sd  # noqa: F401  (a fixture)
from .safety_tools import age, env, macs_cmd

runner = CliRunner()
TINY = ["model.channels=4", "model.depth=3", "model.num_sources=4", "model.window_seconds=1.0",
        "validation.mixtures=2", "validation.every=2", "checkpoint.every=2", "log.every=1",
        "optim.batch_size=2"]


def sets(*extra):
    return [x for s in (*TINY, *extra) for x in ("--set", s)]


def train(run_dir, data, steps, *extra):
    return runner.invoke(app, ["train-sep", "--data", str(data), "-o", str(run_dir), "--steps", str(steps),
                               "--device", "cpu", "-q", *sets(), *[str(e) for e in extra]])


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def steps_logged(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_a_run_without_its_checkpoint_is_not_replaced(tmp_path, clip_folder):
    run_dir = tmp_path / "run"
    assert train(run_dir, clip_folder, 2).exit_code == 0
    (run_dir / "checkpoint.pt").unlink()              # deleted to save space after training
    before = {n: sha(run_dir / n) for n in ("separator.safetensors", "config.yaml", "metrics.csv")}
    r = train(run_dir, clip_folder, 2)
    assert r.exit_code == 1 and "already holds a run" in r.stderr
    r = train(run_dir, clip_folder, 2, "--resume")
    assert r.exit_code == 1 and "needs its checkpoint.pt" in r.stderr
    assert {n: sha(run_dir / n) for n in before} == before
    # --force removes only files recognised as the run's: a recipe of the user's named config.yaml stays
    mine = tmp_path / "recipe"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: notes\n")
    r = train(mine, clip_folder, 2, "--force")
    assert r.exit_code == 1 and "is not a file of a macs train-sep run" in r.stderr
    assert (mine / "config.yaml").read_text() == "my: notes\n"
    r = train(run_dir, clip_folder, 2, "--force", "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["path"] == str(run_dir / "separator.safetensors") and rec["step"] == 2


def test_force_keeps_another_tools_checkpoint(tmp_path, clip_folder):
    """A folder holding some other training's checkpoint.pt (a torch zip like ours) is not a macs run:
    --force refuses it and leaves the file, while a real run's checkpoint is still recognised."""
    import torch

    other = tmp_path / "theirs"
    other.mkdir()
    torch.save({"model": {"w": torch.zeros(3)}, "epoch": 40, "optimizer": {}, "step": 7}, other / "checkpoint.pt")
    before = sha(other / "checkpoint.pt")
    r = train(other, clip_folder, 2, "--force")
    assert r.exit_code == 1 and "checkpoint.pt: is not a file of a macs train-sep run" in r.stderr
    assert sha(other / "checkpoint.pt") == before and sorted(p.name for p in other.iterdir()) == ["checkpoint.pt"]
    run_dir = tmp_path / "run"
    assert train(run_dir, clip_folder, 2).exit_code == 0
    assert train(run_dir, clip_folder, 2, "--force").exit_code == 0


def test_force_never_deletes_the_model_a_run_starts_from(tmp_path, clip_folder):
    """Fine-tuning a run's model in place (train.init=RUN, or its separator.safetensors) with --force
    would delete the very model it starts from: refused, the run left as it was."""
    run_dir = tmp_path / "run"
    assert train(run_dir, clip_folder, 2).exit_code == 0
    before = {n: sha(run_dir / n) for n in ("separator.safetensors", "checkpoint.pt", "config.yaml")}
    for init in (run_dir, run_dir / "separator.safetensors"):
        r = train(run_dir, clip_folder, 2, "--force", "--set", f"train.init={init}")
        assert r.exit_code == 1 and "which --force would delete" in r.stderr, r.stderr
        assert {n: sha(run_dir / n) for n in before} == before
    copy = tmp_path / "start.safetensors"
    copy.write_bytes((run_dir / "separator.safetensors").read_bytes())
    (tmp_path / "start.json").write_bytes((run_dir / "separator.json").read_bytes())
    assert train(run_dir, clip_folder, 2, "--force", "--set", f"train.init={copy}").exit_code == 0


def test_force_keeps_a_samples_folder_holding_more_than_samples(tmp_path):
    """samples/ is train-gen's only while it holds step_NNNNNN.png files (and their temporaries): a
    hidden folder of the user's inside it (.git/) keeps the whole folder."""
    from macs_cli.training.gen_trainer import GenTrainer

    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "step_000010.png").write_bytes(b"png")
    (samples / ".git").mkdir()
    (samples / ".git" / "HEAD").write_text("ref: refs/heads/main")
    assert GenTrainer.clear_run(tmp_path) == [] and (samples / ".git" / "HEAD").exists()
    import shutil

    shutil.rmtree(samples / ".git")
    (samples / ".step_000020.png.77-0a1b2c3d.macs-tmp.png").write_bytes(b"")
    # alone, a folder of step_*.png files is not enough to say the folder is a run's
    assert GenTrainer.clear_run(tmp_path) == [] and samples.exists()
    (tmp_path / "config.yaml").write_text("train: {steps: 10}\noptim: {lr: 0.001}\n")
    assert GenTrainer.clear_run(tmp_path) == ["config.yaml", "samples"] and not samples.exists()


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(tmp_path, clip_folder):
    """Two train-sep runs started on the same new -o both passed the folder check (made before the
    data load) and then interleaved their checkpoint, model and log, both exiting 0. The run holds
    a lock on its folder: here the test holds it, as a first run would, and the second is refused."""
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fd = os.open(run_dir, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        r = train(run_dir, clip_folder, 2)
    finally:
        os.close(fd)
    assert r.exit_code == 1 and "another macs run is using this run folder" in r.stderr
    assert list(run_dir.iterdir()) == []
    assert train(run_dir, clip_folder, 2).exit_code == 0
    fresh = tmp_path / "new"                      # a run that fails before writing leaves no folder behind
    r = train(fresh, tmp_path / "no-such-data", 2)
    assert r.exit_code != 0 and not fresh.exists()


def test_metrics_survive_a_kill_right_after_resume(tmp_path, clip_folder):
    """Real processes: a run to step 3, then a resume killed (kill -9 equivalent: os._exit) just after
    it has opened its log, before the first step; the log still holds steps 1..3."""
    run_dir = tmp_path / "run"
    base = ["--data", clip_folder, "-o", run_dir, "--device", "cpu", "-q", *sets()]
    subprocess.run(macs_cmd("train-sep", "--steps", "3", *base), check=True, env=env(), capture_output=True)
    assert steps_logged(run_dir) == [1, 2, 3]
    r = subprocess.run(macs_cmd("train-sep", "--steps", "5", "--resume", *base), env=env(MACS_FAULT_AFTER_STEP="log"),
                       capture_output=True, text=True)
    assert r.returncode == 137, r.stderr
    assert steps_logged(run_dir) == [1, 2, 3]          # the rows up to the checkpoint's step stay
    subprocess.run(macs_cmd("train-sep", "--steps", "5", "--resume", *base), check=True, env=env(), capture_output=True)
    assert steps_logged(run_dir) == [1, 2, 3, 4, 5]


def test_metrics_survive_a_full_disk_at_resume(tmp_path, clip_folder, monkeypatch):
    """Fault injected in-process: writing the rewritten log fails with ENOSPC."""
    run_dir = tmp_path / "run"
    assert train(run_dir, clip_folder, 3).exit_code == 0
    before = (run_dir / "metrics.csv").read_text()

    def full(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", full)
    r = train(run_dir, clip_folder, 5, "--resume")
    monkeypatch.undo()
    assert r.exit_code == 1 and "No space left on device" in r.stderr
    assert (run_dir / "metrics.csv").read_text() == before
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]


def test_resume_reads_the_runs_own_config_and_paths_compare_resolved(tmp_path, clip_folder, monkeypatch):
    monkeypatch.chdir(clip_folder.parent)
    run_dir = tmp_path / "run"
    r = runner.invoke(app, ["train-sep", "--data", clip_folder.name, "-o", str(run_dir), "--steps", "2",
                            "--device", "cpu", "-q", *sets()])
    assert r.exit_code == 0, r.stderr
    import yaml

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["data"]["train"] == str(clip_folder)            # stored absolute
    monkeypatch.chdir(tmp_path)                                   # elsewhere, nothing repeated
    r = runner.invoke(app, ["train-sep", "-o", str(run_dir), "--resume", "--steps", "3", "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    assert "changed settings" not in r.stderr and steps_logged(run_dir) == [1, 2, 3]
    # the same data named relatively: not a change
    monkeypatch.chdir(clip_folder.parent)
    r = runner.invoke(app, ["train-sep", "-o", str(run_dir), "--resume", "--steps", "4", "--data", clip_folder.name,
                            "--device", "cpu", "-q"])
    assert r.exit_code == 0 and "changed settings" not in r.stderr, r.stderr


def test_stale_checkpoint_temporaries_are_cleared_at_the_next_start(tmp_path, clip_folder):
    import fcntl

    run_dir = tmp_path / "run"
    assert train(run_dir, clip_folder, 2).exit_code == 0
    stale = run_dir / ".checkpoint.pt.4242-0a1b2c3d.macs-tmp.pt"
    stale.write_bytes(b"x" * 100_000)
    legacy = run_dir / ".checkpoint.pt.k2j3h4g5.tmp.pt"
    legacy.write_bytes(b"x" * 100_000)
    held = run_dir / ".checkpoint.pt.4343-0a1b2c3e.macs-tmp.pt"
    held.write_bytes(b"x")
    for p in (stale, legacy, held):
        age(p, 2 * 86400)
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)         # as if a live run were writing it
    try:
        r = subprocess.run(macs_cmd("train-sep", "--data", clip_folder, "-o", run_dir, "--steps", "3", "--resume",
                                    "--device", "cpu", "-q", *sets()), env=env(), capture_output=True, text=True)
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and not legacy.exists() and held.exists()


# -- generation --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def adapter(tiny_sd, tmp_path_factory):  # noqa: F811
    import torch

    from macs_cli.generation import MacsGenerator, load_backbone
    from macs_cli.generation.adapter import AdapterConfig
    from macs_cli.generation.checkpoints import save_adapter

    gen = MacsGenerator.from_pipeline(load_backbone(str(tiny_sd)),
                                      config=AdapterConfig(num_tokens=4, cross_attention_dim=gf.CROSS_DIM,
                                                           hidden_dim=64))
    torch.manual_seed(0)
    return save_adapter(gen.adapter, tmp_path_factory.mktemp("ad") / "adapter.safetensors", sd_model=str(tiny_sd))


FAST = ["--steps", "2", "--height", "64", "--width", "64", "--device", "cpu", "-q"]


@pytest.mark.parametrize("args, needle", [(["--guidance", "1e308"], "--guidance must be in 0..100"),
                                          (["--height", "65536"], "--height must be a multiple of 8 in 64..4096"),
                                          (["--width", "8192"], "--width"),
                                          (["--audio-scale", "1e300"], "--audio-scale")])
def test_generate_bounds(adapter, tmp_path, args, needle):
    emb = gf.write_embeddings(tmp_path / "e.npy", gf.random_embeddings(4))
    r = gf.run("generate", "-e", emb, "--adapter", adapter, "-o", tmp_path / "x.png", *FAST, *args)
    assert r.exit_code == 2 and needle in r.output and not (tmp_path / "x.png").exists()


def test_a_non_finite_image_is_an_error_not_a_black_png(adapter, tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel

    real = UNet2DConditionModel.forward

    def nan_forward(self, *a, **k):
        out = real(self, *a, **k)
        (out[0] if isinstance(out, tuple) else out.sample).fill_(float("nan"))
        return out

    monkeypatch.setattr(UNet2DConditionModel, "forward", nan_forward)
    emb = gf.write_embeddings(tmp_path / "e.npy", gf.random_embeddings(4))
    r = gf.run("generate", "-e", emb, "--adapter", adapter, "-o", tmp_path / "x.png", *FAST)
    assert r.exit_code == 1 and "NaN or infinite" in r.output
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.json").exists()


def test_generate_prints_images_and_force_replaces_only_its_own(adapter, tmp_path):
    emb = gf.write_embeddings(tmp_path / "in" / "e.npy", gf.random_embeddings(4))
    out = tmp_path / "imgs"
    r = gf.run("generate", "-e", emb, "--adapter", adapter, "-o", out, "--seed", "1", "--json", *FAST)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["path"] == str(out / "e.png") and rec["seed"] == 1 and Path(rec["sidecar"]).exists()
    assert json.loads((out / "e.json").read_text())["format"] == "macs-image-v1"
    r = gf.run("generate", "-e", emb, "--adapter", adapter, "-o", out, "--seed", "2", "--force", *FAST)
    assert r.exit_code == 0 and json.loads((out / "e.json").read_text())["seed"] == 2
    # a picture of the user's at the output path is never replaced, not even with --force
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "mine.png")
    r = gf.run("generate", "-e", emb, "--adapter", adapter, "-o", tmp_path / "mine.png", "--force", *FAST)
    assert r.exit_code == 1 and "is not a macs generate image" in r.output
    # -o next to the input: its sidecar would be replaced
    r = gf.run("generate", "-e", emb, "--adapter", adapter, "-o", tmp_path / "in", "--force", *FAST)
    assert r.exit_code == 1 and "is one of the inputs" in r.output


# -- train-gen data with FIFOs and devices ---------------------------------------------------------
def test_train_gen_csv_with_fifos_and_devices(tmp_path):
    from macs_cli.errors import MacsError
    from macs_cli.training.gen_data import Clip, PairedData, ImagePair as Pair, _precomputed, drop_unreadable_images

    os.mkfifo(tmp_path / "img.png")
    os.mkfifo(tmp_path / "emb.npy")
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    data = PairedData([Clip("", [], None)], [Pair(str(tmp_path / "img.png"), 0), Pair("/dev/zero", 0),
                                            Pair(str(tmp_path / "ok.png"), 0)], "test")
    kept, dropped = drop_unreadable_images(data)        # returns at once: nothing waits on the FIFO
    assert len(kept.pairs) == 1 and any("not a regular file (a pipe)" in d for d in dropped)
    assert any("/dev/zero: not a regular file (a device)" in d for d in dropped)
    with pytest.raises(MacsError, match="not a regular file"):
        _precomputed(Clip("", [], str(tmp_path / "emb.npy")))
    from macs_cli.training.gen_data import clip_embeddings

    with pytest.raises(MacsError, match="/dev/zero: not a regular file"):
        clip_embeddings(PairedData([Clip("/dev/zero", [])], [], "t"), lambda: None, None)


def test_eval_prints_its_report_files(tmp_path):
    import soundfile as sf

    for d in ("pred/a", "ref/a"):
        (tmp_path / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    s = [0.1 * rng.standard_normal(8000).astype(np.float32) for _ in range(2)]
    for i, x in enumerate(s):
        sf.write(tmp_path / "ref" / "a" / f"s{i}.wav", x, 8000)
        sf.write(tmp_path / "pred" / "a" / f"stem_{i:02d}.wav", x + 0.01 * rng.standard_normal(8000).astype(np.float32),
                 8000)
    r = runner.invoke(app, ["eval", "--task", "separation", "--pred", str(tmp_path / "pred"), "--ref",
                            str(tmp_path / "ref"), "-o", str(tmp_path / "rep"), "-q"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [str(tmp_path / "rep" / n) for n in ("report.json", "report.md", "report.png")]
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["format"] == "macs-report-v1"
    (tmp_path / "rep2").mkdir()
    (tmp_path / "rep2" / "report.md").write_text("my notes")
    r = runner.invoke(app, ["eval", "--task", "separation", "--pred", str(tmp_path / "pred"), "--ref",
                            str(tmp_path / "ref"), "-o", str(tmp_path / "rep2"), "-q", "--force"])
    assert r.exit_code == 1 and "never replaced" in r.output
    assert (tmp_path / "rep2" / "report.md").read_text() == "my notes"


def test_force_leaves_loose_look_alikes_without_a_run_beside_them(tmp_path, clip_folder):
    """metrics.csv (a CSV whose header starts with step) and curves.png (any PNG) are recognised by a
    light check, so --force removes them only where a run's config, checkpoint or model says the
    folder is a run: a user's plots folder is left alone."""
    from macs_cli.formats import PNG_MAGIC

    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "metrics.csv").write_text("step,accuracy\n1,0.5\n2,0.7\n")
    (plots / "curves.png").write_bytes(PNG_MAGIC + b"my own figure")
    before = {n: sha(plots / n) for n in ("metrics.csv", "curves.png")}
    r = train(plots, clip_folder, 2, "--force")
    assert r.exit_code == 1 and "no config.yaml, checkpoint or model of a macs train-sep run" in r.stderr
    assert {n: sha(plots / n) for n in before} == before and sorted(os.listdir(plots)) == sorted(before)
    # a finished run whose checkpoint and config were deleted still has its model: --force may go on
    run_dir = tmp_path / "run"
    assert train(run_dir, clip_folder, 2).exit_code == 0
    (run_dir / "checkpoint.pt").unlink()
    (run_dir / "config.yaml").unlink()
    # mark the old model with an old modification time: the bytes of two 2-step runs can be
    # identical (as under the full suite), and a freed inode number can be reused, so neither shows
    # that the file was written again
    os.utime(run_dir / "separator.safetensors", (1_000_000_000, 1_000_000_000))
    r = train(run_dir, clip_folder, 2, "--force")
    assert r.exit_code == 0, r.output
    assert os.stat(run_dir / "separator.safetensors").st_mtime > 1_000_000_000 + 1 and (run_dir / "checkpoint.pt").exists()


def test_a_run_that_fails_before_writing_leaves_no_folders(tmp_path):
    """-o a/b/run with missing a/ and b/: a run that fails at its data check removes the run folder and
    the parents it made, and no folder that was there before."""
    keep = tmp_path / "keep"
    keep.mkdir()
    r = train(keep / "a" / "b" / "run", tmp_path / "nowhere", 1)
    assert r.exit_code == 1 and "training data not found" in r.stderr
    assert os.listdir(tmp_path) == ["keep"] and os.listdir(keep) == []
