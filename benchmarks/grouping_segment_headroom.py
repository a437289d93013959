"""Headroom of a grouping that changes over time: the best grouping of the clean stems chosen per
segment (oracle, by SI-SDR against the references) against one grouping for the whole file.

    python benchmarks/grouping_segment_headroom.py --val /work/cache/dev/gnet_val.npz --per-count 60 \
        --out benchmarks/results/grouping_segment_headroom_dev.json

``--val``: a file from ``fit_grouping_net.py make --keep-audio`` (training split). Per segment the
best grouping is taken on that segment alone (optimistic: short segments let it fit noise);
the outputs are stitched and scored on the whole file (SI-SDRi, dB, mean over references).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from macs_cli.evaluation.sisdr import best_grouped_sisdr, si_sdr  # noqa: E402
from macs_cli.separation import grouping as G  # noqa: E402


def headroom(clean: torch.Tensor, refs: torch.Tensor, segments: int) -> float:
    """Mean SI-SDR (dB) of the outputs grouped by the best grouping of each of ``segments`` equal
    parts of the file (clean (M, T), refs (S, T), float64)."""
    t = clean.shape[1]
    step = t // segments
    out = torch.zeros(refs.shape[0], t, dtype=torch.float64)
    for k in range(segments):
        part = slice(k * step, t if k == segments - 1 else (k + 1) * step)
        _, mats = best_grouped_sisdr(clean[None, :, part], refs[None, :, part])
        out[:, part] = mats[0].double() @ clean[:, part]
    return float(si_sdr(out, refs).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--per-count", type=int, default=60, help="mixtures per source count (the first ones)")
    ap.add_argument("--segments", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.time()
    va = np.load(args.val)
    if "stems" not in va.files:
        raise SystemExit(f"{args.val}: made without --keep-audio")
    counts = sorted(set(va["s"].tolist()))
    res = {}
    for s in counts:
        rows = {"whole file": [], **{f"{n} segments": [] for n in args.segments}}
        for i in np.where(va["s"] == s)[0][: args.per_count]:
            refs = torch.from_numpy(va["refs"][i][:s]).double()
            clean = torch.from_numpy(G.clean_stems(va["stems"][i], int(va["n_fft"]))).double()
            base = float(va["base"][i])
            rows["whole file"].append(headroom(clean, refs, 1) - base)
            for n in args.segments:
                rows[f"{n} segments"].append(headroom(clean, refs, n) - base)
        res[str(s)] = {k: float(np.mean(v)) for k, v in rows.items()}
        print(s, "sources:", "  ".join(f"{k} {v:.2f}" for k, v in res[str(s)].items()), file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps({"what": "oracle grouping of the clean stems per segment vs per file, SI-SDRi dB",
                                        "command": " ".join(["python", "benchmarks/grouping_segment_headroom.py", *(argv or sys.argv[1:])]),
                                        "seconds": round(time.time() - t0, 1), "results": res}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
