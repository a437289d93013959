"""The one weights layer (macs_cli.weights.hub) and `macs weights`, on fake Hugging Face caches
built here (nothing touches the network)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from macs_cli.cli.main import app
from macs_cli.errors import ModelError
from macs_cli.weights.hub import cached_file, hub_file, looks_like_path, not_cached_message

runner = CliRunner()


def fake_cache(root: Path, repo: str, files: dict[str, bytes], commit: str = "0123456789abcdef") -> Path:
    """The layout huggingface_hub reads: models--org--name/{refs/main, snapshots/<commit>/...}."""
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    for name, data in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)
    return snap


def test_looks_like_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert looks_like_path("./x") and looks_like_path("~/x") and looks_like_path(str(tmp_path))
    assert not looks_like_path("org/name")
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    assert looks_like_path("org/name")          # an existing folder wins over a hub id


def test_hub_file_from_cache_and_missing_message(tmp_path):
    fake_cache(tmp_path, "someone/thing", {"w.pt": b"12345"})
    found = hub_file("someone/thing", "w.pt", "thing", allow_download=False, cache_dir=tmp_path)
    assert found.read_bytes() == b"12345"
    assert cached_file("someone/thing", "other.pt", tmp_path) is None
    with pytest.raises(ModelError) as err:
        hub_file("someone/thing", "other.pt", "the thing", "--flag PATH", cache_dir=tmp_path)
    msg = str(err.value)
    assert msg == not_cached_message("the thing", "someone/thing", "other.pt", "--flag PATH") + " (not cached)"
    assert "hf download someone/thing other.pt" in msg and "--flag PATH" in msg and "\n" not in msg


def test_every_loader_uses_the_same_message(tmp_path, monkeypatch):
    """Separator, CLAP and the official adapter, none cached: the same sentence, each naming its file."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MACS_OFFICIAL_SEPARATOR", raising=False)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    from macs_cli.clap.loading import load_clap
    from macs_cli.generation.checkpoints import resolve_adapter
    from macs_cli.weights.separator import load_separator

    msgs = []
    for call in (lambda: load_separator("official"), lambda: load_clap("default"),
                 lambda: resolve_adapter("official:Landscape")):
        with pytest.raises(ModelError) as err:
            call()
        msgs.append(str(err.value))
    assert all("is not in the Hugging Face cache: run once with --allow-download, or `hf download" in m
               for m in msgs), msgs
    assert "separator_FSD50K_full.pt" in msgs[0] and "630k-audioset-best.pt" in msgs[1] \
        and "Landscape_mlp.pt" in msgs[2]


def test_macs_weights_lists_what_is_there(tmp_path, monkeypatch):
    monkeypatch.delenv("MACS_OFFICIAL_SEPARATOR", raising=False)
    fake_cache(tmp_path, "lukewys/laion_clap", {"630k-audioset-best.pt": b"x" * 1000})
    fake_cache(tmp_path, "alxzzz/MACS", {"Landscape_mlp.pt": b"m", "Landscape_unet.pt": b"u"})
    r = runner.invoke(app, ["weights", "--cache-dir", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    rows = {(d["kind"], d["name"]): d for d in map(json.loads, r.stdout.splitlines())}
    assert rows[("separator", "default")]["present"] and rows[("separator", "default")]["size_bytes"] > 1e6
    assert rows[("clap", "default")]["present"] and rows[("clap", "default")]["size_bytes"] == 1000
    assert rows[("adapter", "official:Landscape")]["present"]
    assert not rows[("separator", "official")]["present"]
    assert rows[("separator", "official")]["fetch"].startswith("hf download alxzzz/MACS separator_FSD50K_full.pt")
    sd = [d for (k, _), d in rows.items() if k == "stable-diffusion"]
    assert sd and not any(d["present"] for d in sd) and all("hf download" in d["fetch"] for d in sd)
    assert {d["name"] for d in rows.values() if d["kind"] == "eval"} == {"inception", "clip", "wav2clip"}
    plain = runner.invoke(app, ["weights", "--cache-dir", str(tmp_path)])
    lines = [line.split("\t") for line in plain.stdout.splitlines()]
    assert all(len(x) == 5 for x in lines) and ["clap", "default", "present"] == lines[2][:3]


def test_macs_weights_check_reports_a_file_that_does_not_load(tmp_path, monkeypatch):
    bad = tmp_path / "separator_FSD50K_full.pt"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("MACS_OFFICIAL_SEPARATOR", str(bad))
    r = runner.invoke(app, ["weights", "--check", "--device", "cpu", "--cache-dir", str(tmp_path / "empty")])
    assert r.exit_code == 1
    lines = {tuple(x.split("\t")[:2]): x for x in r.stdout.splitlines()}
    assert "present, loads" in lines[("separator", "default")]
    assert "does not load" in lines[("separator", "official")]
    assert "error: separator official" in r.stderr
