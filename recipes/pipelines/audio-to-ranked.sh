#!/usr/bin/env bash
# audio -> stems -> CLAP embeddings -> ranked embeddings, in one line per file.
#   bash recipes/pipelines/audio-to-ranked.sh MIX.wav OUTDIR [TOP_K]
# Environment: MACS_MODEL (separator, default 'default'), MACS_CLAP (CLAP, default 'default'),
# MACS_DEVICE (cpu/cuda), MACS_LABELS (e.g. 'audioset' to tag each stem).
# Writes OUTDIR/stems/<name>/ (stems + manifest), OUTDIR/<name>.npy (+ .json) and
# OUTDIR/<name>.ranked.npy (+ .json: order, scores, Spearman, labels).
set -euo pipefail
mix=$1; out=$2; k=${3:-3}
name=$(basename "${mix%.*}")
dev=(); [ -n "${MACS_DEVICE:-}" ] && dev=(--device "$MACS_DEVICE")
labels=(); [ -n "${MACS_LABELS:-}" ] && labels=(--labels "$MACS_LABELS")
macs separate "$mix" -o "$out/stems" --model "${MACS_MODEL:-default}" "${dev[@]}" -q --force \
  && macs embed "$out/stems/$name" -o "$out/$name.npy" --clap "${MACS_CLAP:-default}" "${dev[@]}" "${labels[@]}" -q --force \
  && macs rank "$out/$name.npy" -o "$out/$name.ranked.npy" --top-k "$k" --force
