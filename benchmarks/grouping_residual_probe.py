"""Would ``--num-sources`` gain by leaving ambiguous stems out? The shipped soft memberships W
(M stems x K outputs, rows summing to one) raised to a power g: without renormalising, a stem
split between outputs loses part of its energy (it would go to a residual output, not scored);
renormalised, W**g is only a sharper assignment. Scored like ``fit_grouping_net.py eval``
(matched SI-SDRi of the K, or auto's audible, outputs), paired against g = 1 (what ships).

    python benchmarks/grouping_residual_probe.py --val /work/cache/dev/gnet_val23.npz \
        --out benchmarks/results/grouping_residual_probe_dev.json

``--val``: a file from ``fit_grouping_net.py make --keep-audio`` (training split only).
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from macs_cli.evaluation.sisdr import matched_sisdr  # noqa: E402
from macs_cli.separation import grouping as G  # noqa: E402
from separation_quality import drop_silent  # noqa: E402

log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731


def variants(powers) -> list[tuple[str, float, bool]]:
    out = [("g1", 1.0, False)]
    for g in powers:
        out += [(f"g{g:g}", g, False), (f"g{g:g}-renorm", g, True)]
    return out


def reweight(w: np.ndarray, g: float, renorm: bool) -> np.ndarray:
    w = w ** g
    return w / w.sum(1, keepdims=True) if renorm else w


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--per-count", type=int, default=0, help="mixtures per source count (0: all)")
    ap.add_argument("--powers", type=float, nargs="+", default=[1.5, 2.0, 3.0])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    va = dict(np.load(args.val))
    if "stems" not in va:
        raise SystemExit(f"{args.val}: made without --keep-audio, cannot be scored")
    rate, n_fft = int(va["rate"]), int(va["n_fft"])
    net = G.default_net()
    vs = variants(args.powers)
    per: dict[str, dict[str, dict[str, list]]] = {}
    t0 = time.time()
    counts = sorted(set(va["s"].tolist()))
    for s in counts:
        idx = np.where(va["s"] == s)[0]
        if args.per_count:
            idx = idx[: args.per_count]
        for i in idx:
            stems, refs = va["stems"][i], torch.from_numpy(va["refs"][i][:s])
            stats = G.statistics_of(stems, rate, n_fft)
            for mode, key in ((s, "K"), ("auto", "auto")):
                plan = G.plan_grouping(stats, mode, net=net)
                for name, g, renorm in vs:
                    p = G.GroupingPlan(reweight(plan.weights, g, renorm), mode, plan.estimated)
                    est = G.render(stems, p, n_fft)
                    if mode == "auto":
                        est = drop_silent(est, rate)
                    v = matched_sisdr(torch.from_numpy(est), refs) - float(va["base"][i])
                    per.setdefault(key, {}).setdefault(name, {}).setdefault(str(s), []).append(float(v))
        log(f"{s} sources: {len(idx)} mixtures ({time.time() - t0:.0f} s)")
    res: dict = {"val": str(args.val), "variants": {}}
    for key, table in per.items():
        for name, d in table.items():
            row = {}
            for s, v in d.items():
                v = np.array(v)
                diff = v - np.array(table["g1"][s])
                half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
                row[s] = {"mean": float(v.mean()), "minus_g1": [float(diff.mean()), float(half)]}
            res["variants"][f"{key} {name}"] = row
            log(f"{key:4s} {name:10s} " + "  ".join(
                f"{s} src {r['mean']:5.2f} ({r['minus_g1'][0]:+.2f} ± {r['minus_g1'][1]:.2f})" for s, r in row.items()))
    sel = {str(s): np.where(va["s"] == s)[0][: args.per_count or None] for s in counts}
    res["clean_one_to_one"] = {s: float(va["clean121"][i].mean()) for s, i in sel.items()}
    res["grouped"] = {s: float(va["grouped"][i].mean()) for s, i in sel.items()}
    res["seconds"] = round(time.time() - t0, 1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
