"""Nothing a user has is lost (issue 9): placement of outputs, --force, concurrent runs, crashes,
full disks, stale temporaries, FIFOs and other non-regular files, stdout for pipelines.

Kill -9, concurrency and interrupt tests run macs in real processes; full-disk tests use a real
tmpfs of a few MB (mounted in a private user + mount namespace with `unshare -rm`) where the
machine allows it, else they inject the failure into the write (each test says which it used).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from macs_cli import fsutil
from macs_cli.cli.main import app
from macs_cli.errors import MacsError, OutputExistsError

from .safety_tools import age, env, macs, macs_cmd, noise, small_fs_prefix

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def sep(*args, model):
    return run("separate", *args, "--model", model, "--device", "cpu", "-q")


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).glob(".*"))


# -- the placement primitives ---------------------------------------------------------------------
@pytest.mark.parametrize("native", [True, False])
def test_rename_noreplace_never_replaces(tmp_path, monkeypatch, native):
    if not native:   # the fallback where renameat2 is missing: link for files, an empty-folder claim for folders
        monkeypatch.setattr(fsutil, "_renameat2", False)
    (tmp_path / "a").write_text("new")
    (tmp_path / "b").write_text("theirs")
    with pytest.raises(FileExistsError):
        fsutil.rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "theirs" and (tmp_path / "a").exists()
    fsutil.rename_noreplace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_text() == "new" and not (tmp_path / "a").exists()
    (tmp_path / "d1").mkdir()
    (tmp_path / "d1" / "x").write_text("1")
    (tmp_path / "d2").mkdir()
    (tmp_path / "d2" / "y").write_text("2")
    with pytest.raises(FileExistsError):
        fsutil.rename_noreplace(tmp_path / "d1", tmp_path / "d2")
    assert (tmp_path / "d2" / "y").exists() and (tmp_path / "d1" / "x").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileExistsError):         # even an empty folder someone made is not taken over
        fsutil.rename_noreplace(tmp_path / "d1", tmp_path / "empty")
    fsutil.rename_noreplace(tmp_path / "d1", tmp_path / "d3")
    assert (tmp_path / "d3" / "x").exists()


def test_placement_on_a_file_system_without_renameat2_or_hard_links(tmp_path, monkeypatch):
    """Bucket mounts (gcsfuse, s3fs...) have neither: files are placed by claiming the name with an
    exclusive create and moving over that claim, still never over anything else; a file of the
    caller's own (a checkpoint) is replaced as before."""
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fsutil, "_renameat2", False)
    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a").write_text("new")
    (tmp_path / "b").write_text("theirs")
    with pytest.raises(FileExistsError):
        fsutil.rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "theirs" and (tmp_path / "a").exists()
    fsutil.rename_noreplace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_text() == "new" and not (tmp_path / "a").exists()
    from macs_cli.clap.api import write_npy_with_sidecar

    write_npy_with_sidecar(tmp_path / "e.npy", np.zeros((2, 3)), {"stems": []})
    assert np.load(tmp_path / "e.npy").shape == (2, 3) and (tmp_path / "e.json").exists()
    for text in ("1", "2"):
        with fsutil.atomic_path(tmp_path / "checkpoint.pt", overwrite=True) as tmp:
            tmp.write_text(text)
    assert (tmp_path / "checkpoint.pt").read_text() == "2" and hidden(tmp_path) == []


def test_force_replaces_only_a_previous_output_of_the_same_kind(tmp_path):
    kind = fsutil.json_kind("test output", ("macs-test",))
    target = tmp_path / "out.json"
    with fsutil.atomic_path(target, kind) as tmp:
        tmp.write_text(json.dumps({"format": "macs-test-v1", "n": 1}))
    with pytest.raises(OutputExistsError, match="already exists"):
        with fsutil.atomic_path(target, kind) as tmp:
            tmp.write_text("{}")
    with fsutil.atomic_path(target, kind, force=True) as tmp:
        tmp.write_text(json.dumps({"format": "macs-test-v1", "n": 2}))
    assert json.loads(target.read_text())["n"] == 2
    mine = tmp_path / "mine.json"
    mine.write_text('{"a user": "file"}')
    with pytest.raises(OutputExistsError, match="never replaced"):
        with fsutil.atomic_path(mine, kind, force=True) as tmp:
            tmp.write_text("{}")
    assert mine.read_text() == '{"a user": "file"}'
    assert hidden(tmp_path) == []               # failed writes leave no temporary


def test_a_users_json_with_a_few_of_our_keys_is_not_taken_for_ours(tmp_path):
    """Files from before format tags are recognised by every key macs wrote into them, so --force
    never replaces a user's report.json that merely has `task`, `pairing` and `results`."""
    from macs_cli import formats

    cases = {
        formats.REPORT_JSON: ({"task": "mine", "pairing": 1, "results": 2}, {"macs_version": "0.1.0"}),
        formats.IMAGE_SIDECAR: ({"image": "x.png", "seed": 1, "settings": {}}, {"command": "macs generate"}),
        formats.EMBED_SIDECAR: ({"stems": [], "shape": [4, 512], "normalized": True, "model": "m"},
                                {"backend": "LaionClap", "stem_sha256": [], "mixture_embedding": None}),
        formats.RANK_SIDECAR: ({"order": [0], "kept": [0], "scores": [1.0]},
                               {"spearman_vs_separator_order": None, "mixture_embedding": [1.0]}),
        formats.MANIFEST: ({"macs_version": "0", "stems": [], "source": "x"},
                           {"source_frames": 1, "model_sample_rate": 16000}),
    }
    for i, (kind, (users, more)) in enumerate(cases.items()):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps({**users, "notes": "my own analysis"}))
        assert not kind.owns(path), kind.label
        path.write_text(json.dumps({**users, **more}))            # as the macs before format tags wrote it
        assert kind.owns(path), kind.label


