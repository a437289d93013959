"""`macs separate` end to end: every option, every kind of bad input, on a tiny local model."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from macs_cli.audio.io import read_audio
from macs_cli.cli.main import app

from .conftest import tone_mix

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def stems_of(folder: Path):
    m = json.loads((folder / "manifest.json").read_text())
    return m, [sf.read(folder / s["file"], dtype="float32") for s in m["stems"]]


def test_help_for_every_verb():
    for args in (["--help"], ["separate", "--help"], ["train-sep", "--help"]):
        r = run(*args)
        assert r.exit_code == 0 and "Usage" in r.output
    r = run("--version")
    assert r.exit_code == 0 and "macs" in r.output


def test_separate_default_options(tiny_model_path, wav, tmp_path):
    out = tmp_path / "out"
    r = run("separate", wav, "-o", out, "--model", tiny_model_path, "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output
    m, stems = stems_of(out / "mix")
    assert [s["file"] for s in m["stems"]] == [f"stem_{i:02d}.wav" for i in range(4)]
    assert all(rate == 16000 for _, rate in stems)
    mix, _ = read_audio(wav, 16000)
    total = sum(s for s, _ in stems)
    assert total.shape == mix.shape
    assert np.sqrt(np.mean((total - mix) ** 2)) < 1e-4
    assert m["source_sample_rate"] == 22050 and m["source_channels"] == 2
    assert {"rms", "activity", "active"} <= set(m["stems"][0])
    assert m["timing"]["real_time_factor"] > 0
    assert not [p for p in out.rglob(".*")]  # no temporary leftovers


def test_separate_all_flags(tiny_model_path, wav, tmp_path):
    out = tmp_path / "out"
    r = run("separate", wav, "-o", out, "--model", tiny_model_path, "--device", "cpu",
            "--batch-size", 3, "--overlap", 0.5, "--sample-rate", "input", "--num-sources", 2,
            "--no-align", "-q")
    assert r.exit_code == 0, r.output
    m, stems = stems_of(out / "mix")
    assert len(stems) == 2 and all(rate == 22050 for _, rate in stems)
    assert sorted(i for s in m["stems"] for i in s["model_stems"]) == [0, 1, 2, 3]
    mix, _ = read_audio(wav)  # at the input rate
    total = sum(s for s, _ in stems)
    assert total.shape == mix.shape
    assert np.sqrt(np.mean((total - mix) ** 2)) < 1e-4
    assert m["settings"]["overlap"] == 0.5 and m["settings"]["batch_size"] == 3
    # an explicit rate
    r = run("separate", wav, "-o", tmp_path / "o2", "--model", tiny_model_path, "--sample-rate",
            "8000", "-q")
    assert r.exit_code == 0, r.output
    assert all(rate == 8000 for _, rate in stems_of(tmp_path / "o2" / "mix")[1])


def test_num_sources_auto_and_k_follow_the_library_grouping(tiny_model_path, tmp_path):
    """`--num-sources auto` is accepted; merged outputs are exactly what the grouping API gives
    for the unmerged stems of the same file (statistics_of -> plan_grouping -> render), the manifest
    records the method and the estimated count, and the outputs sum to the mixture."""
    from macs_cli.separation import grouping as G

    src = tmp_path / "in" / "mix.wav"
    src.parent.mkdir()
    sf.write(src, tone_mix(2.5, 16000, seed=3), 16000)
    r = run("separate", src, "-o", tmp_path / "all", "--model", tiny_model_path, "-q")
    assert r.exit_code == 0, r.output
    _, raw = stems_of(tmp_path / "all" / "mix")
    raw = np.stack([x for x, _ in raw])
    mix, _ = read_audio(src, 16000)
    for request in ("auto", "2"):
        out = tmp_path / f"n{request}"
        r = run("separate", src, "-o", out, "--model", tiny_model_path, "-q", "--num-sources", request)
        assert r.exit_code == 0, r.output
        m, stems = stems_of(out / "mix")
        g = m["grouping"]
        assert g["method"] == G.NET_METHOD and g["requested"] == (request if request == "auto" else 2)
        plan = G.plan_grouping(G.statistics_of(raw, 16000), g["requested"])
        assert g["estimated_sources"] == plan.estimated
        assert np.allclose(np.array(g["weights"]), plan.weights, atol=1e-4)
        want = G.render(raw, plan)
        kept = [s["file"] for s in m["stems"]]
        assert len(kept) + len(m["dropped"]) == plan.estimated
        for j, (x, _) in enumerate(stems):
            assert np.abs(x - want[j]).max() < 1e-4
        if not m["dropped"]:
            assert np.sqrt(np.mean((sum(x for x, _ in stems) - mix) ** 2)) < 1e-4


def test_drop_silent_omits_inactive_stems(tiny_model_path, tmp_path, monkeypatch):
    # a model whose last two stems are always silent
    import macs_cli.separation.api as api

    def fake_fn(model, precision="auto"):
        def fn(batch):
            out = np.zeros((batch.shape[0], 4, batch.shape[1]), dtype=np.float32)
            out[:, 0] = batch * 0.7
            out[:, 1] = batch * 0.3
            return out
        return fn

    monkeypatch.setattr(api, "model_window_fn", fake_fn)
    p = tmp_path / "a.wav"
    sf.write(p, tone_mix(2.0, 16000), 16000)
    r = run("separate", p, "-o", tmp_path / "out", "--model", tiny_model_path, "--drop-silent", "-q")
    assert r.exit_code == 0, r.output
    m, stems = stems_of(tmp_path / "out" / "a")
    assert len(stems) == 2 and len(m["dropped"]) == 2
    assert all(not d["active"] for d in m["dropped"])
    r = run("separate", p, "-o", tmp_path / "out2", "--model", tiny_model_path, "-q")
    assert len(stems_of(tmp_path / "out2" / "a")[1]) == 4


@pytest.mark.parametrize("fmt,subtype", [("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")])
def test_compressed_formats(tiny_model_path, tmp_path, fmt, subtype):
    p = tmp_path / f"clip.{fmt}"
    sf.write(p, tone_mix(1.5, 44100, channels=2), 44100, format=fmt.upper() if fmt != "mp3" else "MP3",
             subtype=subtype)
    r = run("separate", p, "-o", tmp_path / "out", "--model", tiny_model_path, "-q")
    assert r.exit_code == 0, r.output
    m, stems = stems_of(tmp_path / "out" / "clip")
    assert len(stems) == 4 and m["source_sample_rate"] == 44100


def test_short_and_multichannel_inputs(tiny_model_path, tmp_path):
    p = tmp_path / "short.wav"
    sf.write(p, tone_mix(0.05, 8000, channels=6), 8000)  # 50 ms, 6 channels, 8 kHz
    r = run("separate", p, "-o", tmp_path / "out", "--model", tiny_model_path, "-q")
    assert r.exit_code == 0, r.output
    _, stems = stems_of(tmp_path / "out" / "short")
    assert stems[0][0].shape == (800,)


def test_folder_input_recursive_and_names(tiny_model_path, tmp_path):
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    sf.write(root / "a" / "x.wav", tone_mix(0.5, 16000), 16000)
    sf.write(root / "b" / "x.wav", tone_mix(0.5, 16000, seed=2), 16000)
    (root / "notes.txt").write_text("not audio")
    r = run("separate", root, "-o", tmp_path / "out", "--model", tiny_model_path, "-q")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "a" / "x" / "manifest.json").exists()
    assert (tmp_path / "out" / "b" / "x" / "manifest.json").exists()


def test_existing_output_untouched_without_force(tiny_model_path, wav, tmp_path):
    out = tmp_path / "out"
    assert run("separate", wav, "-o", out, "--model", tiny_model_path, "-q").exit_code == 0
    marker = out / "mix" / "manifest.json"
    before = marker.read_bytes()
    os.utime(marker, (1, 1))
    r = run("separate", wav, "-o", out, "--model", tiny_model_path, "-q")
    assert r.exit_code == 1
    assert "already exists" in r.output and "--force" in r.output
    assert marker.read_bytes() == before and marker.stat().st_mtime == 1
    r = run("separate", wav, "-o", out, "--model", tiny_model_path, "--skip-existing", "-q")
    assert r.exit_code == 0 and marker.stat().st_mtime == 1
    r = run("separate", wav, "-o", out, "--model", tiny_model_path, "--force", "-q")
    assert r.exit_code == 0 and marker.stat().st_mtime > 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_silent_audio_warns_but_succeeds(tiny_model_path, tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(p, np.zeros(16000, dtype=np.float32), 16000)
    r = run("separate", p, "-o", tmp_path / "out", "--model", tiny_model_path)
    assert r.exit_code == 0, r.output
    assert "silent" in r.output
    m, stems = stems_of(tmp_path / "out" / "silence")
    assert m["silent_input"] and all(np.all(s == 0) for s, _ in stems)


def one_line_error(r, *needles):
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert errors, r.output
    for n in needles:
        assert n in r.output, r.output


def make_bad_inputs(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    bad = {}
    bad["empty"] = d / "empty.wav"
    sf.write(bad["empty"], np.zeros(0, dtype=np.float32), 16000)
    bad["zero_bytes"] = d / "zero.wav"
    bad["zero_bytes"].write_bytes(b"")
    bad["corrupt"] = d / "corrupt.wav"
    bad["corrupt"].write_bytes(b"RIFF" + os.urandom(2000))
    bad["nan"] = d / "nan.wav"
    x = np.ones(20000, dtype=np.float32) * 0.1
    x[15000] = np.nan
    sf.write(bad["nan"], x, 16000, subtype="FLOAT")
    bad["inf"] = d / "inf.wav"
    x[15000] = np.inf
    sf.write(bad["inf"], x, 16000, subtype="FLOAT")
    return bad


@pytest.mark.parametrize("kind,needle", [("empty", "empty audio"), ("zero_bytes", "cannot decode"),
                                         ("corrupt", "cannot decode"), ("nan", "NaN or infinite"),
                                         ("inf", "NaN or infinite")])
def test_bad_audio_one_line_error_no_partial_output(tiny_model_path, tmp_path, kind, needle):
    bad = make_bad_inputs(tmp_path / "in")[kind]
    out = tmp_path / "out"
    r = run("separate", bad, "-o", out, "--model", tiny_model_path, "-q")
    one_line_error(r, needle, bad.name)
    assert not out.exists() or not any(out.iterdir())


def test_missing_input(tiny_model_path, tmp_path):
    r = run("separate", tmp_path / "nope.wav", "-o", tmp_path / "out", "--model", tiny_model_path, "-q")
    one_line_error(r, "no such file")


def test_bad_input_among_good_ones(tiny_model_path, wav, tmp_path):
    bad = make_bad_inputs(tmp_path / "bad")
    r = run("separate", bad["corrupt"], wav, bad["nan"], "-o", tmp_path / "out",
            "--model", tiny_model_path, "-q")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert (tmp_path / "out" / "mix" / "manifest.json").exists()
    assert not (tmp_path / "out" / "nan").exists() and not (tmp_path / "out" / "corrupt").exists()
    assert "corrupt.wav" in r.output and "nan.wav" in r.output


def test_unwritable_output(tiny_model_path, wav, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run("separate", wav, "-o", blocker / "sub", "--model", tiny_model_path, "-q")
    one_line_error(r, "cannot create output folder")
    r = run("separate", wav, "-o", blocker, "--model", tiny_model_path, "-q")
    one_line_error(r, "not a folder")


def test_bad_checkpoints_and_options(tiny_model_path, wav, tmp_path):
    import torch

    from macs_cli.separation.model import Separator

    from .conftest import tiny_config

    wrong = tmp_path / "wrong.pt"
    state = Separator(tiny_config(channels=8)).state_dict()
    torch.save({"model.unet." + k[5:]: v for k, v in state.items() if k.startswith("unet.")}, wrong)
    # loads as an 8-channel model: fine; now break one shape
    state = {"model.unet." + k[5:]: v for k, v in state.items()}
    state["model.unet.out_conv.0.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, wrong)
    one_line_error(run("separate", wav, "-o", tmp_path / "o", "--model", wrong, "-q"), "shape mismatch")
    one_line_error(run("separate", wav, "-o", tmp_path / "o", "--model", tmp_path / "none.pt", "-q"),
                   "no such checkpoint")
    for args, needle in [(["--overlap", "0.9"], "--overlap"), (["--sample-rate", "fast"], "--sample-rate"),
                         (["--num-sources", "9"], "--num-sources"), (["--num-sources", "junk"], "--num-sources"),
                         (["--num-sources", "0"], "--num-sources"), (["--num-sources", "2.5"], "--num-sources"),
                         (["--batch-size", "0"], "--batch-size"), (["--stem-mode", "sharp"], "--stem-mode"),
                         (["--device", "tpu"], "--device"), (["--device", "cuda:7"], "--device")]:
        r = run("separate", wav, "-o", tmp_path / "o", "--model", tiny_model_path, "-q", *args)
        one_line_error(r, needle)
        if args[-1] != "cuda:7":     # an invalid value is exit 2 (an unavailable device, 1)
            assert r.exit_code == 2, (args, r.exit_code)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_default_model_ships_and_separates_real_audio(tmp_path):
    """The built-in model: a real two-source mixture (bird song + piano) looped to 40 s, 44.1 kHz
    stereo. Stems sum to the mixture, and the stem carrying each source stays the same across the
    8 s windows."""
    from macs_cli.audio.io import resample

    data = Path(__file__).parent / "data"
    bird, _ = sf.read(data / "bird.flac", dtype="float32")
    piano, _ = sf.read(data / "piano.flac", dtype="float32")
    n = 40 * 16000
    a = np.tile(bird, n // bird.size + 1)[:n]
    b = np.roll(np.tile(piano, n // piano.size + 1)[:n], 5000)
    a, b = a / np.std(a) * 0.1, b / np.std(b) * 0.1
    p = tmp_path / "duet.wav"
    sf.write(p, resample(np.stack([a + b, a + b], 1), 16000, 44100), 44100)
    out = tmp_path / "out"
    r = run("separate", p, "-o", out, "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output
    m, stems = stems_of(out / "duet")
    assert m["model"]["name"] == "macs-default-v1" and len(stems) == 6
    assert m["settings"]["stem_mode_used"] == "clean"           # auto: clean stems for the built-in model
    s = np.stack([x for x, _ in stems])
    mix, _ = read_audio(p, 16000)
    assert np.sqrt(np.mean((s.sum(0) - mix) ** 2)) < 1e-4
    win = 128000
    for src in (a, b):
        idx = []
        for k in range(0, n - win, win // 2):
            seg, ref = s[:, k:k + win], src[k:k + win]
            idx.append(int(np.argmax(seg @ ref / (np.linalg.norm(seg, axis=1) + 1e-9))))
        assert max(idx.count(i) for i in set(idx)) >= 0.8 * len(idx), idx


def test_spectrograms_picture(tiny_model_path, wav, tmp_path):
    r = run("separate", wav, "-o", tmp_path / "out", "--model", tiny_model_path, "--spectrograms", "-q")
    assert r.exit_code == 0, r.output
    png = tmp_path / "out" / "mix" / "spectrograms.png"
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 500 and im.size[1] > 500


def test_dot_file_names_never_map_onto_the_output_folder(tiny_model_path, wav, tmp_path):
    """A file called `..wav` has the stem '.': its output must not be the output folder itself."""
    src = tmp_path / "dots"
    src.mkdir()
    (src / "..wav").write_bytes(Path(wav).read_bytes())
    (src / "...wav").write_bytes(Path(wav).read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = run("separate", src / "..wav", src / "...wav", "-o", out, "--model", tiny_model_path, "--force", "-q")
    assert r.exit_code == 0, r.output
    assert (out / "keep.txt").read_text() == "mine"
    assert (out / "_" / "manifest.json").exists() and (out / "__" / "manifest.json").exists()


def test_output_folder_inside_an_input_folder_is_not_searched(tiny_model_path, wav, tmp_path):
    src = tmp_path / "songs"
    src.mkdir()
    (src / "a.wav").write_bytes(Path(wav).read_bytes())
    out = src / "stems"
    assert run("separate", src, "-o", out, "--model", tiny_model_path, "-q").exit_code == 0
    r = run("separate", src, "-o", out, "--model", tiny_model_path, "--skip-existing")
    assert r.exit_code == 0, r.output
    assert "skip" in r.output and sorted(p.name for p in out.iterdir()) == ["a"]


def test_outputs_get_the_users_umask(tiny_model_path, wav, tmp_path):
    """Files and folders placed atomically get the mode a plain open()/mkdir() would give them."""
    old = os.umask(0o022)
    try:
        assert run("separate", wav, "-o", tmp_path / "out", "--model", tiny_model_path, "-q").exit_code == 0
    finally:
        os.umask(old)
    folder = tmp_path / "out" / "mix"
    assert folder.stat().st_mode & 0o777 == 0o755
    assert (folder / "manifest.json").stat().st_mode & 0o777 == 0o644


def test_sigterm_unwinds_like_ctrl_c_and_leaves_no_temporary_output(tmp_path):
    import signal

    from macs_cli.cli.common import Terminated, exit_cleanly_on_sigterm
    from macs_cli.fsutil import atomic_dir

    before = signal.getsignal(signal.SIGTERM)
    try:
        exit_cleanly_on_sigterm()
        with pytest.raises(Terminated):
            with atomic_dir(tmp_path / "stems") as tmp:
                (tmp / "stem_00.wav").write_bytes(b"partial")
                os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
        Terminated.received = False
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_writes_nothing_leaves_no_output_folder(tiny_model_path, tmp_path):
    r = run("separate", tmp_path / "nope.wav", "-o", tmp_path / "out", "--model", tiny_model_path, "-q")
    assert r.exit_code == 1 and not (tmp_path / "out").exists()
    r = run("separate", tmp_path / "nope.wav", "-o", tmp_path / "out", "--model", tmp_path / "none.pt", "-q")
    assert r.exit_code == 1 and not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("x")
    r = run("separate", tmp_path / "nope.wav", "-o", tmp_path / "file" / "sub", "--model", tiny_model_path, "-q")
    assert r.exit_code == 1 and "not a folder" in r.output


def test_a_file_named_twice_is_separated_once(tiny_model_path, wav, tmp_path):
    r = run("separate", wav, wav, "-o", tmp_path / "out", "--model", tiny_model_path)
    assert r.exit_code == 0, r.output
    assert "clashes" not in r.output and "1 separated" in r.output


def test_usage_mistakes_are_one_line_errors_from_the_console_command():
    """`python -m macs_cli` (and the `macs` script) run main(): a missing or unknown option or a value
    of the wrong type is one `error:` line with exit 2; a verb alone prints its help."""
    import subprocess
    import sys

    for args, needle in ((["separate", "x.wav"], "Missing option '-o'"),
                         (["separate", "x.wav", "-o", "o", "--bogus"], "No such option: --bogus"),
                         (["separate", "x.wav", "-o", "o", "--overlap", "abc"], "--overlap"),
                         (["bogusverb"], "No such command")):
        p = subprocess.run([sys.executable, "-m", "macs_cli", *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], (args, p.stderr)
        assert "--help" in lines[0]
    p = subprocess.run([sys.executable, "-m", "macs_cli", "separate"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "Usage" in p.stdout + p.stderr


def test_folder_search_follows_linked_folders_and_reports_broken_links(tiny_model_path, wav, tmp_path):
    real = tmp_path / "elsewhere"
    real.mkdir()
    (real / "b.wav").write_bytes(Path(wav).read_bytes())
    src = tmp_path / "songs"
    src.mkdir()
    (src / "a.wav").write_bytes(Path(wav).read_bytes())
    (src / "linked").symlink_to(real, target_is_directory=True)
    (src / "loop").symlink_to(src, target_is_directory=True)          # a cycle is walked once
    (src / "gone.wav").symlink_to(tmp_path / "deleted.wav")
    r = run("separate", src, "-o", tmp_path / "out", "--model", tiny_model_path)
    assert r.exit_code == 1 and "gone.wav: broken link" in r.output
    assert (tmp_path / "out" / "a" / "manifest.json").exists()
    assert (tmp_path / "out" / "linked" / "b" / "manifest.json").exists()


def test_paths_with_brackets_are_printed_as_they_are(tiny_model_path, tmp_path):
    """Messages are plain text: a path such as `x[/foo]` or `[red]x` is neither markup nor a crash."""
    for name in ("x[/foo]", "[red]x"):
        missing = tmp_path / name / "a.wav"
        r = run("separate", missing, "-o", tmp_path / "out", "--model", tiny_model_path, "-q")
        assert r.exit_code == 1 and f"error: {missing}: no such file" in r.output, r.output
    r = run("separate", tmp_path / "[/x].wav", "-o", tmp_path / "out", "--overlap", "0.9", "-q")
    assert r.exit_code == 2 and r.output.startswith("error:") and "Traceback" not in r.output


def test_broken_grouping_network_file_is_one_line_before_any_work(tiny_model_path, tmp_path, monkeypatch):
    """A corrupt grouping-network file fails --num-sources with one error line per input, before
    anything is separated or written; without --num-sources it is never read."""
    from macs_cli.separation import grouping as G

    src = tmp_path / "mix.wav"
    sf.write(src, tone_mix(1.0, 16000, seed=5), 16000)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 64)
    G.default_net.cache_clear()
    monkeypatch.setattr(G, "NET_FILE", str(bad))
    try:
        r = run("separate", src, "-o", tmp_path / "out", "--model", tiny_model_path, "-q", "-n", "2")
        assert r.exit_code == 1
        errors = [line for line in r.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "grouping model" in errors[0] and "Traceback" not in r.output
        assert not (tmp_path / "out" / "mix").exists()
        r = run("separate", src, "-o", tmp_path / "plain", "--model", tiny_model_path, "-q")
        assert r.exit_code == 0, r.output
    finally:
        G.default_net.cache_clear()


def _tone_mp3(path: Path, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1234 * t)).astype(np.float32)
    sf.write(path, x, rate, format="MP3", subtype="MPEG_LAYER_III")
    return x


def test_mp3_is_decoded_as_in_one_read_and_stems_sum_to_it(tiny_model_path, tmp_path):
    """libsndfile 1.2 decodes an MP3 read in several blocks wrongly from the third block on (up to
    full scale off); macs reads MP3 whole, so blocks, stems and the whole-file decode agree."""
    from macs_cli.audio.io import iter_blocks

    p = tmp_path / "tone.mp3"
    _tone_mp3(p, 3.0, 44100)
    whole, _ = sf.read(p, dtype="float32")
    blocks = np.concatenate(list(iter_blocks(p, block_frames=4096)))
    assert blocks.shape == whole.shape and np.abs(blocks - whole).max() < 1e-6
    r = run("separate", p, "-o", tmp_path / "out", "--model", tiny_model_path, "-q", "--sample-rate", "input")
    assert r.exit_code == 0, r.output
    _, stems = stems_of(tmp_path / "out" / "tone")
    total = sum(s for s, _ in stems)
    assert total.shape == whole.shape and np.abs(total - whole).max() < 1e-4


def test_mp3_whose_header_overstates_its_length(tiny_model_path, tmp_path):
    """A cut-off MP3 keeps a header that promises the whole length; the decoded length counts
    (manifest, stem length), the second pass does not run dry, and the next input goes on."""
    from macs_cli.audio.io import iter_blocks

    full = tmp_path / "full.mp3"
    _tone_mp3(full, 4.0, 16000)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with sf.SoundFile(cut) as f:
        header = f.frames
    decoded = len(sf.read(cut, dtype="float32")[0])
    assert decoded < header                       # the case: the header says more than decodes
    assert sum(len(b) for b in iter_blocks(cut, block_frames=4096)) == decoded
    ok = tmp_path / "ok.wav"
    sf.write(ok, tone_mix(1.0, 16000), 16000)
    r = run("separate", cut, ok, "-o", tmp_path / "out", "--model", tiny_model_path, "-q", "-n", "2")
    assert r.exit_code == 0, r.output
    m, stems = stems_of(tmp_path / "out" / "cut")
    assert m["source_frames"] == decoded and all(s.shape == (decoded,) for s, _ in stems)
    assert (tmp_path / "out" / "ok" / "manifest.json").exists()


def test_a_long_multibyte_name_is_separated(tiny_model_path, tmp_path):
    """A 244-byte name of 3-byte characters: its temporary folder's shortened name must stay whole
    characters, or the stems inside cannot be opened (that crashed the batch)."""
    d = tmp_path / "in"
    d.mkdir()
    sf.write(d / ("日" * 80 + ".wav"), tone_mix(0.5, 16000), 16000)
    sf.write(d / "ok.wav", tone_mix(0.5, 16000, seed=1), 16000)
    r = run("separate", d, "-o", tmp_path / "out", "--model", tiny_model_path, "-q")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / ("日" * 80) / "manifest.json").exists()
    assert (tmp_path / "out" / "ok" / "manifest.json").exists()


@pytest.mark.parametrize("rate", ["input", "22050"])
def test_manifest_levels_describe_the_files_at_another_output_rate(tiny_model_path, tmp_path, rate):
    """At an output rate other than the model's, the files hold more than the model-rate stems
    (the band above 8 kHz is shared among them): rms, rms_db and activity are measured on the
    files, as with --num-sources. A 12 kHz tone used to be listed at about -82 dB in every stem."""
    t = np.arange(44100 * 2) / 44100
    x = (0.3 * np.sin(2 * np.pi * 12000 * t) + 0.1 * tone_mix(2.0, 44100)).astype(np.float32)
    p = tmp_path / "hf.wav"
    sf.write(p, x, 44100)
    r = run("separate", p, "-o", tmp_path / "out", "--model", tiny_model_path, "-q", "--sample-rate", rate)
    assert r.exit_code == 0, r.output
    m, stems = stems_of(tmp_path / "out" / "hf")
    assert m["sample_rate"] == (44100 if rate == "input" else 22050)
    for entry, (y, _) in zip(m["stems"], stems):
        assert entry["rms"] == pytest.approx(float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))), rel=1e-3)
        if rate == "input":   # made to sum to the input: every stem holds its share of the 12 kHz tone
            assert entry["rms_db"] > -40


def test_an_input_shorter_than_one_model_sample_is_a_one_line_error(tiny_model_path, tmp_path):
    """One sample at 48 kHz is nothing at 16 kHz: an error for that input (it used to give empty
    stems and the false warning that the input was silent); the next input goes on."""
    sf.write(tmp_path / "one.wav", np.array([0.5], np.float32), 48000)
    sf.write(tmp_path / "ok.wav", tone_mix(0.5, 16000), 16000)
    r = run("separate", tmp_path / "one.wav", tmp_path / "ok.wav", "-o", tmp_path / "out",
            "--model", tiny_model_path, "-q", "--stem-mode", "CLEAN")
    assert r.exit_code == 1
    assert "too short to separate" in r.output and "silent" not in r.output
    assert not (tmp_path / "out" / "one").exists()
    m, _ = stems_of(tmp_path / "out" / "ok")
    assert m["settings"]["stem_mode"] == "clean"      # case-blind, as the other options


@pytest.mark.parametrize("verb", ["separate", "embed", "rank", "generate", "eval", "train-sep", "train-gen"])
def test_an_empty_output_option_is_a_usage_error(verb, tmp_path):
    """`-o "$OUT"` with OUT unset must not write into the current folder."""
    r = run(verb, "-o", "", tmp_path / "x.wav")
    assert r.exit_code == 2 and "must not be empty" in r.output, r.output


def test_mp3_whose_header_promises_an_impossible_length(tiny_model_path, tmp_path):
    """A damaged Xing header claiming 3e11 frames: memory follows what decodes, not the header,
    and the input is separated (allocating the header's length failed with a traceback)."""
    import struct

    p = tmp_path / "x.mp3"
    _tone_mp3(p, 2.0, 44100)
    data = bytearray(p.read_bytes())
    at = max(data.find(b"Xing"), data.find(b"Info"))
    if at < 0:
        pytest.skip("this libsndfile writes no Xing/Info header")
    data[at + 8: at + 12] = struct.pack(">I", 0x0FFFFFFF)
    p.write_bytes(bytes(data))
    with sf.SoundFile(p) as f:
        assert f.frames > 10 ** 9
    r = run("separate", p, "-o", tmp_path / "out", "--model", tiny_model_path, "-q")
    assert r.exit_code == 0, r.output
    m, _ = stems_of(tmp_path / "out" / "x")
    assert 44100 * 2 <= m["source_frames"] < 44100 * 3
