"""Separation quality on held-out mixtures: the default model against non-learned references.

For each source count S (default 2 and 3) it builds ``--mixtures`` deterministic 8 s mixtures of
held-out clips with :func:`macs_cli.training.data.fixed_eval_set` (one clip per source, distinct
labels, random offsets, +-5 dB gains), runs

* ``model``      -- the separator (``--model``, default: the one shipped in the package), 6 stems
* ``band_split`` -- 6 fixed mel-spaced frequency bands (the floor)
* ``nmf``        -- KL-NMF with 6 components, soft masks
* ``irm``        -- the oracle ideal ratio mask, S stems (the ceiling for masking this STFT)

and reports the SI-SDR improvement over the unprocessed mixture (per item: the method's mean
SI-SDR over the S references minus the mixture's), with the best grouping of stems to sources and
with the best one-to-one assignment (S stems chosen, the rest dropped), plus the absolute SI-SDR
of the unprocessed mixture.

    python benchmarks/separation_quality.py --corpus data/corpus-mulaw.npz --mixtures 100 \
        --seed 0 --out benchmarks/results/separation_quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from macs_cli.evaluation.baselines import band_split, ideal_ratio_mask, nmf_separate
from macs_cli.evaluation.sisdr import best_grouped_sisdr, best_one_to_one_sisdr, mixture_sisdr
from macs_cli.training.data import fixed_eval_set, load_clip_bank
from macs_cli.weights.separator import load_separator

METHODS = ("model", "band_split", "nmf", "irm")
FRAME = 1600                 # 100 ms at 16 kHz
ACTIVE_DB = -30.0            # a source is active in a frame within 30 dB of its loudest frame
OVERLAP_MIN = 0.10           # "overlapping" subset: >= 2 sources active in >= 10 % of the frames
LABELS = {"model": "MACS default model (6 stems)", "band_split": "band split (6 mel bands)",
          "nmf": "KL-NMF (6 components, 200 it.)", "irm": "IRM oracle (S stems)"}


def summary(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
            "median": float(np.median(x)), "min": float(x.min()), "max": float(x.max()),
            "n": int(x.size)}


def temporal_overlap(refs: torch.Tensor) -> np.ndarray:
    """Per mixture, the fraction of 100 ms frames in which at least two references are active
    (frame power within 30 dB of that reference's loudest frame). Depends on the references only."""
    n, s, length = refs.shape
    frames = length // FRAME
    power = refs[..., : frames * FRAME].reshape(n, s, frames, FRAME).double().square().mean(-1)
    active = power > power.amax(-1, keepdim=True) * 10 ** (ACTIVE_DB / 10)
    return ((active.sum(1) >= 2).double().mean(-1)).numpy()


def run_batched(fn, mix: torch.Tensor, refs: torch.Tensor, batch: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Grouped and one-to-one SI-SDR (absolute, dB) per item of ``fn(mix, refs) -> stems``."""
    grouped, one = [], []
    t0 = time.time()
    for i in range(0, mix.shape[0], batch):
        m, r = mix[i: i + batch], refs[i: i + batch]
        stems = fn(m, r)
        grouped.append(best_grouped_sisdr(stems, r)[0])
        one.append(best_one_to_one_sisdr(stems, r)[0])
    return torch.cat(grouped).numpy(), torch.cat(one).numpy(), time.time() - t0


def evaluate(model, bank, sources: int, count: int, seed: int, batch: int, nmf_iterations: int,
             log, loop_prob: float = 0.0) -> dict:
    length = model.config.window_samples
    t0 = time.time()
    extra = {"loop_prob": loop_prob} if loop_prob else {}  # 0: the default eval set
    mix, refs = fixed_eval_set(bank, count, sources, length, seed=seed, **extra)
    log(f"  {sources} sources: {count} mixtures built in {time.time() - t0:.1f} s")
    base = mixture_sisdr(mix, refs).numpy()
    overlap = temporal_overlap(refs)
    sub = overlap >= OVERLAP_MIN

    def run_model(m, r):
        with torch.inference_mode():
            return model(m).float()

    fns = {
        "model": run_model,
        "band_split": lambda m, r: band_split(m, num_bands=6),
        "nmf": lambda m, r: nmf_separate(m, num_components=6, iterations=nmf_iterations, seed=0),
        "irm": lambda m, r: ideal_ratio_mask(m, r),
    }
    out: dict = {"sources": sources, "mixtures": count, "seed": seed, "length": length,
                 "mixture_sisdr": summary(base),
                 "temporal_overlap": {**summary(overlap), "zero_fraction": float((overlap == 0).mean()),
                                      "overlapping_subset_size": int(sub.sum())},
                 "methods": {}, "overlapping_subset": {"mixture_sisdr": summary(base[sub]), "methods": {}},
                 "per_item": {"mixture_sisdr": base.round(4).tolist(), "temporal_overlap": overlap.round(4).tolist()}}
    for name in METHODS:
        g, o, secs = run_batched(fns[name], mix, refs, batch)
        gi, oi = g - base, o - base
        out["methods"][name] = {
            "grouped_sisdri": summary(gi), "one_to_one_sisdri": summary(oi),
            "grouped_sisdr": summary(g), "one_to_one_sisdr": summary(o),
            "seconds": round(secs, 2),
        }
        out["overlapping_subset"]["methods"][name] = {"grouped_sisdri": summary(gi[sub]),
                                                      "one_to_one_sisdri": summary(oi[sub])}
        out["per_item"][name] = {"grouped_sisdri": gi.round(4).tolist(), "one_to_one_sisdri": oi.round(4).tolist()}
        log(f"    {name:<10} grouped {gi.mean():6.2f} dB  one-to-one {oi.mean():6.2f} dB  ({secs:.1f} s)")
    # paired differences model - nmf (same mixtures): mean and a normal 95% interval
    paired = {}
    for key in ("grouped_sisdri", "one_to_one_sisdri"):
        d = np.array(out["per_item"]["model"][key]) - np.array(out["per_item"]["nmf"][key])
        half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
        paired[key] = {"mean": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)],
                       "model_better_fraction": float((d > 0).mean())}
    out["model_minus_nmf"] = paired
    return out


def fmt(s: dict) -> str:
    return f"{s['mean']:.2f} ± {s['std']:.2f} ({s['median']:.2f})"


def markdown(results: dict, subset: bool = False) -> str:
    sets = [r["overlapping_subset"] | {"sources": r["sources"]} if subset else r for r in results["sets"]]
    head = "| method | " + " | ".join(f"{r['sources']} src grouped | {r['sources']} src one-to-one"
                                      for r in sets) + " |"
    rule = "|---|" + "---|---|" * len(sets)
    rows = [head, rule]
    rows.append("| unprocessed mixture: absolute SI-SDR | " + " | ".join(
        f"{fmt(r['mixture_sisdr'])} | (same)" for r in sets) + " |")
    if subset:
        rows.append("| mixtures in the subset | " + " | ".join(
            "{0} | {0}".format(r['methods']['model']['grouped_sisdri']['n']) for r in sets) + " |")
    rows.append("| unprocessed mixture: SI-SDRi | " + " | ".join("0 | 0" for _ in sets) + " |")
    for name in METHODS:
        rows.append(f"| {LABELS[name]} | " + " | ".join(
            f"{fmt(r['methods'][name]['grouped_sisdri'])} | {fmt(r['methods'][name]['one_to_one_sisdri'])}"
            for r in sets) + " |")
    return "\n".join(rows)


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    return {"cpu": cpu, "nproc": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "git_commit": commit}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="data/corpus-mulaw.npz", help="corpus .npz (its 'heldout' split is used)")
    p.add_argument("--mixtures", type=int, default=100, help="mixtures per source count")
    p.add_argument("--sources", type=int, nargs="+", default=[2, 3], help="source counts")
    p.add_argument("--seed", type=int, default=0,
                   help="mixtures with S sources use seed + S (the trainer's validation set is seed 1234)")
    p.add_argument("--loop-prob", type=float, default=0.0,
                   help="chance that a clip loops through the whole window (fixed_eval_set's loop_prob); "
                        "1 makes every source last the whole 8 s, so all sources overlap all the time")
    p.add_argument("--model", default="default")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--nmf-iterations", type=int, default=200)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    p.add_argument("--out", type=Path, default=None, help="results JSON")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()
    model = load_separator(args.model, device="cpu").eval()
    cfg = model.config
    bank = load_clip_bank(args.corpus, "heldout", cfg.sample_rate, max_seconds=cfg.window_seconds)
    log(f"model {cfg.name} (NC={cfg.channels}, M={cfg.num_sources}); held-out bank: {len(bank)} clips, "
        f"{bank.seconds:.0f} s")
    results = {
        "benchmark": "separation_quality",
        "corpus": str(args.corpus), "split": "heldout", "heldout_clips": len(bank),
        "heldout_seconds": round(bank.seconds, 1),
        "model": {"spec": args.model, "source": getattr(model, "source", ""), "config": cfg.to_dict()},
        "settings": {"mixtures": args.mixtures, "seed": args.seed, "nmf_iterations": args.nmf_iterations,
                     "band_split_bands": 6, "nmf_components": 6, "window_seconds": cfg.window_seconds,
                     "gain_db": [-5.0, 5.0], "repeats": [1, 2], "loop_prob": args.loop_prob},
        "metric": "SI-SDR improvement (dB) over the unprocessed mixture: per item, mean over the S "
                  "references of the method's SI-SDR minus the mixture's; best grouping of stems to "
                  "sources (each source gets >= 1 stem, every stem used) and best one-to-one "
                  "assignment (S distinct stems, the rest dropped). IRM has exactly S stems.",
        "overlap_definition": f"fraction of 100 ms frames with >= 2 references active (frame power within "
                              f"{-ACTIVE_DB:.0f} dB of the reference's loudest frame); 'overlapping_subset': "
                              f">= {OVERLAP_MIN:.0%}",
        "machine": machine(),
        "sets": [],
    }
    for s in args.sources:
        results["sets"].append(evaluate(model, bank, s, args.mixtures, args.seed + s, args.batch_size,
                                        args.nmf_iterations, log, args.loop_prob))
    results["wall_seconds"] = round(time.time() - t0, 1)
    table = markdown(results)
    results["markdown"] = table
    results["markdown_overlapping"] = markdown(results, subset=True)
    looped = f" (loop_prob {args.loop_prob})" if args.loop_prob else ""
    print(f"SI-SDRi in dB: mean ± std (median) over {args.mixtures} held-out mixtures per column{looped}\n")
    print(table)
    print(f"\nOnly mixtures in which >= 2 sources are active in >= {OVERLAP_MIN:.0%} of the 100 ms frames "
          f"(active: within {-ACTIVE_DB:.0f} dB of the source's loudest frame):\n")
    print(results["markdown_overlapping"])
    for r in results["sets"]:
        o = r["temporal_overlap"]
        print(f"\n{r['sources']} sources: frames with >= 2 active sources: median {o['median']:.1%}, "
              f"mean {o['mean']:.1%}; {o['zero_fraction']:.0%} of the mixtures have no overlap at all", end="")
    print()
    for r in results["sets"]:
        d = r["model_minus_nmf"]
        print(f"\n{r['sources']} sources, model - NMF (paired): grouped {d['grouped_sisdri']['mean']:.2f} dB "
              f"[{d['grouped_sisdri']['ci95'][0]:.2f}, {d['grouped_sisdri']['ci95'][1]:.2f}], "
              f"one-to-one {d['one_to_one_sisdri']['mean']:.2f} dB "
              f"[{d['one_to_one_sisdri']['ci95'][0]:.2f}, {d['one_to_one_sisdri']['ci95'][1]:.2f}]", end="")
    print()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
