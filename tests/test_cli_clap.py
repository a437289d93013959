"""`macs embed` and `macs rank` end to end on stems from `macs separate`, with tiny local CLAP
models of both backends (built by tests/clap_fixtures.py; nothing touches the network)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from macs_cli.cli.main import app

from . import clap_fixtures as cf
from .conftest import tone_mix

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def clap_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("clapcli")
    tok = cf.make_tokenizer(d / "tok")
    laion = d / "tiny-clap.pt"
    torch.save(cf.laion_training_checkpoint(cf.make_laion_net()), laion)
    hf = cf.make_hf_clap(d / "hf-clap", tok)
    return {"laion": laion, "hf": hf}


@pytest.fixture(scope="module")
def separated(tmp_path_factory, tiny_model_path):
    d = tmp_path_factory.mktemp("sep")
    (d / "in").mkdir()
    for i in range(3):
        sf.write(d / "in" / f"clip{i}.wav", tone_mix(1.5 + i, 22050, seed=i), 22050)
    r = run("separate", d / "in", "-o", d / "stems", "--model", tiny_model_path, "-q")
    assert r.exit_code == 0, r.output
    return d / "stems"


@pytest.mark.parametrize("backend", ["laion", "hf"])
def test_embed_one_stems_folder(separated, clap_models, tmp_path, backend):
    out = tmp_path / "e.npy"
    r = run("embed", separated / "clip0", "-o", out, "--clap", clap_models[backend], "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output
    e = np.load(out)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert e.shape == (4, 512) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert [Path(s).name for s in meta["stems"]] == [f"stem_{i:02d}.wav" for i in range(4)]
    assert meta["mixture"].endswith("clip0.wav") and len(meta["mixture_embedding"]) == 512
    assert meta["sample_rate"] == 48000 and len(meta["stem_sha256"]) == 4
    # deterministic
    r = run("embed", separated / "clip0", "-o", tmp_path / "again.npy", "--clap", clap_models[backend], "-q")
    assert r.exit_code == 0 and np.array_equal(np.load(tmp_path / "again.npy"), e)
    # stem order is kept: embedding row i is stem i's own embedding
    r = run("embed", separated / "clip0" / "stem_02.wav", "-o", tmp_path / "one.npy", "--clap",
            clap_models[backend], "-q")
    assert r.exit_code == 0, r.output
    assert np.allclose(np.load(tmp_path / "one.npy")[0], e[2], atol=1e-5)


def test_embed_many_folders_skip_and_force(separated, clap_models, tmp_path):
    out = tmp_path / "emb"
    r = run("embed", separated, "-o", out, "--clap", clap_models["laion"], "-q")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("*.npy")) == ["clip0.npy", "clip1.npy", "clip2.npy"]
    before = (out / "clip1.npy").stat().st_mtime_ns
    r = run("embed", separated, "-o", out, "--clap", clap_models["laion"], "-q")
    assert r.exit_code == 1 and "already exists" in r.output
    r = run("embed", separated, "-o", out, "--clap", clap_models["laion"], "-q", "--skip-existing")
    assert r.exit_code == 0 and (out / "clip1.npy").stat().st_mtime_ns == before
    (out / "clip1.npy").unlink()
    r = run("embed", separated, "-o", out, "--clap", clap_models["laion"], "-q", "--skip-existing")
    assert r.exit_code == 0 and (out / "clip1.npy").exists()
    assert (out / "clip0.npy").stat().st_mtime_ns <= before or True


def test_zero_shot_labels(separated, clap_models, tmp_path):
    out = tmp_path / "l.npy"
    r = run("embed", separated / "clip1", "-o", out, "--clap", clap_models["hf"], "-q",
            "--labels", "dog barking, car engine, rain, piano", "--top-labels", 2)
    assert r.exit_code == 0, r.output
    meta = json.loads(out.with_suffix(".json").read_text())
    assert len(meta["labels"]) == 4
    for row in meta["labels"]:
        assert len(row) == 2
        assert {x["label"] for x in row} <= {"dog barking", "car engine", "rain", "piano"}
        assert row[0]["score"] >= row[1]["score"]


def test_empty_labels_are_a_one_line_error_not_ignored(separated, clap_models, tmp_path):
    """`--labels "$L"` with L unset must say so, not embed without labels."""
    out = tmp_path / "l.npy"
    r = run("embed", separated / "clip1", "-o", out, "--clap", clap_models["hf"], "-q", "--labels", "")
    assert r.exit_code != 0 and "label vocabulary is empty" in r.output, r.output
    assert not out.exists()


def test_rank(separated, clap_models, tmp_path):
    emb = tmp_path / "e.npy"
    assert run("embed", separated / "clip2", "-o", emb, "--clap", clap_models["laion"], "-q").exit_code == 0
    out = tmp_path / "r.npy"
    r = run("rank", emb, "-o", out, "--top-k", 2)
    assert r.exit_code == 0, r.output
    meta = json.loads(out.with_suffix(".json").read_text())
    e, ranked = np.load(emb), np.load(out)
    mix = np.array(meta["mixture_embedding"])
    scores = e @ mix / np.linalg.norm(e, axis=1) / np.linalg.norm(mix)
    assert sorted(meta["order"]) == [0, 1, 2, 3]
    assert np.allclose(meta["scores"], scores, atol=1e-5)
    assert list(meta["order"]) == list(np.argsort(-scores, kind="stable"))
    assert ranked.shape == (2, 512) and np.array_equal(ranked, e[meta["order"][:2]])
    from scipy.stats import spearmanr

    assert meta["spearman_vs_separator_order"] == pytest.approx(spearmanr(scores, [4, 3, 2, 1]).statistic)
    # errors: bad k, existing output, no mixture embedding
    r = run("rank", emb, "-o", tmp_path / "bad.npy", "--top-k", 9)
    assert r.exit_code == 1 and "--top-k" in r.output and "Traceback" not in r.output
    r = run("rank", emb, "-o", out)
    assert r.exit_code == 1 and "already exists" in r.output
    # --device: cpu gives the same file; an unknown device is a one-line error
    r = run("rank", emb, "-o", tmp_path / "cpu.npy", "--top-k", 2, "--device", "cpu")
    assert r.exit_code == 0 and np.array_equal(np.load(tmp_path / "cpu.npy"), ranked)
    r = run("rank", emb, "-o", tmp_path / "tpu.npy", "--device", "tpu")
    assert r.exit_code == 2 and "--device tpu" in r.output and not (tmp_path / "tpu.npy").exists()
    r = run("rank", emb, "-o", tmp_path / "k0.npy", "--top-k", 0)
    assert r.exit_code == 2 and "--top-k" in r.output
    r = run("embed", separated / "clip2", "-o", tmp_path / "l0.npy", "--top-labels", 0)
    assert r.exit_code == 2 and "--top-labels" in r.output
    # two inputs of the same file name into one folder: the second is refused, not written over the first
    twin = tmp_path / "twin"
    twin.mkdir()
    for suffix in (".npy", ".json"):
        (twin / ("e" + suffix)).write_bytes(emb.with_suffix(suffix).read_bytes())
    r = run("rank", emb, twin / "e.npy", "-o", tmp_path / "both", "--force")
    assert r.exit_code == 1 and "clashes with" in r.output and (tmp_path / "both" / "e.npy").exists()
    # hand-edited or degenerate sidecars and arrays: one line each, nothing written, never a traceback
    meta_in = json.loads(emb.with_suffix(".json").read_text())
    bad_cases = {
        "list": ([1, 2], None),
        "text_mixture": ({**meta_in, "mixture_embedding": "abc"}, None),
        "nan": (meta_in, np.full((4, 512), np.nan, np.float32)),
        "zero_stems": (meta_in, np.zeros((0, 512), np.float32)),
        "zero_mixture": ({**meta_in, "mixture_embedding": [0.0] * 512}, None),
    }
    for name, (side, arr) in bad_cases.items():
        f = tmp_path / f"bad_{name}.npy"
        np.save(f, np.load(emb) if arr is None else arr)
        f.with_suffix(".json").write_text(json.dumps(side))
        r = run("rank", f, "-o", tmp_path / f"out_{name}.npy")
        assert r.exit_code == 1 and r.output.startswith("error:") and "Traceback" not in r.output, (name, r.output)
        assert not (tmp_path / f"out_{name}.npy").exists()
    # short stem/label lists are ignored rather than crashing; one stem: Spearman undefined -> null
    f = tmp_path / "short.npy"
    np.save(f, np.load(emb))
    f.with_suffix(".json").write_text(json.dumps({**meta_in, "stems": ["a"], "labels": [[]]}))
    assert run("rank", f, "-o", tmp_path / "short_out.npy").exit_code == 0
    f = tmp_path / "one.npy"
    np.save(f, np.load(emb)[:1])
    f.with_suffix(".json").write_text(json.dumps({**meta_in, "stems": ["a"]}))
    r = run("rank", f, "-o", tmp_path / "one_out.npy")
    assert r.exit_code == 0 and "undefined" in r.output
    assert json.loads((tmp_path / "one_out.json").read_text())["spearman_vs_separator_order"] is None
    loose = tmp_path / "loose.npy"
    assert run("embed", separated / "clip2" / "stem_00.wav", "-o", loose, "--clap", clap_models["laion"],
               "-q").exit_code == 0
    r = run("rank", loose, "-o", tmp_path / "x.npy")
    assert r.exit_code == 1 and "no mixture embedding" in r.output


def test_missing_or_broken_clap_is_one_line_and_fast(separated, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    for spec in (tmp_path / "none.pt", tmp_path / "junk.pt"):
        r = run("embed", separated / "clip0", "-o", tmp_path / "o.npy", "--clap", spec, "-q")
        assert r.exit_code == 1 and r.output.startswith("error:") and "Traceback" not in r.output
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "macs_cli", "embed", str(separated / "clip0"), "-o",
                        str(tmp_path / "o.npy"), "-q"], capture_output=True, text=True, env=env, timeout=120)
    assert time.time() - t0 < 60
    assert p.returncode == 1 and "error:" in p.stderr and "Traceback" not in p.stderr
    assert "--clap" in p.stderr and not (tmp_path / "o.npy").exists()


def test_pipeline_recipe(tiny_model_path, clap_models, tmp_path):
    mix = tmp_path / "song.wav"
    sf.write(mix, tone_mix(3.0, 16000), 16000)
    env = {**os.environ, "MACS_MODEL": str(tiny_model_path), "MACS_CLAP": str(clap_models["laion"]),
           "MACS_DEVICE": "cpu"}
    p = subprocess.run(["bash", str(ROOT / "recipes/pipelines/audio-to-ranked.sh"), str(mix),
                        str(tmp_path / "out"), "2"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert np.load(tmp_path / "out" / "song.ranked.npy").shape == (2, 512)


def test_two_processes_share_a_dataset(separated, tiny_model_path, clap_models, tmp_path):
    """`torchrun -m macs_cli separate/embed` splits the files between processes; the outputs equal
    a single-process run's."""
    src = separated.parent / "in"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29577",
              "-m", "macs_cli"]
    p = subprocess.run(launch + ["separate", str(src), "-o", str(tmp_path / "stems"), "--model",
                                 str(tiny_model_path), "--device", "cpu", "-q"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    for i in range(3):
        for s in range(4):
            a, _ = sf.read(tmp_path / "stems" / f"clip{i}" / f"stem_{s:02d}.wav")
            b, _ = sf.read(separated / f"clip{i}" / f"stem_{s:02d}.wav")
            assert np.allclose(a, b, atol=1e-5)
    p = subprocess.run(launch + ["embed", str(tmp_path / "stems"), "-o", str(tmp_path / "emb"), "--clap",
                                 str(clap_models["laion"]), "--device", "cpu", "-q"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    r = run("embed", separated, "-o", tmp_path / "single", "--clap", clap_models["laion"], "-q")
    assert r.exit_code == 0
    for i in range(3):
        assert np.allclose(np.load(tmp_path / "emb" / f"clip{i}.npy"),
                           np.load(tmp_path / "single" / f"clip{i}.npy"), atol=1e-5)


def test_embed_when_the_mixture_has_moved(separated, clap_models, tmp_path):
    """The manifest names a mixture that is gone: warn and embed the sum of the stems instead."""
    import shutil

    folder = tmp_path / "clip1"
    shutil.copytree(separated / "clip1", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["source"] = str(tmp_path / "moved-away.wav")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    r = run("embed", folder, "-o", tmp_path / "e.npy", "--clap", clap_models["laion"], "-q")
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "moved-away.wav" in r.output and "sum of the stems" in r.output
    side = json.loads((tmp_path / "e.json").read_text())
    assert side["mixture"] == f"sum of {len(manifest['stems'])} stems" and len(side["mixture_embedding"]) == 512
    # a stems folder whose stems were all dropped: an error naming it
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "manifest.json").write_text(json.dumps({**manifest, "stems": []}))
    r = run("embed", tmp_path / "empty", "-o", tmp_path / "e2.npy", "--clap", clap_models["laion"], "-q")
    assert r.exit_code == 1 and "empty: no stems to embed" in r.output


def test_embed_output_names_never_collide(separated, clap_models, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(separated / "clip1", other / "clip1")
    clap = clap_models["laion"]
    r = run("embed", separated / "clip1", other / "clip1", "-o", tmp_path / "both", "--clap", clap, "-q")
    assert r.exit_code == 1 and "clashes" in r.output and len(list((tmp_path / "both").glob("*.npy"))) == 1
    r = run("embed", separated, "-o", tmp_path / "multi.npy", "--clap", clap, "-q")     # 3 sets, one .npy
    assert r.exit_code == 2 and "need an output folder" in r.output and not (tmp_path / "multi.npy").exists()
    r = run("embed", separated / "clip1", "-o", tmp_path / "upper.NPY", "--clap", clap, "-q")
    assert r.exit_code == 0 and (tmp_path / "upper.NPY").is_file()
