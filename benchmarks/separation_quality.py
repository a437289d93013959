"""Separation quality on held-out mixtures: the default model against non-learned references.

Main set, real conditions (``macs_cli.training.data.real_eval_set``): for S = 2, 3 and 4 sources,
``--mixtures`` deterministic 8 s mixtures of held-out clips (seed ``--seed + S``), every pair of
sources overlapping by at least min(1 s, half the shorter source), levels within 5 dB, steady
sounds (rain, engines, crowds, wind...) looped through the window. Four figures per method, SI-SDR
improvement over the unprocessed mixture (per item: mean over the S references):

* ``grouped``     -- the best grouping of the stems to the sources, chosen with the references
                     (an oracle: what perfect merging would give);
* ``one-to-one``  -- the best S stems, one per source, the rest dropped (also chosen with the
                     references: the unmerged output, at its best);
* ``K``           -- ``--num-sources S``: the stems merged to S outputs by
                     ``macs_cli.separation.grouping`` (no references), each source matched to one;
* ``auto``        -- ``--num-sources auto``: the count estimated, merged to it, silent outputs
                     dropped. With fewer outputs than sources every output serves at least one
                     source and a source is scored against the output that carries it; with more,
                     the best one per source (``macs_cli.evaluation.sisdr.matched_sisdr``).

Methods: the model (``--model``, 6 stems: raw, and clean as ``macs separate`` writes them by default), KL-NMF (6 components; the same grouping code merges its
components for K and auto), a fixed 6-band split (the floor), the IRM oracle (S stems: one figure),
and, for K only, the merge that ``--num-sources`` used before (log-envelope correlation,
agglomerative).

Secondary set (``--sparse-mixtures``, S = 2, 3): the first benchmark's mixtures
(``sparse_eval_set``: clips placed 1-2 times at random, +-5 dB), whose sources mostly do not
overlap; grouped and one-to-one only.

    python benchmarks/separation_quality.py --corpus data/sound-corpus/manifest.csv --mixtures 60 \
        --sparse-mixtures 100 --seed 0 --out benchmarks/results/separation_quality.json
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macs_cli.evaluation.baselines import band_split, ideal_ratio_mask, nmf_separate  # noqa: E402
from macs_cli.evaluation.sisdr import (best_grouped_sisdr, best_one_to_one_sisdr, matched_sisdr,  # noqa: E402
                                      mixture_sisdr)
from macs_cli.separation import grouping  # noqa: E402
from macs_cli.separation.api import ACTIVE_REL_DB, MIN_ACTIVITY, _StemStats, stem_activity  # noqa: E402
from macs_cli.training.data import load_clip_bank, real_eval_set, sparse_eval_set  # noqa: E402
from macs_cli.weights.separator import load_separator  # noqa: E402

FRAME = 1600                 # 100 ms at 16 kHz
ACTIVE_DB = -30.0            # (sparse set) a source is active in a frame within 30 dB of its loudest
FIGURES = ("grouped", "one_to_one", "k", "auto")
LABELS = {"model": "MACS default model (6 stems, raw: `--stem-mode raw`)",
          "model_clean": "MACS default model, clean stems (`--stem-mode clean`, the default)", "nmf": "KL-NMF (6 components, 200 it.)",
          "band_split": "band split (6 mel bands)", "irm": "IRM oracle (S stems)",
          "previous_merge": "previous `--num-sources K` merge (log-envelope correlation) on the model's stems"}


def summary(x) -> dict:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
            "median": float(np.median(x)), "min": float(x.min()), "max": float(x.max()), "n": int(x.size)}


def paired(a, b) -> dict:
    d = np.asarray(a) - np.asarray(b)
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else 0.0
    return {"mean": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)],
            "better_fraction": float((d > 0).mean())}


def previous_merge(stems: np.ndarray, k: int) -> np.ndarray:
    """What ``--num-sources K`` did before: average-linkage clustering of the stems' 100 ms
    log-energy envelopes by correlation, stems summed per cluster."""
    from scipy.cluster.hierarchy import fcluster, linkage

    m = stems.shape[0]
    frames = stems.shape[1] // FRAME
    env = np.square(stems[:, : frames * FRAME].reshape(m, frames, FRAME), dtype=np.float64).mean(-1)
    logenv = np.log10(env + 1e-10)
    logenv = logenv - logenv.mean(1, keepdims=True)
    logenv /= np.linalg.norm(logenv, axis=1, keepdims=True) + 1e-12
    corr = np.clip(logenv @ logenv.T, -1, 1)
    labels = fcluster(linkage(1.0 - corr[np.triu_indices(m, 1)], method="average"), t=k, criterion="maxclust")
    if len(set(labels)) < k:
        labels = np.minimum(np.arange(m), k - 1) + 1
    return np.stack([stems[labels == g].sum(0) for g in sorted(set(labels))])


def clean(stems: torch.Tensor, n_fft: int) -> torch.Tensor:
    """(B, M, T) raw stems -> what `macs separate` writes by default for the built-in model: each
    stem re-rendered from its clean shares (grouping.GroupRenderer with identity weights)."""
    return torch.from_numpy(np.stack([grouping.clean_stems(st, n_fft) for st in stems.numpy()]))


def drop_silent(outputs: np.ndarray, rate: int) -> np.ndarray:
    """The outputs ``macs separate --num-sources auto`` keeps (the same activity rule)."""
    stats = _StemStats(outputs.shape[0], rate)
    stats.add(outputs)
    act = stem_activity(stats.finish())
    rms2 = stats.sumsq / max(stats.count, 1)
    mix = stats.mix_sumsq / max(stats.count, 1)
    keep = [a >= MIN_ACTIVITY and r >= mix * 10 ** (ACTIVE_REL_DB / 10) for a, r in zip(act, rms2)]
    return outputs[keep] if any(keep) else outputs[:1]


def merged_figures(stems: np.ndarray, refs: torch.Tensor, s: int, rate: int, n_fft: int) -> dict:
    """SI-SDR (absolute) of the K and auto outputs of one item's stems, and the estimated count."""
    stats = grouping.statistics_of(stems, rate, n_fft)
    out = {}
    plan = grouping.plan_grouping(stats, s)
    out["k"] = matched_sisdr(torch.from_numpy(grouping.render(stems, plan, n_fft)), refs)
    plan = grouping.plan_grouping(stats, "auto")
    auto = drop_silent(grouping.render(stems, plan, n_fft), rate)
    out["auto"] = matched_sisdr(torch.from_numpy(auto), refs)
    out["count"] = int(auto.shape[0])
    return out


