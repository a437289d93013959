"""Shift test-time augmentation for the built-in separator: separate the mixture rolled by a few
offsets, roll the stems back, align each pass's stems to the first pass's
(``chunking.align_permutation``), average the raw stems, then make them clean as
``macs separate`` does. Scored one-to-one and grouped (oracle) against one pass, paired.

    python benchmarks/shift_tta_probe.py --val /work/cache/dev/gnet_val23.npz --per-count 40 \
        --out benchmarks/results/shift_tta_probe_dev.json

``--val``: a file from ``fit_grouping_net.py make --keep-audio`` (training split only).
``--shifts`` are in samples at the model rate (the first should be 0: the pass that ships).
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

from macs_cli.audio.chunking import align_permutation  # noqa: E402
from macs_cli.evaluation.sisdr import best_grouped_sisdr, best_one_to_one_sisdr  # noqa: E402
from macs_cli.separation import grouping as G  # noqa: E402

log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731


def shifted_stems(model, mix: torch.Tensor, shifts) -> np.ndarray:
    """(P, M, T) raw stems of ``mix`` (T,) rolled by each shift and rolled back, aligned to pass 0."""
    batch = torch.stack([torch.roll(mix, s) for s in shifts])
    with torch.inference_mode():
        out = model(batch).float().numpy()
    out = np.stack([np.roll(o, -s, axis=-1) for o, s in zip(out, shifts)])
    for p in range(1, len(shifts)):
        out[p] = out[p][align_permutation(out[0], out[p])]
    return out


def main(argv=None) -> int:
    from macs_cli.weights.separator import load_separator
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--per-count", type=int, default=40)
    ap.add_argument("--shifts", type=int, nargs="+", default=[0, 1700, 3300, 5100])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    va = dict(np.load(args.val))
    if "mix" not in va:
        raise SystemExit(f"{args.val}: made without --keep-audio, cannot be scored")
    n_fft = int(va["n_fft"])
    model = load_separator("default", device="cpu").eval()
    res: dict = {"val": str(args.val), "shifts": args.shifts, "per_count": {}}
    t0 = time.time()
    alld = []
    for s in sorted(set(va["s"].tolist())):
        idx = np.where(va["s"] == s)[0][: args.per_count]
        rows = {"one_to_one": [], "grouped": []}
        for i in idx:
            mix, refs = torch.from_numpy(va["mix"][i]), torch.from_numpy(va["refs"][i][:s])[None]
            passes = shifted_stems(model, mix, args.shifts)
            single = torch.from_numpy(G.clean_stems(passes[0], n_fft))[None]
            tta = torch.from_numpy(G.clean_stems(passes.mean(0), n_fft))[None]
            o1, ot = (float(best_one_to_one_sisdr(x, refs)[0][0]) for x in (single, tta))
            g1, gt = (float(best_grouped_sisdr(x, refs)[0][0]) for x in (single, tta))
            rows["one_to_one"].append(ot - o1)
            rows["grouped"].append(gt - g1)
        d = {}
        for k, v in rows.items():
            v = np.array(v)
            d[k] = [float(v.mean()), float(1.96 * v.std(ddof=1) / np.sqrt(len(v)))]
        alld += rows["one_to_one"]
        res["per_count"][str(s)] = d
        log(f"{s} sources ({len(idx)}): tta - single, one-to-one {d['one_to_one'][0]:+.2f} ± {d['one_to_one'][1]:.2f}"
            f"  grouped {d['grouped'][0]:+.2f} ± {d['grouped'][1]:.2f}  ({time.time() - t0:.0f} s)")
    a = np.array(alld)
    res["all_one_to_one"] = [float(a.mean()), float(1.96 * a.std(ddof=1) / np.sqrt(len(a)))]
    res["cost"] = f"{len(args.shifts)} passes of the network per input"
    res["seconds"] = round(time.time() - t0, 1)
    log(f"all: one-to-one {res['all_one_to_one'][0]:+.2f} ± {res['all_one_to_one'][1]:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