def test_an_output_whose_name_fits_is_never_refused_for_its_temporarys_name(tmp_path):
    """A temporary's name is longer than its target's: for a name near the 255-byte limit it is cut
    short instead of failing with 'File name too long', between characters: half a multibyte
    character would leave a name that is not UTF-8, which libsndfile (through soundfile) cannot open."""
    for name in ("L" * 250 + ".npy", "é" * 125 + ".wav", "x" * 255, "日" * 80 + ".wav", "日" * 83 + ".wav"):
        with fsutil.atomic_path(tmp_path / name) as tmp:
            assert len(os.fsencode(tmp.name)) <= 255 and fsutil._OURS.match(tmp.name)
            tmp.name.encode("utf-8")        # no lone surrogates: a whole character or none
            tmp.write_text("ok")
        assert (tmp_path / name).read_text() == "ok"
        with fsutil.atomic_dir(tmp_path / "d" / name) as tmp:
            (tmp / "f").write_text("ok")
        assert (tmp_path / "d" / name / "f").read_text() == "ok"
    assert hidden(tmp_path) == [] and hidden(tmp_path / "d") == []


@pytest.mark.parametrize("exchange", [True, False])
def test_force_replacing_a_folder_never_leaves_neither(tmp_path, monkeypatch, exchange):
    """--force over a previous output folder swaps old and new in one step (RENAME_EXCHANGE): an
    interrupt at any point leaves the old folder or the new one at the target, never a hidden
    aside that the next sweep deletes. Without the exchange (old kernels) the aside fallback works."""
    kind = fsutil.OutputKind("test folder", lambda p: (Path(p) / "ours").exists())
    target = tmp_path / "out"
    with fsutil.atomic_dir(target, kind) as tmp:
        (tmp / "ours").write_text("old")
    if not exchange:
        monkeypatch.setattr(fsutil, "_exchange", lambda a, b: False)
    real, calls = fsutil.rename_noreplace, []

    def interrupted_after_the_first_move(src, dst):
        calls.append(dst)
        if Path(dst) == target and len(calls) > 1 and exchange:
            raise KeyboardInterrupt        # Ctrl-C between moving the old folder aside and placing the new
        return real(src, dst)

    monkeypatch.setattr(fsutil, "rename_noreplace", interrupted_after_the_first_move)
    with contextlib.suppress(KeyboardInterrupt):
        with fsutil.atomic_dir(target, kind, force=True) as tmp:
            (tmp / "ours").write_text("new")
    assert target.is_dir() and (target / "ours").read_text() in ("old", "new")
    assert (target / "ours").read_text() == "new" and hidden(tmp_path) == []


