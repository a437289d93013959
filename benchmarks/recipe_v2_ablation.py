"""Rank recipe-v2 training options: evaluate short continued-training runs on the same
real-condition held-out mixtures.

Each run is a ``macs train-sep`` run folder (or any ``--model`` value, e.g. ``default`` for v1
itself). Every model separates the same mixtures: ``real_eval_set`` of the held-out split, S = 2, 3
(and 4) sources, seed ``--seed + S`` (the trainer's validation seed, 1234, not the benchmark's 0,
so the options are not chosen on the benchmark's mixtures). Per model: grouped and one-to-one
SI-SDR improvement (mean, std over mixtures, per S), the stems' L1/L2 activity ratio (1: all on one
stem, sqrt(M): spread evenly) and, against ``--baseline``, the paired per-mixture difference with a
95 % interval (spread over mixtures, not over training seeds: compare with the baseline's second seed
for the run-to-run noise).

    python benchmarks/recipe_v2_ablation.py --corpus data/sound-corpus/manifest.csv \
        --run v1=default --run baseline=/tmp/r2/baseline --run sparsity2=/tmp/r2/sparsity2 \
        --baseline baseline --mixtures 24 --out benchmarks/results/recipe_v2_ablation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macs_cli.evaluation.sisdr import best_grouped_sisdr, best_one_to_one_sisdr, mixture_sisdr  # noqa: E402
from macs_cli.training.data import load_clip_bank, real_eval_set  # noqa: E402
from macs_cli.weights.separator import load_separator  # noqa: E402

RUN_KEYS = {"mix": ("sources_per_mixture", "total_sources", "gain_db", "loop_prob", "balance"),
            "loss": ("sparsity", "sparsity_kind"), "augment": ("eq_prob", "eq_db", "reverb_prob", "rt60", "drr_db"),
            "optim": ("lr", "warmup", "batch_size"), "train": ("steps", "seed", "init"), "model": ("channels",)}


def summary(x) -> dict:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0, "n": int(x.size)}


def paired(a, b) -> dict:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else 0.0
    return {"mean": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)],
            "better_fraction": float((d > 0).mean())}


def run_settings(spec: str) -> dict | None:
    cfg = Path(spec) / "config.yaml"
    if not cfg.is_file():
        return None
    import yaml

    c = yaml.safe_load(cfg.read_text())
    out = {f"{sec}.{k}": c.get(sec, {}).get(k) for sec, keys in RUN_KEYS.items() for k in keys}
    metrics = Path(spec) / "metrics.csv"
    if metrics.is_file():
        rows = metrics.read_text().strip().splitlines()
        out["train_seconds"] = float(rows[-1].split(",")[-1]) if len(rows) > 1 else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--run", action="append", required=True, help="NAME=MODEL (a run folder, default, ...)")
    ap.add_argument("--baseline", default=None, help="the NAME the others are compared with")
    ap.add_argument("--mixtures", type=int, default=24, help="per source count")
    ap.add_argument("--sources", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bank = load_clip_bank(args.corpus, "heldout", 16000, 8.0)
    runs = [r.split("=", 1) for r in args.run]
    sets = {s: real_eval_set(bank, args.mixtures, s, 128000, seed=args.seed + s) for s in args.sources}
    per: dict[str, dict] = {}
    for name, spec in runs:
        t0 = time.time()
        model = load_separator(spec).eval()
        g, o, act = [], [], []
        by_s = {}
        for s, (mix, refs) in sets.items():
            gs, os_ = [], []
            with torch.inference_mode():
                for i in range(0, len(mix), args.batch):
                    m, r = mix[i: i + args.batch], refs[i: i + args.batch]
                    stems = model(m).float()
                    base = mixture_sisdr(m, r)
                    gs += (best_grouped_sisdr(stems, r)[0] - base).tolist()
                    os_ += (best_one_to_one_sisdr(stems, r)[0] - base).tolist()
                    rms = stems.square().mean(-1).sqrt()
                    act += (rms.sum(-1) / rms.square().sum(-1).sqrt()).tolist()
            by_s[str(s)] = {"grouped": summary(gs)["mean"], "one_to_one": summary(os_)["mean"]}
            g += gs
            o += os_
        per[name] = {"model": spec, "settings": run_settings(spec), "grouped": summary(g),
                     "one_to_one": summary(o), "stem_l1_l2": summary(act), "by_sources": by_s,
                     "per_mixture": {"grouped": g, "one_to_one": o}, "eval_seconds": round(time.time() - t0, 1)}
        print(f"{name}: grouped {np.mean(g):.2f} dB, one-to-one {np.mean(o):.2f} dB, "
              f"stem L1/L2 {np.mean(act):.2f} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    if args.baseline:
        ref = per[args.baseline]["per_mixture"]
        for name, r in per.items():
            if name != args.baseline:
                r["vs_baseline"] = {k: paired(r["per_mixture"][k], ref[k]) for k in ("grouped", "one_to_one")}
    out = {"corpus": args.corpus, "heldout_clips": len(bank), "mixtures_per_source_count": args.mixtures,
           "sources": args.sources, "seed": args.seed, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "runs": per}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: {"grouped": v["grouped"]["mean"], "one_to_one": v["one_to_one"]["mean"],
                          "vs_baseline": v.get("vs_baseline")} for k, v in per.items()}, indent=1))


if __name__ == "__main__":
    main()