def evaluate_real(model, bank, s: int, count: int, seed: int, args, log) -> dict:
    cfg = model.config
    rate, n_fft = cfg.sample_rate, cfg.n_fft
    t0 = time.time()
    mix, refs, info = real_eval_set(bank, count, s, cfg.window_samples, seed=seed, return_info=True)
    log(f"  real, {s} sources: {count} mixtures built in {time.time() - t0:.1f} s")
    base = mixture_sisdr(mix, refs).numpy()
    per: dict = {}

    def model_stems(m):
        with torch.inference_mode():
            return model(m).float()

    fns = {"model": model_stems, "model_clean": lambda m: clean(model_stems(m), n_fft),
           "nmf": lambda m: nmf_separate(m, num_components=6, iterations=args.nmf_iterations, seed=0),
           "band_split": lambda m: band_split(m, num_bands=6)}
    for name, fn in fns.items():
        t1 = time.time()
        vals = {f: [] for f in FIGURES}
        vals["count"], prev = [], []
        for i in range(0, count, args.batch_size):
            m, r = mix[i: i + args.batch_size], refs[i: i + args.batch_size]
            stems = fn(m)
            vals["grouped"] += best_grouped_sisdr(stems, r)[0].tolist()
            vals["one_to_one"] += best_one_to_one_sisdr(stems, r)[0].tolist()
            for b in range(stems.shape[0] if name != "model_clean" else 0):   # -n K / auto: as raw
                st = stems[b].numpy()
                fig = merged_figures(st, r[b], s, rate, n_fft)
                vals["k"].append(fig["k"])
                vals["auto"].append(fig["auto"])
                vals["count"].append(fig["count"])
                if name == "model":
                    prev.append(matched_sisdr(torch.from_numpy(previous_merge(st, s)), r[b]))
        per[name] = {f: (np.array(vals[f]) - base).round(4).tolist() for f in FIGURES if vals[f]}
        if vals["count"]:
            per[name]["count"] = vals["count"]
        if name == "model":
            per["previous_merge"] = {"k": (np.array(prev) - base).round(4).tolist()}
        log(f"    {name:<10} " + "  ".join(f"{f} {np.mean(per[name][f]):6.2f}" for f in FIGURES if f in per[name])
            + (f"  count acc {np.mean(np.array(vals['count']) == s):.2f}" if vals["count"] else "")
            + f"  ({time.time() - t1:.0f} s)")
    irm = ideal_ratio_mask(mix, refs)
    v = (best_one_to_one_sisdr(irm, refs)[0].numpy() - base).round(4).tolist()
    per["irm"] = {f: v for f in FIGURES}
    per["irm"]["count"] = [s] * count
    out = {"sources": s, "mixtures": count, "seed": seed, "mixture_sisdr": summary(base),
           "labels": len({lab for it in info for labs in it["labels"] for lab in labs}),
           "steady_source_fraction": float(np.mean([x for it in info for x in it["steady"]])),
           "min_pair_overlap_seconds": summary([it["min_pair_overlap_seconds"] for it in info]),
           "active_seconds": summary([x for it in info for x in it["active_seconds"]]),
           "methods": {}, "per_item": {"mixture_sisdr": base.round(4).tolist(), **per},
           "mixture_info": info}
    for name, figs in per.items():
        res = {f"{f}_sisdri": summary(figs[f]) for f in FIGURES if f in figs}
        if "count" in figs:
            c = np.array(figs["count"])
            res["count_accuracy"] = float((c == s).mean())
            res["count_histogram"] = {str(k): int((c == k).sum()) for k in range(1, 7)}
        out["methods"][name] = res
    mp = per["model"]
    out["paired"] = {"model_k_minus_one_to_one": paired(mp["k"], mp["one_to_one"]),
                     "model_auto_minus_one_to_one": paired(mp["auto"], mp["one_to_one"]),
                     "model_k_minus_grouped": paired(mp["k"], mp["grouped"]),
                     "model_auto_minus_k": paired(mp["auto"], mp["k"]),
                     "model_k_minus_previous_merge": paired(mp["k"], per["previous_merge"]["k"]),
                     "model_minus_nmf_grouped": paired(mp["grouped"], per["nmf"]["grouped"]),
                     "model_minus_nmf_one_to_one": paired(mp["one_to_one"], per["nmf"]["one_to_one"]),
                     "clean_minus_raw_grouped": paired(per["model_clean"]["grouped"], mp["grouped"]),
                     "clean_minus_raw_one_to_one": paired(per["model_clean"]["one_to_one"], mp["one_to_one"]),
                     "k_minus_clean_one_to_one": paired(mp["k"], per["model_clean"]["one_to_one"]),
                     "auto_minus_clean_one_to_one": paired(mp["auto"], per["model_clean"]["one_to_one"])}
    return out