def test_a_fifo_at_an_output_path_is_never_opened(tmp_path):
    """Real process with a time limit: recognising what is at an output path never opens a FIFO
    (which blocks until a writer comes): train --force over a run folder whose config.yaml is a
    FIFO, and a FIFO named like generate's contact sheet, are refused at once."""
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("config.yaml", "metrics.csv", "checkpoint.pt", "curves.png"):
        os.mkfifo(run_dir / name)
    code = f"""
from pathlib import Path
from macs_cli import formats
from macs_cli.cli.common import plan_output
from macs_cli.errors import MacsError
from macs_cli.training.trainer import Trainer
run = Path({str(run_dir)!r})
try:
    Trainer.check_run_folder(run, False, True)
except MacsError as exc:
    print("refused:", exc)
try:
    plan_output([(run / "curves.png", formats.PICTURE)], True)
except MacsError as exc:
    print("refused:", exc)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env())
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and "is not a file of a macs train-sep run" in lines[0] and "never replaced" in lines[1]


def test_output_set_places_all_or_nothing(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    with pytest.raises(RuntimeError):
        with fsutil.OutputSet() as out:
            out.path(a).write_text("a")
            out.path(b).write_text("b")
            raise RuntimeError("disk full while writing b")
    assert not a.exists() and not b.exists() and hidden(tmp_path) == []
    b.write_text("someone else's")                 # b appears after the checks: a is taken back out
    out = fsutil.OutputSet()
    out.path(a).write_text("a")
    tb = out.path(tmp_path / "c.txt")
    tb.write_text("c")
    real = fsutil.rename_noreplace

    def flaky(src, dst):
        if Path(dst).name == "c.txt":
            (tmp_path / "c.txt").write_text("raced")
        return real(src, dst)

    monkeypatch.setattr(fsutil, "rename_noreplace", flaky)
    with pytest.raises(OutputExistsError, match="appeared while"):
        with out:
            pass
    assert not a.exists() and (tmp_path / "c.txt").read_text() == "raced" and hidden(tmp_path) == []


@pytest.mark.parametrize("directory", [False, True])
def test_a_sweep_by_another_run_keeps_the_previous_output_set_aside(tmp_path, monkeypatch, directory):
    """Real second process: while a --force set is being placed, the previous outputs it has set
    aside (a hard link of the old file, or the old folder under a hidden name) keep the old
    mtime; another run that sweeps the folder then must not take them for a killed run's
    leftovers: when the set fails half-way, the previous outputs come back whole."""
    import sys

    kind = fsutil.OutputKind("test output", lambda p: True)
    names = ("a", "b")
    for n in names:
        path = tmp_path / n
        if directory:
            path.mkdir()
            (path / "stem.txt").write_text(f"old {n}")
        else:
            path.write_text(f"old {n}")
        age(path, 3 * 86400)
    out = fsutil.OutputSet(force=True)
    for n in names:
        tmp = out.path(tmp_path / n, kind, directory=directory)
        if directory:
            (tmp / "stem.txt").write_text(f"new {n}")
        else:
            tmp.write_text(f"new {n}")
    real_place = fsutil._place
    swept = []

    def place(tmp, target, *a):
        if Path(target).name == "b":   # a is placed and its previous output set aside: another run sweeps
            code = ("from pathlib import Path; from macs_cli import fsutil; "
                    f"print(len(fsutil.sweep_stale(Path({str(tmp_path / 'other')!r}))))")
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env())
            swept.append(r.stdout.strip())
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_place(tmp, target, *a)

    monkeypatch.setattr(fsutil, "_place", place)
    with pytest.raises(OSError):
        with out:
            pass
    assert swept == ["0"]
    for n in names:
        got = (tmp_path / n / "stem.txt") if directory else (tmp_path / n)
        assert got.read_text() == f"old {n}"
    assert hidden(tmp_path) == []


def test_outputs_are_fsynced_before_they_are_placed(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    placed = []
    real_place = fsutil._place
    monkeypatch.setattr(fsutil, "_place", lambda tmp, target, *a: (placed.append(list(synced)),
                                                                    real_place(tmp, target, *a))[1])
    with fsutil.atomic_dir(tmp_path / "stems") as tmp:
        (tmp / "stem_00.wav").write_bytes(b"x")
    before = placed[0]
    assert any(p.endswith("stem_00.wav") for p in before)            # the file ...
    assert any(".macs-tmp" in p and not p.endswith(".wav") for p in before)   # ... and its folder
    assert synced[-1] == str(tmp_path)                               # the parent after the rename


def test_stale_temporaries_are_swept_only_when_unlocked_and_ours(tmp_path):
    import fcntl

    stale = tmp_path / ".mix.4242-0a1b2c3d.macs-tmp"
    stale.mkdir()
    (stale / "stem_00.wav").write_bytes(b"x" * 1000)
    live = tmp_path / ".mix.4343-0a1b2c3e.macs-tmp"
    live.mkdir()
    fresh = tmp_path / ".other.4444-0a1b2c3f.macs-tmp.npy"
    fresh.write_bytes(b"x")
    legacy_old = tmp_path / ".mix.k2j3h4g5.tmp"
    legacy_old.mkdir()
    legacy_new = tmp_path / ".mix.z9y8x7w6.tmp"
    legacy_new.mkdir()
    users = tmp_path / ".mix.notes"
    users.write_text("mine")
    for p in (stale, live, legacy_old, users):
        age(p, 3 * 86400)
    age(legacy_new, 60)
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)                 # a live process still writes this one
    try:
        fsutil._swept.discard(os.path.abspath(tmp_path))
        removed = fsutil.sweep_stale(tmp_path / "mix")
    finally:
        os.close(fd)
    assert sorted(p.name for p in removed) == sorted([stale.name, legacy_old.name])
    assert live.exists() and fresh.exists() and legacy_new.exists() and users.read_text() == "mine"


def test_the_sweep_keeps_a_previous_output_whose_replacement_is_not_in_place(tmp_path):
    """A run killed between setting the previous output aside and placing the new one (a file
    system without hard links or exchange) left the user's only copy under a hidden name: the
    next run's sweep keeps it (where its output is absent, is only the empty claim of a run without
    renameat2, or its name may have been cut short) and removes an aside only once its
    replacement stands under its name."""
    lost = tmp_path / ".mix.wav.4242-0a1b2c3d.macs-tmp-old"
    lost.write_text("previous mix")
    folder = tmp_path / ".stems.4242-0a1b2c3e.macs-tmp-old"
    folder.mkdir()
    (folder / "stem_00.wav").write_text("previous stem")
    claimed = tmp_path / ".c.wav.4242-0a1b2c40.macs-tmp-old"    # c.wav is only an empty claim
    claimed.write_text("previous c")
    (tmp_path / "c.wav").write_bytes(b"")
    tail = "4242-0a1b2c41.macs-tmp-old"
    long = tmp_path / fsutil._tmp_name("x" * 300, tail)         # its output's name was cut short
    long.write_text("previous long")
    done = tmp_path / ".b.wav.4242-0a1b2c3f.macs-tmp-old"      # b.wav was placed: this one is spent
    done.write_text("old b")
    (tmp_path / "b.wav").write_text("new b")
    for p in (lost, folder, claimed, long, done):
        age(p, 3600)
    fsutil._swept.discard(os.path.abspath(tmp_path))
    removed = fsutil.sweep_stale(tmp_path / "other")
    assert [p.name for p in removed] == [done.name]
    assert lost.read_text() == "previous mix" and (folder / "stem_00.wav").read_text() == "previous stem"
    assert claimed.read_text() == "previous c" and long.read_text() == "previous long"
    assert not (tmp_path / "mix.wav").exists() and (tmp_path / "b.wav").read_text() == "new b"


def test_a_failed_set_never_leaves_neither_the_old_nor_the_new_output(tmp_path, monkeypatch):
    """Putting back a set that failed half-way: where the previous output is gone from where it was
    set aside, the new one stays; where its name was taken meanwhile, the previous output is kept
    beside it under a name no sweep removes, and a warning says where."""
    kind = fsutil.OutputKind("test output", lambda p: True)
    for n in ("a", "b", "c"):
        (tmp_path / n).write_text(f"old {n}")
    out = fsutil.OutputSet(force=True)
    for n in ("a", "b", "c"):
        out.path(tmp_path / n, kind).write_text(f"new {n}")
    real_place = fsutil._place

    def place(tmp, target, *a):
        name = Path(target).name
        if name == "c":
            raise OSError(errno.ENOSPC, "No space left on device")
        aside = real_place(tmp, target, *a)
        if name == "a":                      # a's previous output vanishes from its hidden name
            os.unlink(aside.path)
        return aside

    real_remove = fsutil._remove

    def remove(path):                        # someone writes b while the set takes b back out
        real_remove(path)
        if Path(path).name == "b":
            Path(path).write_text("theirs")

    monkeypatch.setattr(fsutil, "_place", place)
    monkeypatch.setattr(fsutil, "_remove", remove)
    with pytest.warns(UserWarning, match="could not be put back"):
        with pytest.raises(OSError):
            with out:
                pass
    assert (tmp_path / "a").read_text() == "new a"
    assert (tmp_path / "b").read_text() == "theirs" and (tmp_path / "c").read_text() == "old c"
    kept = glob.glob(str(tmp_path / ".b.*.macs-kept"))
    assert len(kept) == 1 and Path(kept[0]).read_text() == "old b"
    fsutil._swept.discard(os.path.abspath(tmp_path))
    for p in kept:
        age(Path(p), 3 * 86400)
    assert fsutil.sweep_stale(tmp_path / "other") == [] and Path(kept[0]).exists()


def test_a_failed_set_never_removes_what_another_run_placed_meanwhile(tmp_path, monkeypatch):
    """Rolling back: an output that another run has placed since this set placed its own is left
    alone (the previous one is kept beside it, with a warning), and a file of the caller's own
    (``overwrite``: already replaced in one step) keeps its new content rather than vanishing."""
    kind = fsutil.OutputKind("test output", lambda p: True)
    for n in ("a", "c"):
        (tmp_path / n).write_text(f"old {n}")
    out = fsutil.OutputSet(force=True)
    out.path(tmp_path / "a", kind).write_text("new a")
    out.path(tmp_path / "ckpt", overwrite=True).write_text("new ckpt")
    out.path(tmp_path / "c", kind).write_text("new c")
    real_place = fsutil._place

    def place(tmp, target, *a):
        if Path(target).name == "c":
            theirs = tmp_path / "theirs"
            theirs.write_text("their a")
            os.replace(theirs, tmp_path / "a")   # another --force run placed its a
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_place(tmp, target, *a)

    monkeypatch.setattr(fsutil, "_place", place)
    with pytest.warns(UserWarning, match="could not be put back"):
        with pytest.raises(OSError):
            with out:
                pass
    assert (tmp_path / "a").read_text() == "their a" and (tmp_path / "c").read_text() == "old c"
    assert (tmp_path / "ckpt").read_text() == "new ckpt"
    kept = glob.glob(str(tmp_path / ".a.*.macs-kept"))
    assert len(kept) == 1 and Path(kept[0]).read_text() == "old a"


def test_replacing_an_output_another_process_holds_is_refused(tmp_path, monkeypatch):
    """The previous output is locked while it is set aside; when another process holds that lock
    (it is replacing the same output at this moment) the set waits about a second, then refuses
    with one line and leaves everything as it is."""
    import fcntl

    monkeypatch.setattr(fsutil, "HOLD_TRIES", 4)
    kind = fsutil.OutputKind("test output", lambda p: True)
    (tmp_path / "a").write_text("old a")
    fd = os.open(tmp_path / "a", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(OutputExistsError, match="another run is replacing it"):
            with fsutil.atomic_path(tmp_path / "a", kind, force=True) as tmp:
                tmp.write_text("new a")
    finally:
        os.close(fd)
    assert (tmp_path / "a").read_text() == "old a" and hidden(tmp_path) == []


def test_the_sweep_leaves_dotfiles_that_merely_look_like_old_temporaries(tmp_path):
    """macs 0.1's leftovers are removed only when named after the target being written: a home
    folder's `.bashrc.old-1` or `.config.old-2019/` are the user's, however old."""
    users = [tmp_path / ".bashrc.old-1", tmp_path / ".notes.abcdefgh.tmp", tmp_path / ".photo.jpg.backup_1.tmp.jpg"]
    for p in users:
        p.write_text("mine")
    folder = tmp_path / ".config.old-2019"
    folder.mkdir()
    (folder / "settings").write_text("precious")
    ours = tmp_path / ".mix.old-77"              # macs 0.1's aside of the output `mix` itself
    ours.mkdir()
    for p in (*users, folder, ours):
        age(p, 3 * 86400)
    fsutil._swept.discard(os.path.abspath(tmp_path))
    removed = fsutil.sweep_stale(tmp_path / "mix")
    assert [p.name for p in removed] == [ours.name]
    assert all(p.read_text() == "mine" for p in users) and (folder / "settings").read_text() == "precious"
    assert fsutil.sweep_stale(tmp_path / "other") == [] and folder.exists()   # another target: still kept


def test_stale_temporaries_of_a_name_with_a_newline_are_swept(tmp_path):
    """An output named `x<newline>y` (from an input of that name) has temporaries with a newline in
    their name: a killed run's are still recognised and removed."""
    stale = tmp_path / ".x\ny.4242-0a1b2c3d.macs-tmp"
    stale.mkdir()
    legacy = tmp_path / ".x\ny.k2j3h4g5.tmp"
    legacy.mkdir()
    for p in (stale, legacy):
        age(p, 3 * 86400)
    fsutil._swept.discard(os.path.abspath(tmp_path))
    assert sorted(p.name for p in fsutil.sweep_stale(tmp_path / "x\ny")) == sorted([stale.name, legacy.name])


