"""What the thin verbs hand to the library: the batch runner (naming clashes, --skip-existing,
sharding across processes, per-input errors), driven in memory and through `macs separate`."""

import json
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from macs_cli.cli.batch import Batch
from macs_cli.cli.main import app
from macs_cli.errors import MacsError
from macs_cli.fsutil import OutputKind

from .conftest import tone_mix

runner = CliRunner()
ANY = OutputKind("test output", lambda p: Path(p).read_text() == "ours")


def plan(tmp_path, names, **kw):
    batch = Batch("test", lambda t: [(t, ANY)], **kw)
    for n in names:
        batch.add(n, n, tmp_path / n.split("/")[-1])
    return batch


def test_batch_clash_skip_and_check_in_memory(tmp_path, capsys):
    (tmp_path / "b").write_text("ours")
    (tmp_path / "c").write_text("someone else's")
    batch = plan(tmp_path, ["x/a", "y/a", "b", "c"], skip_existing=True)
    assert [j.name for j in batch.jobs] == ["x/a"]
    assert "y/a: its output" in batch.problems[0] and "clashes with that of x/a" in batch.problems[0]
    assert "c: exists and is not a test output" in batch.problems[1] and len(batch.problems) == 2
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "b")]   # the kept output is listed
    batch.add("d", "d", tmp_path / "d", check=lambda: (_ for _ in ()).throw(MacsError("d: unreadable")))
    assert batch.problems[-1] == "d: unreadable" and len(batch.jobs) == 1
    batch.add("e", "e", tmp_path / "e", check=lambda: 42)
    assert batch.jobs[-1].data == 42


def test_batch_shares_jobs_and_only_the_first_process_reports(tmp_path, monkeypatch, capsys):
    (tmp_path / "a").write_text("ours")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, expect in (("0", ["c"]), ("1", ["b", "d"])):   # every 2nd input given, whatever exists
        monkeypatch.setenv("RANK", rank)
        batch = Batch("test", lambda t: [(t, ANY)], skip_existing=True)
        batch.report(["a problem of the inputs"])
        for n in ["a", "b", "c", "d", "x/b"]:
            batch.add(n, n, tmp_path / n.split("/")[-1])
        assert [j.name for j in batch.share()] == expect
        out = capsys.readouterr()
        assert (str(tmp_path / "a") in out.out) == (rank == "0")    # a skipped output is listed once
        # x/b (input 4, the first process's) clashes with b (the second's): told once, by its owner
        assert batch.problems == ([] if rank == "1" else ["a problem of the inputs", batch.problems[1]])
        assert rank == "1" or "x/b: its output" in batch.problems[1]


def test_batch_run_counts_amounts_and_keeps_going(tmp_path):
    batch = plan(tmp_path, ["a", "b", "c"])
    seen = []

    def work(job):
        job.advance(1.5)
        if job.name == "b":
            raise MacsError("b: broken")
        seen.append(job.name)
        return {"n": job.name}

    batch.run(work, amount=lambda job: 2.0)
    assert seen == ["a", "c"] and batch.done == ["a", "c"] and batch.problems == ["b: broken"]
    assert batch.emit.count == 2


def _sources(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i, n in enumerate("abc"):
        sf.write(src / f"{n}.wav", tone_mix(1.0, 16000, seed=i), 16000)
    return src


def test_separate_skip_existing_and_shards(tiny_model_path, tmp_path, monkeypatch):
    src, out = _sources(tmp_path), tmp_path / "out"
    r = runner.invoke(app, ["separate", str(src / "a.wav"), "-o", str(out), "--model", str(tiny_model_path), "-q"])
    assert r.exit_code == 0, r.output
    monkeypatch.setenv("WORLD_SIZE", "2")
    records = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        r = runner.invoke(app, ["separate", str(src), "-o", str(out), "--model", str(tiny_model_path),
                                "--skip-existing", "--json"])
        assert r.exit_code == 0, r.output
        records[rank] = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
        assert f"[process {int(rank) + 1}/2]" in " ".join(r.output.split())
    # inputs a, b, c: the first process owns a (kept) and c, the second b; each says so once
    assert [(Path(x["path"]).name, x["skipped"]) for x in records["0"]] == [("a", True), ("c", False)]
    assert [(Path(x["path"]).name, x["skipped"]) for x in records["1"]] == [("b", False)]
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c"]
    assert all((out / n / "manifest.json").is_file() for n in "abc")


def test_separate_bad_input_fails_alone(tiny_model_path, tmp_path):
    src, out = _sources(tmp_path), tmp_path / "out"
    (src / "bad.wav").write_bytes(b"not audio at all")
    r = runner.invoke(app, ["separate", str(src), "-o", str(out), "--model", str(tiny_model_path)])
    said = " ".join(r.output.split())
    assert r.exit_code == 1 and "bad.wav" in said and "3 separated into" in said and "1 failed" in said
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c"]


# -- generate: inputs, names and clashes, planned in memory before any model loads -------------------
def _npy(path, shape):
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.random.default_rng(0).standard_normal(shape).astype("float32"))
    return path


