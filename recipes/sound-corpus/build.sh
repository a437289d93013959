#!/usr/bin/env bash
# Build the labelled 16 kHz mono sound corpus from Debian packages.
# Usage: bash recipes/sound-corpus/build.sh [OUTDIR]      (default data/sound-corpus)
# Idempotent: .debs are cached in data/.debs, extracted trees in data/.extract,
# rendered fluidsynth/espeak material in data/.render; OUTDIR/clips is rebuilt.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
OUTDIR="${1:-data/sound-corpus}"
DEBS="data/.debs"
EXTRACT="data/.extract"
RENDER="data/.render"
PY="${PYTHON:-python3}"

# the package list lives in build_corpus.py (PACKAGES); --list-packages refuses deny-listed ones
read -r -a PACKAGES <<< "$("$PY" "$HERE/build_corpus.py" --list-packages)"
"$PY" "$HERE/build_corpus.py" --check-packages "${PACKAGES[@]}"

echo "== sound-corpus: output $OUTDIR"
mkdir -p "$DEBS" "$EXTRACT" "$RENDER" "$OUTDIR"

# 1. tools: fluidsynth + espeak-ng (needs root for apt-get; skipped if present)
need=()
command -v fluidsynth >/dev/null || need+=(fluidsynth)
command -v espeak-ng  >/dev/null || need+=(espeak-ng)
if ((${#need[@]})); then
  echo "== installing ${need[*]}"
  if [ "$(id -u)" = 0 ]; then apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
  else sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; fi
fi

# 2. download (no dependencies) and extract each package
for p in "${PACKAGES[@]}"; do
  "$PY" "$HERE/build_corpus.py" --check-packages "$p" || exit 1   # never download a denied package
  if ! ls "$DEBS/${p}_"*.deb >/dev/null 2>&1; then
    echo "== downloading $p"
    (cd "$DEBS" && apt-get download "$p" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  fi
  deb=$(ls "$DEBS/${p}_"*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then echo "!! could not download $p (skipping)"; continue; fi
  if [ ! -f "$EXTRACT/$p/.done" ]; then
    echo "== extracting $(basename "$deb")"
    rm -rf "$EXTRACT/$p"; mkdir -p "$EXTRACT/$p"
    # audio, soundfonts, zip-format containers and the copyright file only
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$EXTRACT/$p" --wildcards --no-anchored \
      '*.ogg' '*.wav' '*.flac' '*.mp3' '*.OGG' '*.WAV' '*.cat' '*.sf2' '*.sf3' '*.zip' '*.pk3' '*.wz' \
      '*.orgue' '*.rcc' '*.pat' '*.wad' '*.ocg' '*copyright' || true
    touch "$EXTRACT/$p/.done"
  fi
done

# 3. python part (needs numpy, scipy, soundfile>=0.12 with mp3 support)
"$PY" -c "import numpy, scipy, soundfile" || { echo "!! need numpy scipy soundfile"; exit 1; }
"$PY" "$HERE/build_corpus.py" --extract "$EXTRACT" --cache "$RENDER" --outdir "$OUTDIR" ${DENY_AUDIO:+--deny-audio "$DENY_AUDIO"}
"$PY" "$HERE/licences.py" --extract "$EXTRACT" --outdir "$OUTDIR" > "$OUTDIR/licences.md"
echo "== done: $OUTDIR/manifest.csv, $OUTDIR/corpus-ogg.npz, $OUTDIR/licences.csv"