def temporal_overlap(refs: torch.Tensor) -> np.ndarray:
    n, s, length = refs.shape
    frames = length // FRAME
    power = refs[..., : frames * FRAME].reshape(n, s, frames, FRAME).double().square().mean(-1)
    active = power > power.amax(-1, keepdim=True) * 10 ** (ACTIVE_DB / 10)
    return ((active.sum(1) >= 2).double().mean(-1)).numpy()


def evaluate_sparse(model, bank, s: int, count: int, seed: int, args, log) -> dict:
    mix, refs = sparse_eval_set(bank, count, s, model.config.window_samples, seed=seed)
    base = mixture_sisdr(mix, refs).numpy()
    overlap = temporal_overlap(refs)

    def model_stems(m):
        with torch.inference_mode():
            return model(m).float()

    fns = {"model": model_stems, "model_clean": lambda m: clean(model_stems(m), model.config.n_fft),
           "nmf": lambda m: nmf_separate(m, num_components=6, iterations=args.nmf_iterations, seed=0),
           "band_split": lambda m: band_split(m, num_bands=6), "irm": None}
    out = {"sources": s, "mixtures": count, "seed": seed, "mixture_sisdr": summary(base),
           "temporal_overlap": {**summary(overlap), "zero_fraction": float((overlap == 0).mean())},
           "methods": {}}
    for name, fn in fns.items():
        g, o = [], []
        for i in range(0, count, args.batch_size):
            m, r = mix[i: i + args.batch_size], refs[i: i + args.batch_size]
            stems = ideal_ratio_mask(m, r) if name == "irm" else fn(m)
            g += best_grouped_sisdr(stems, r)[0].tolist()
            o += best_one_to_one_sisdr(stems, r)[0].tolist()
        out["methods"][name] = {"grouped_sisdri": summary(np.array(g) - base),
                                "one_to_one_sisdri": summary(np.array(o) - base)}
        log(f"    sparse {s} src {name:<10} grouped {np.mean(np.array(g) - base):6.2f}  one-to-one "
            f"{np.mean(np.array(o) - base):6.2f}")
    return out


def pooled(results: dict, name: str, fig: str) -> list[float]:
    return [x for r in results["real"] for x in r["per_item"][name].get(fig, [])]


def cell(results: dict, name: str, fig: str) -> str:
    if fig not in results["real"][0]["per_item"][name]:
        return ""
    per_s = " / ".join(f"{np.mean(r['per_item'][name][fig]):.2f}" for r in results["real"])
    return f"{np.mean(pooled(results, name, fig)):.2f} ({per_s})"