def test_generate_job_names_each_image(tmp_path):
    from macs_cli.generation.files import GenerateInputs, GenerateJob

    a, b = _npy(tmp_path / "in" / "a.npy", (3, 512)), _npy(tmp_path / "in" / "b.npy", (2, 3, 512))
    job = GenerateJob.plan(GenerateInputs([a, b]), tmp_path / "out", 2, seed=5, stem_order="significance")
    assert sorted(job.targets) == ["a_00", "a_01", "b_000_00", "b_000_01", "b_001_00", "b_001_01"]
    assert job.inputs[1].names[(1, 6)] == "b_001_01" and job.targets["a_00"] == tmp_path / "out" / "a_00.png"
    assert job.inputs[0].record["stem_order"] == "as given" and not job.single
    one = GenerateJob.plan(GenerateInputs([a]), tmp_path / "one.png", 1, seed=0, stem_order="significance")
    assert one.single and one.targets == {"a": tmp_path / "one.png"}
    frames = GenerateJob.plan(GenerateInputs(interpolate=(a, a.parent / "a.npy"), frames=3), tmp_path / "f", 1, 0,
                              "significance")
    assert sorted(frames.targets) == ["contact_sheet", "frame_000", "frame_001", "frame_002"]


def test_generate_job_refuses_clashes_before_anything_loads(tmp_path):
    from macs_cli.errors import ConfigError, OutputExistsError
    from macs_cli.generation.files import GenerateInputs, GenerateJob, check_options

    a, a2 = _npy(tmp_path / "x" / "a.npy", (3, 512)), _npy(tmp_path / "y" / "a.npy", (3, 512))
    cases = [(GenerateInputs([a, a2]), tmp_path / "out", ConfigError, "same file name"),
             (GenerateInputs([a, a2]), tmp_path / "out.png", ConfigError, "one PNG holds one image"),
             (GenerateInputs([a]), tmp_path / "out.jpg", ConfigError, "written as PNG"),
             (GenerateInputs([a]), tmp_path / "x", MacsError, "is one of the inputs")]   # x/a.json: a's sidecar
    for given, out, error, needle in cases:
        with pytest.raises(error, match=needle):
            GenerateJob.plan(given, out, 1, 0, "significance")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.png").write_bytes(b"a picture of the user's")
    with pytest.raises(OutputExistsError, match="never replaced"):
        GenerateJob.plan(GenerateInputs([a]), tmp_path / "mine", 1, 0, "significance", force=True)
    with pytest.raises(ConfigError, match="--frames"):
        check_options(True, 1, 1, False, None)
    with pytest.raises(ConfigError, match="do not apply"):
        check_options(True, 4, 2, False, None)
    with pytest.raises(ConfigError, match="--order"):
        check_options(False, 8, 1, False, "loudest")


# -- eval: what is said about a run -----------------------------------------------------------------
def test_eval_rules_in_memory(tmp_path):
    from macs_cli.evaluation.run import EvalRequest, skipped_items, summary_lines, unpaired_warnings

    lines = unpaired_warnings({"unpaired_pred": ["a/x.png", "b/y.png", "c.png", "d.png"], "unpaired_gt": []}, "images")
    assert lines == ["4 generated images without a ground-truth match (x.png, y.png, c.png, ...)"]
    report = {"task": "separation", "pairing": {"scored": 3, "skipped": [
        {"name": "s1", "reason": "no stems", "kind": "error"}, {"name": "s2", "reason": "silent"}]},
        "results": {"sisdri_grouped": {"mean": 1.234, "median": None},
                    "sisdri_one_to_one": {"mean": 0.5, "median": 0.25}}}
    assert skipped_items(report) == [(True, "s1: skipped (no stems)"), (False, "s2: skipped (silent)")]
    assert summary_lines(report, Path("r/report.md")) == [
        "SI-SDRi best grouping: mean 1.23 dB, median – dB; best one-to-one: mean 0.50 dB, median 0.25 dB (3 items)",
        "report: r/report.md"]
    with pytest.raises(Exception, match="expected images or separation"):
        EvalRequest("audio", tmp_path, tmp_path / "rep").check()
    (tmp_path / "file").write_text("x")
    with pytest.raises(MacsError, match="is not a folder"):
        EvalRequest("images", tmp_path, tmp_path / "file").check()


def test_the_stem_manifest_and_image_record_readers(tmp_path):
    """One reader for each file format that separate and generate write."""
    import json

    import numpy as np

    from macs_cli.errors import MacsError
    from macs_cli.formats import IMAGE_FORMAT, read_image_record, read_stem_manifest
    from macs_cli.generation.files import write_image
    from macs_cli.generation.pipeline import GeneratedImage

    m = tmp_path / "manifest.json"
    m.write_text(json.dumps({"format": "macs-stems-v1", "source": "a.wav", "stems": [{"file": "stem_00.wav"}]}))
    assert read_stem_manifest(m)["stems"] == [{"file": "stem_00.wav"}]
    for bad, needle in [('{"stems": {}}', "'stems' is not a list"), ("[]", "not a JSON object"), ("{", "unreadable")]:
        m.write_text(bad)
        with pytest.raises(MacsError, match=needle):
            read_stem_manifest(m)
    with pytest.raises(MacsError, match="no such manifest"):
        read_stem_manifest(tmp_path / "none.json")

    from PIL import Image

    img = GeneratedImage(image=Image.fromarray(np.zeros((8, 8, 3), np.uint8)), seed=3, source_index=0)
    png = tmp_path / "x.png"
    write_image(png, img, {"seed": 3, "settings": {"steps": 2}, "command": "macs generate"}, None)
    rec = read_image_record(png)
    assert rec["format"] == IMAGE_FORMAT and rec["seed"] == 3 and rec["image"] == "x.png"
    (tmp_path / "y.json").write_text('{"seed": 1}')
    with pytest.raises(MacsError, match="not a macs generate image record"):
        read_image_record(tmp_path / "y.png")