def test_the_sweep_never_waits_on_a_fifo_named_like_a_temporary(tmp_path):
    """Real process with a time limit: a FIFO named like a stale temporary of ours is left alone
    (opening it to test its lock used to block the next run writing into that folder forever)."""
    import subprocess
    import sys

    fifo = tmp_path / ".x.1-abcdef01.macs-tmp"
    os.mkfifo(fifo)
    age(fifo, 3600)
    code = f"from pathlib import Path; from macs_cli import fsutil; print(fsutil.sweep_stale(Path({str(tmp_path / 'y')!r})))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env())
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
    assert fifo.exists()


# -- separate --------------------------------------------------------------------------------------
def test_force_never_replaces_an_input_or_a_users_folder(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rec = noise(tmp_path / "rec", 1.0)              # an input without an extension, -o .
    before = rec.read_bytes()
    r = sep(rec.name, "-o", ".", "--force", model=tiny_model_path)
    assert r.exit_code == 1 and "would replace the input itself" in r.stderr
    assert rec.read_bytes() == before
    mine = tmp_path / "out" / "song"                 # a folder of the user's where an output would go
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    noise(tmp_path / "song.wav", 1.0)
    r = sep("song.wav", "-o", "out", "--force", model=tiny_model_path)
    assert r.exit_code == 1 and "is not a macs separate output folder" in r.stderr
    assert (mine / "notes.txt").read_text() == "keep me"
    (mine / "notes.txt").unlink()
    mine.rmdir()
    assert sep("song.wav", "-o", "out", model=tiny_model_path).exit_code == 0
    first = json.loads((tmp_path / "out" / "song" / "manifest.json").read_text())
    assert first["format"] == "macs-stems-v1"
    r = sep("song.wav", "-o", "out", "--force", "--sample-rate", "8000", model=tiny_model_path)
    assert r.exit_code == 0, r.stderr                 # a previous output: replaced
    assert json.loads((tmp_path / "out" / "song" / "manifest.json").read_text())["sample_rate"] == 8000
    # an input that lies inside the output folder it would replace
    inner = noise(tmp_path / "out" / "song" / "song.wav", 1.0)
    r = sep(inner, "-o", "out", "--force", model=tiny_model_path)
    assert r.exit_code == 1 and "would replace the folder that holds it" in r.stderr and inner.exists()
    assert hidden(tmp_path / "out") == []


def test_force_keeps_a_stems_folder_the_user_added_files_to(tiny_model_path, tmp_path, monkeypatch):
    """--force replaces a previous stems folder, but not the notes or edits a user put into it:
    such a folder is refused (and left whole) instead of being deleted with them."""
    monkeypatch.chdir(tmp_path)
    noise(tmp_path / "song.wav", 1.0)
    assert sep("song.wav", "-o", "out", "--spectrograms", model=tiny_model_path).exit_code == 0
    folder = tmp_path / "out" / "song"
    assert sep("song.wav", "-o", "out", "--force", model=tiny_model_path).exit_code == 0   # only ours: replaced
    (folder / "notes.txt").write_text("keep me")
    (folder / "edits").mkdir()
    (folder / "edits" / "stem_00_fixed.wav").write_bytes(b"mine")
    r = sep("song.wav", "-o", "out", "--force", model=tiny_model_path)
    assert r.exit_code == 1 and "holding only its own files" in r.stderr and "never replaced" in r.stderr
    assert (folder / "notes.txt").read_text() == "keep me" and (folder / "edits" / "stem_00_fixed.wav").exists()
    assert (folder / "manifest.json").exists() and hidden(tmp_path / "out") == []


def test_two_runs_writing_the_same_output_at_once(tiny_model_path, tmp_path):
    """Real processes: run A pauses between its checks and the final move (a test hook); run B
    writes the same output meanwhile; A must not replace it and must say so."""
    a, b = noise(tmp_path / "a" / "mix.wav", 1.0, seed=1), noise(tmp_path / "b" / "mix.wav", 1.0, seed=2)
    out, flag = tmp_path / "out", tmp_path / "go"
    proc = subprocess.Popen(macs_cmd("separate", a, "-o", out, "--model", tiny_model_path, "--device", "cpu", "-q"),
                            env=env(MACS_TEST_HOLD_BEFORE_PLACE=flag), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not Path(str(flag) + ".ready").exists() and time.time() < deadline:
        time.sleep(0.05)
    rb = macs("separate", b, "-o", out, "--model", tiny_model_path, "--device", "cpu", "-q")
    assert rb.returncode == 0, rb.stderr
    flag.touch()
    so, se = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "appeared while this run was writing it" in se
    assert so == ""                                   # nothing placed, nothing printed
    assert json.loads((out / "mix" / "manifest.json").read_text())["source"] == str(b.resolve())
    assert hidden(out) == []


def test_full_disk_during_separate_is_one_line_and_the_others_go_on(tiny_model_path, tmp_path):
    """A real 1 MB tmpfs where the machine allows it (else a write fault injected in-process)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    big, small = noise(tmp_path / "big.wav", 30.0), noise(tmp_path / "small.wav", 0.3)
    prefix = small_fs_prefix(mnt, "1m")
    if prefix is not None:
        r = subprocess.run(prefix + macs_cmd("separate", big, small, "-o", "out", "--model", tiny_model_path,
                                             "--device", "cpu", "-q"),
                           capture_output=True, text=True, timeout=300, env=env())
        code, err = r.returncode, r.stderr
        # what was left on the (now unmounted) file system cannot be inspected: the other input's
        # success is shown by its stdout line and the error by one line
        assert r.stdout.strip().endswith("out/small"), r.stdout
    else:  # pragma: no cover - machines that allow no user namespaces
        import soundfile

        real = soundfile.SoundFile.write

        def full(self, data):
            if len(data) > 20000:
                raise soundfile.LibsndfileError(2)
            return real(self, data)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(soundfile.SoundFile, "write", full)
            mp.setattr(os, "statvfs", lambda p: os.statvfs_result((4096, 4096, 100, 0, 0, 0, 0, 0, 0, 255)))
            res = sep(big, small, "-o", mnt / "out", model=tiny_model_path)
        code, err = res.exit_code, res.stderr
        assert (mnt / "out" / "small" / "manifest.json").exists() and not (mnt / "out" / "big").exists()
        assert hidden(mnt / "out") == []
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(lines) == 1, err
    assert "big.wav" in lines[0] and "no space left on device" in lines[0]
    assert "Traceback" not in err


def test_killed_run_leaves_a_temporary_that_the_next_start_removes(tiny_model_path, tmp_path):
    long = noise(tmp_path / "mix.wav", 600.0)
    out = tmp_path / "out"
    proc = subprocess.Popen(macs_cmd("separate", long, "-o", out, "--model", tiny_model_path, "--device", "cpu",
                                     "-q"), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not glob.glob(str(out / ".mix.*.macs-tmp")) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    proc.kill()                                      # kill -9: no cleanup runs
    proc.wait()
    left = glob.glob(str(out / ".mix.*.macs-tmp"))
    assert len(left) == 1 and not (out / "mix").exists()
    age(Path(left[0]), 60)
    short = noise(tmp_path / "short" / "mix.wav", 0.5)
    r = macs("separate", short, "-o", out, "--model", tiny_model_path, "--device", "cpu", "-q")
    assert r.returncode == 0, r.stderr
    assert hidden(out) == [] and (out / "mix" / "manifest.json").exists()


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_interrupt_during_the_loop_says_what_was_finished(tiny_model_path, tmp_path, sig, code, word):
    first, long = noise(tmp_path / "first.wav", 0.5), noise(tmp_path / "long.wav", 900.0)
    out = tmp_path / "out"
    # a test run started in the background (`cmd &`) inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: give the child the default disposition back
    proc = subprocess.Popen(macs_cmd("separate", first, long, "-o", out, "--model", tiny_model_path,
                                     "--device", "cpu", "-q"), env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not glob.glob(str(out / ".long.*.macs-tmp")) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    so, se = proc.communicate(timeout=120)
    assert proc.returncode == code, se
    assert f"error: {word}: 1 of 2 input(s) finished" in se and "first.wav" in se
    assert so.splitlines() == [str(out / "first")]
    assert hidden(out) == [] and not (out / "long").exists()


def test_folder_search_skips_earlier_outputs_and_warns_about_inputs_inside_o(tiny_model_path, tmp_path):
    data = tmp_path / "data"
    for i in range(2):
        noise(data / f"clip{i}.wav", 0.5, seed=i)
    assert sep(data, "-o", data / "stems_v1", model=tiny_model_path).exit_code == 0
    r = run("separate", data, "-o", data / "stems_v2", "--model", tiny_model_path, "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (data / "stems_v2").iterdir()) == ["clip0", "clip1"]
    assert "left out 2 folder(s) holding macs separate output" in r.stderr
    quiet = sep(data, "-o", data / "stems_v3", model=tiny_model_path)
    assert quiet.exit_code == 0 and quiet.stderr == ""           # -q: no notes
    # a folder search that finds a file inside -o: separated, with a warning
    noise(tmp_path / "in" / "x.wav", 0.5)
    noise(tmp_path / "in" / "sub" / "y.wav", 0.5)
    r = sep(tmp_path / "in", "-o", tmp_path / "in" / "sub", model=tiny_model_path)
    assert r.exit_code == 0 and "found inside the output folder" in r.stderr
    assert (tmp_path / "in" / "sub" / "sub" / "y" / "manifest.json").exists()
    # a stems folder given itself is not separated again
    r = sep(data / "stems_v1" / "clip0", "-o", tmp_path / "again", model=tiny_model_path)
    assert r.exit_code == 1 and "is a macs separate output" in r.stderr


def test_skip_lines_follow_quiet(tiny_model_path, tmp_path):
    noise(tmp_path / "in" / "a.wav", 0.5)
    assert sep(tmp_path / "in", "-o", tmp_path / "out", model=tiny_model_path).exit_code == 0
    r = sep(tmp_path / "in", "-o", tmp_path / "out", "--skip-existing", model=tiny_model_path)
    assert r.exit_code == 0 and "skip" not in r.stderr
    assert json.loads(run("separate", tmp_path / "in", "-o", tmp_path / "out", "--skip-existing", "--json",
                          "--model", tiny_model_path, "-q").stdout)["skipped"] is True
    r = run("separate", tmp_path / "in", "-o", tmp_path / "out", "--skip-existing", "--model", tiny_model_path)
    assert "skip" in r.stderr


def test_fifos_devices_and_pipes_are_refused_not_waited_on(tiny_model_path, tmp_path):
    fifo = tmp_path / "in" / "live.wav"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    noise(tmp_path / "in" / "ok.wav", 0.5)
    (tmp_path / "in" / "zero.wav").symlink_to("/dev/zero")
    (tmp_path / "in" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    r = macs("separate", tmp_path / "in", fifo, "-o", tmp_path / "out", "--model", tiny_model_path,
             "--device", "cpu", "-q", timeout=120)
    assert r.returncode == 1
    assert r.stderr.count("live.wav: not a regular file (a pipe)") == 2     # found in the folder, and given
    assert "zero.wav: not a regular file (a device)" in r.stderr
    assert "gone.wav: broken link" in r.stderr
    assert (tmp_path / "out" / "ok" / "manifest.json").exists()
    # /dev/stdin (a pipe here) and <(...) process substitution
    r = macs("separate", "/dev/stdin", "-o", tmp_path / "o2", "--model", tiny_model_path, "--device", "cpu",
             "-q", timeout=60, stdin=subprocess.PIPE)
    assert r.returncode == 1 and "not a regular file (a pipe)" in r.stderr


def test_a_nul_in_a_listed_file_name_is_one_line(tmp_path):
    """Paths read from CSVs and sidecars can hold a NUL, which no file name can: a MacsError line
    instead of a ValueError traceback from the first os.stat."""
    from macs_cli.audio.io import read_audio

    for check in (lambda: fsutil.require_regular_file(tmp_path / "a\x00.wav", "audio file"),
                  lambda: read_audio(str(tmp_path / "a\x00.wav"))):
        with pytest.raises(MacsError, match="NUL byte"):
            check()


def test_stdout_lists_the_outputs_for_pipelines(tiny_model_path, tmp_path):
    for n in ("a", "b"):
        noise(tmp_path / "in" / f"{n}.wav", 0.5)
    r = sep(tmp_path / "in", "-o", tmp_path / "out", model=tiny_model_path)
    assert r.stdout.splitlines() == [str(tmp_path / "out" / "a"), str(tmp_path / "out" / "b")]
    r = run("separate", tmp_path / "in" / "a.wav", "-o", tmp_path / "j", "--json", "--model", tiny_model_path, "-q")
    rec = json.loads(r.stdout)
    assert rec["path"] == str(tmp_path / "j" / "a") and len(rec["stems"]) == 4 and rec["skipped"] is False
    assert Path(rec["manifest"]).exists()


def test_a_line_break_in_an_output_name_stays_on_one_stdout_line(tiny_model_path, tmp_path):
    """One output, one stdout line: a name holding a line break is listed with it escaped (and a
    warning), so `while read` pipelines see one path per output; --json gives the exact path."""
    noise(tmp_path / "in" / "a\nb.wav", 0.5)
    noise(tmp_path / "in" / "c.wav", 0.5)
    r = sep(tmp_path / "in", "-o", tmp_path / "out", model=tiny_model_path)
    assert r.stdout.splitlines() == [str(tmp_path / "out" / "a\\nb"), str(tmp_path / "out" / "c")]
    assert "holds a line break" in r.stderr and "--json" in r.stderr
    assert (tmp_path / "out" / "a\nb").is_dir()
    r = run("separate", tmp_path / "in" / "a\nb.wav", "-o", tmp_path / "j", "--json", "--model",
            tiny_model_path, "-q")
    assert json.loads(r.stdout)["path"] == str(tmp_path / "j" / "a\nb")


def test_a_reader_that_goes_away_fails_no_input(tiny_model_path, tmp_path):
    """Real process, stdout a pipe whose reader has gone (`macs separate ... | head -1`): every input
    is still separated, none is reported as failed with 'Broken pipe', no traceback, exit 0."""
    for n in ("a", "b"):
        noise(tmp_path / "in" / f"{n}.wav", 0.5)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run(macs_cmd("separate", tmp_path / "in", "-o", tmp_path / "out", "--model", tiny_model_path,
                                    "--device", "cpu", "-q"), stdout=write_end, stderr=subprocess.PIPE, text=True,
                           env=env(), timeout=300)
    finally:
        os.close(write_end)
    assert r.returncode == 0, r.stderr
    assert "Broken pipe" not in r.stderr and "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    assert "stdout was closed" in r.stderr
    assert all((tmp_path / "out" / n / "manifest.json").exists() for n in ("a", "b"))


# -- a model file whose metadata lies ------------------------------------------------------------
def test_config_in_metadata_is_checked_before_anything_is_built(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    from macs_cli.errors import ModelError
    from macs_cli.separation import model as model_mod
    from macs_cli.weights.separator import load_separator

    from .conftest import tiny_config

    net = model_mod.Separator(tiny_config())
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    built = []
    real_init = model_mod.Separator.__init__

    def spy(self, config):
        built.append(torch.empty(0).device.type)     # the device the model is built on
        real_init(self, config)

    monkeypatch.setattr(model_mod.Separator, "__init__", spy)
    for channels, needle in ((200000, "channels must be in 1..512"), (300, "does not fit")):
        cfg = {**tiny_config().to_dict(), "channels": channels}
        path = tmp_path / f"c{channels}.safetensors"
        save_file(state, str(path), metadata={"macs_config": json.dumps(cfg), "format": "macs-separator-v1"})
        built.clear()
        with pytest.raises(ModelError, match=needle):
            load_separator(path)
        assert "cpu" not in built                      # nothing built for real (meta at most)


# -- embed and rank ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stems_and_clap(tmp_path_factory, tiny_model_path):
    import torch

    from . import clap_fixtures as cf

    d = tmp_path_factory.mktemp("safe-embed")
    clap = d / "tiny-clap.pt"
    torch.save(cf.laion_training_checkpoint(cf.make_laion_net()), clap)
    for i in range(2):
        noise(d / "in" / f"clip{i}.wav", 1.0, seed=i)
    assert sep(d / "in", "-o", d / "stems", model=tiny_model_path).exit_code == 0
    return d / "stems", clap


def embed(*args, clap):
    return run("embed", *args, "--clap", clap, "--device", "cpu", "-q")


def test_no_npy_without_its_sidecar_when_the_disk_fills(stems_and_clap, tmp_path, monkeypatch):
    """Fault injected into the sidecar's write (ENOSPC), in-process."""
    stems, clap = stems_and_clap
    out = tmp_path / "e.npy"
    real = Path.write_text

    def full(self, *a, **k):
        if self.name.endswith(".json") and ".macs-tmp" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    r = embed(stems / "clip0", "-o", out, clap=clap)
    monkeypatch.undo()
    assert r.exit_code == 1 and "no space left on device" in r.stderr
    assert not out.exists() and not out.with_suffix(".json").exists() and hidden(tmp_path) == []
    # what an older macs left: an .npy without its sidecar is refused, with the reason
    np.save(out, np.zeros((4, 512), np.float32))
    r = embed(stems / "clip0", "-o", out, "--skip-existing", clap=clap)
    assert r.exit_code == 1 and "sidecar e.json is missing" in r.stderr
    out.unlink()
    # an interrupted write of ours (the sidecar without the array) is redone by --skip-existing
    assert embed(stems / "clip0", "-o", out, clap=clap).exit_code == 0
    out.unlink()
    r = embed(stems / "clip0", "-o", out, clap=clap)
    assert r.exit_code == 1 and "incomplete earlier output" in r.stderr
    r = embed(stems / "clip0", "-o", out, "--skip-existing", clap=clap)
    assert r.exit_code == 0 and out.exists()


def test_embed_never_replaces_a_sidecar_it_did_not_write(stems_and_clap):
    stems, clap = stems_and_clap
    manifest = stems / "clip0" / "manifest.json"
    before = manifest.read_text()
    for force in ([], ["--force"]):
        r = embed(stems / "clip0", "-o", stems / "clip0" / "manifest.npy", *force, clap=clap)
        assert r.exit_code == 1 and "manifest.json" in r.stderr
        assert manifest.read_text() == before and not (stems / "clip0" / "manifest.npy").exists()


def test_manifest_cannot_point_outside_its_folder(stems_and_clap, tmp_path):
    import shutil

    from macs_cli.clap.api import stems_of

    stems, _ = stems_and_clap
    folder = tmp_path / "evil"
    shutil.copytree(stems / "clip0", folder)
    m = json.loads((folder / "manifest.json").read_text())
    for bad in ("/etc/passwd", "../clip1/stem_00.wav", "sub/../../x.wav"):
        m["stems"][0]["file"] = bad
        (folder / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(MacsError, match="outside its folder"):
            stems_of(folder)
    fifo = folder / "fifo.wav"
    os.mkfifo(fifo)
    m["stems"][0]["file"] = "fifo.wav"
    (folder / "manifest.json").write_text(json.dumps(m))
    files, _ = stems_of(folder)
    from macs_cli.audio.io import read_audio

    with pytest.raises(MacsError, match="not a regular file"):
        read_audio(files[0])
    m["stems"][0]["file"] = "stem\u0000_00.wav"          # a NUL in a name: one line, not a ValueError
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MacsError, match="not a macs separate manifest"):
        stems_of(folder)


def test_a_stems_folder_given_as_dot_is_named_after_itself(stems_and_clap, monkeypatch):
    """`cd song && macs embed . -o ../emb/` writes emb/song.npy, not the hidden emb/..npy that a
    folder search (rank emb/) would then leave out."""
    from macs_cli.clap.api import find_stem_sets as expand_stem_sets

    stems, _ = stems_and_clap
    monkeypatch.chdir(stems / "clip0")
    assert [name for name, _, _ in expand_stem_sets([Path(".")])[0]] == ["clip0"]
    loose = sorted(Path(".").glob("stem_*.wav"))
    assert [name for name, _, _ in expand_stem_sets(loose)[0]] == ["clip0"]


def test_rank_takes_folders_keeps_their_layout_and_prints_outputs(stems_and_clap, tmp_path):
    stems, clap = stems_and_clap
    for sub in ("a", "b"):
        assert embed(stems / "clip0", "-o", tmp_path / "emb" / sub / "song.npy", clap=clap).exit_code == 0
    r = run("rank", tmp_path / "emb", "-o", tmp_path / "ranked", "-q")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == [str(tmp_path / "ranked" / "a" / "song.npy"),
                                     str(tmp_path / "ranked" / "b" / "song.npy")]
    assert json.loads((tmp_path / "ranked" / "a" / "song.json").read_text())["format"] == "macs-ranked-v1"
    r = run("rank", tmp_path / "emb", "-o", tmp_path / "ranked", "-q")
    assert r.exit_code == 1 and "already exists" in r.stderr
    r = run("rank", tmp_path / "emb", "-o", tmp_path / "ranked", "-q", "--force", "--json")
    assert r.exit_code == 0 and [json.loads(x)["kept"] for x in r.stdout.splitlines()][0] is not None
    # --force does not replace embed output with rank output
    r = run("rank", tmp_path / "emb" / "a" / "song.npy", "-o", tmp_path / "emb" / "b" / "song.npy", "--force")
    assert r.exit_code == 1 and "not a macs rank output" in r.stderr
    # embed prints its outputs too
    r = run("embed", stems, "-o", tmp_path / "e2", "--clap", clap, "--device", "cpu", "-q")
    assert r.stdout.splitlines() == [str(tmp_path / "e2" / "clip0.npy"), str(tmp_path / "e2" / "clip1.npy")]


# -- checkpoint refusals say nothing about weights_only=False ---------------------------------------
def test_unsafe_checkpoint_messages_never_suggest_unpickling(tmp_path):
    import torch

    from macs_cli.clap import load_clap
    from macs_cli.errors import ModelError
    from macs_cli.generation.checkpoints import resolve_adapter
    from macs_cli.weights.separator import load_separator

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, bad)
    torch.save({"x": Payload()}, tmp_path / "E_mlp.pt")
    torch.save({"x": Payload()}, tmp_path / "E_unet.pt")
    calls = [lambda: load_separator(bad), lambda: load_clap(str(bad)),
             lambda: resolve_adapter(tmp_path / "E_mlp.pt")]
    for call in calls:
        with pytest.raises(ModelError) as info:
            call()
        msg = str(info.value)
        assert "refused" in msg and "posix.system" in msg
        assert "weights_only" not in msg and "likely succeed" not in msg and "\n" not in msg


@pytest.mark.parametrize("links", [True, False], ids=["hard-links", "no-hard-links"])
def test_force_over_a_pair_that_fails_half_way_keeps_the_previous_pair(tmp_path, monkeypatch, links):
    """--force over a previous .npy and its sidecar: the sidecar is placed first; when the .npy then
    cannot be placed, the new sidecar is taken back out and the previous one put back, so the user
    keeps the old pair whole (it used to be left with neither sidecar)."""
    from macs_cli import formats

    out = tmp_path / "emb.npy"
    formats.write_npy_with_sidecar(out, np.ones((2, 3)), {"run": "old"})
    before = {p.name: p.read_bytes() for p in (out, out.with_suffix(".json"))}
    real_replace, real_rename = os.replace, fsutil.rename_noreplace

    def full_disk(src, dst):
        if str(dst).endswith(".npy"):
            raise OSError(errno.ENOSPC, "No space left on device")

    def replace(src, dst):
        full_disk(src, dst)
        return real_replace(src, dst)

    def rename(src, dst):
        full_disk(src, dst)
        return real_rename(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(fsutil, "rename_noreplace", rename)
    if not links:
        def no_link(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(os, "link", no_link)
    with pytest.raises(OSError, match="No space left"):
        formats.write_npy_with_sidecar(out, np.zeros((4, 3)), {"run": "new"}, force=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (out, out.with_suffix(".json"))} == before
    assert hidden(tmp_path) == []
    # and when nothing fails, the new pair replaces the old one, with no copy left behind
    formats.write_npy_with_sidecar(out, np.zeros((4, 3)), {"run": "new"}, force=True)
    assert np.load(out).shape == (4, 3) and '"run": "new"' in out.with_suffix(".json").read_text()
    assert hidden(tmp_path) == []