def markdown_real(results: dict) -> str:
    counts = "/".join(str(r["sources"]) for r in results["real"])
    rows = [f"| method | grouped (oracle) | one-to-one (unmerged) | `--num-sources K` | `--num-sources auto` | "
            f"auto: count right |", "|---|---|---|---|---|---|"]
    for name in ("model", "model_clean", "previous_merge", "nmf", "band_split", "irm"):
        acc = ""
        if "count" in results["real"][0]["per_item"][name]:
            per_s = " / ".join(f"{results_acc(r, name):.0%}" for r in results["real"])
            total = np.mean([c == r["sources"] for r in results["real"] for c in r["per_item"][name]["count"]])
            acc = f"{total:.0%} ({per_s})"
        rows.append(f"| {LABELS[name]} | " + " | ".join(cell(results, name, f) for f in FIGURES) + f" | {acc} |")
    return (f"SI-SDRi in dB: mean over all mixtures ({counts} sources: mean of each)\n\n" + "\n".join(rows))


def results_acc(r: dict, name: str) -> float:
    return float(np.mean(np.array(r["per_item"][name]["count"]) == r["sources"]))


def markdown_sparse(results: dict) -> str:
    sets = results["sparse"]
    head = "| method | " + " | ".join(f"{r['sources']} src grouped | {r['sources']} src one-to-one" for r in sets) + " |"
    rows = [head, "|---|" + "---|---|" * len(sets)]
    for name in ("model", "model_clean", "nmf", "band_split", "irm"):
        rows.append(f"| {LABELS[name]} | " + " | ".join(
            f"{r['methods'][name]['grouped_sisdri']['mean']:.2f} | {r['methods'][name]['one_to_one_sisdri']['mean']:.2f}"
            for r in sets) + " |")
    rows.append("| mixtures with no overlap at all | " + " | ".join(
        f"{r['temporal_overlap']['zero_fraction']:.0%} | (same)" for r in sets) + " |")
    return "\n".join(rows)


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
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
    p.add_argument("--corpus", default="data/sound-corpus/manifest.csv",
                   help="clip collection (its 'heldout' split is used): manifest.csv, .npz or folder")
    p.add_argument("--mixtures", type=int, default=60, help="real-condition mixtures per source count")
    p.add_argument("--sources", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--sparse-mixtures", type=int, default=100,
                   help="mixtures per source count (2, 3) of the secondary, mostly non-overlapping set; 0: skip")
    p.add_argument("--seed", type=int, default=0, help="S sources use seed + S")
    p.add_argument("--model", default="default")
    p.add_argument("--split", default="heldout", choices=["heldout", "train"],
                   help="'train' only to try the script out: the figures are for the held-out split")
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
    bank = load_clip_bank(args.corpus, args.split, cfg.sample_rate, max_seconds=cfg.window_seconds)
    log(f"model {cfg.name} (NC={cfg.channels}, M={cfg.num_sources}); held-out: {len(bank)} clips, "
        f"{bank.seconds:.0f} s")
    results = {
        "benchmark": "separation_quality", "corpus": str(args.corpus), "split": args.split,
        "heldout_clips": len(bank), "heldout_seconds": round(bank.seconds, 1),
        "model": {"spec": args.model, "source": getattr(model, "source", ""), "config": cfg.to_dict()},
        "grouping_method": grouping.NET_METHOD if grouping.default_net() is not None else grouping.METHOD,
        "settings": {"mixtures": args.mixtures, "sources": args.sources, "sparse_mixtures": args.sparse_mixtures,
                     "seed": args.seed, "nmf_components": 6, "nmf_iterations": args.nmf_iterations,
                     "band_split_bands": 6, "window_seconds": cfg.window_seconds, "level_db": 2.5},
        "metric": __doc__.split("\n\n")[1].strip(),
        "machine": machine(), "real": [], "sparse": [],
    }
    for s in args.sources:
        results["real"].append(evaluate_real(model, bank, s, args.mixtures, args.seed + s, args, log))
    if args.sparse_mixtures:
        for s in (2, 3):
            results["sparse"].append(evaluate_sparse(model, bank, s, args.sparse_mixtures, args.seed + s, args, log))
    results["wall_seconds"] = round(time.time() - t0, 1)
    results["markdown_real"] = markdown_real(results)
    print(results["markdown_real"])
    for r in results["real"]:
        d = r["paired"]
        print(f"\n{r['sources']} sources: K - one-to-one {d['model_k_minus_one_to_one']['mean']:+.2f} dB "
              f"[{d['model_k_minus_one_to_one']['ci95'][0]:+.2f}, {d['model_k_minus_one_to_one']['ci95'][1]:+.2f}]; "
              f"K - grouped {d['model_k_minus_grouped']['mean']:+.2f}; auto - K {d['model_auto_minus_k']['mean']:+.2f}; "
              f"K - previous merge {d['model_k_minus_previous_merge']['mean']:+.2f}", end="")
    print()
    if results["sparse"]:
        results["markdown_sparse"] = markdown_sparse(results)
        print("\nSecondary set (mostly non-overlapping sources):\n\n" + results["markdown_sparse"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
