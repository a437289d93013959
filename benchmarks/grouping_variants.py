"""Development comparison of grouping variants behind ``--num-sources`` on mixtures made by
``fit_grouping_net.py make --keep-audio`` (training split only; never the held-out file).

    python benchmarks/grouping_variants.py --val /work/cache/dev/gnet_val.npz --out benchmarks/results/grouping_variants_dev.json

Each variant turns one mixture's stem statistics into a grouping plan for the true K and for
``auto``; the outputs are rendered and scored one-to-one (SI-SDRi, dB), as ``fit_grouping_net.py eval``.
The variants (all from the same pair network's log-odds): ``pairwise`` (what ships), ``tauX`` (a
stricter bar for merging in ``auto``), ``TX`` (the soft memberships' temperature), ``energyX``
(pairs weighted by their energy in the partition score), ``postX`` (memberships from a Gibbs
distribution over all partitions), ``linkage`` (agglomerative, scoring merged groups with the
network), ``linkage-full`` / ``full-only`` (memberships scored against each group taken as one stem).
None of them ships: benchmarks/README.md, section 1, and results/grouping_variants_dev.json.
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


def merged_statistics(stats, weights):
    """The statistics of the outputs sum_i w_ig c_i X of ``weights`` (M, K) without rendering them
    (band power and cross-power are linear in the clean shares, so both are exact)."""
    w = np.asarray(weights, dtype=np.float64)
    out = G.StemStatistics(w.shape[1], stats.rate, stats.n_fft)
    bp = stats.band_power
    out._frames = [np.einsum("tmb,mk->tkb", bp, w.astype(np.float32)).astype(np.float32)]
    out._count = bp.shape[0]
    out.pool = stats.pool
    out.cross = w.T @ stats.cross @ w
    return out


def linkage_partition(stats, audible, k, net):
    """Agglomerative partition whose linkage is the pair network itself: every step scores the
    current groups as if each were one stem (their merged statistics) and merges the likeliest
    pair; down to ``k`` groups, or (``k=None``) until no pair is better than even odds."""
    m = stats.m
    groups = [[i] for i in audible]
    while len(groups) > (k or 1):
        w = np.zeros((m, len(groups)))
        for g, members in enumerate(groups):
            w[members, g] = 1.0
        logits = G.net_logits(merged_statistics(stats, w), net)
        iu = np.triu_indices(len(groups), 1)
        best = int(np.argmax(logits[iu]))
        if k is None and logits[iu][best] <= 0:
            break
        a, b = int(iu[0][best]), int(iu[1][best])
        groups[a] = groups[a] + groups[b]
        del groups[b]
    labels = np.zeros(len(audible), dtype=np.int64)
    pos = {s: n for n, s in enumerate(audible)}
    for g, members in enumerate(groups):
        labels[[pos[i] for i in members]] = g
    return labels


def group_memberships(stats, labels, k, net, temperature):
    """Soft memberships whose affinity of stem i to group g is the network's log-odds between stem
    i and the rest of group g taken as one stem (instead of the mean of its pair log-odds)."""
    m = stats.m
    aff = np.full((m, k), -10.0)
    for i in range(m):
        w = np.zeros((m, k + 1))
        w[i, 0] = 1.0
        for j in range(m):
            if j != i:
                w[j, 1 + labels[j]] = 1.0
        cols = [0] + [1 + g for g in range(k) if w[:, 1 + g].any()]
        lg = G.net_logits(merged_statistics(stats, w[:, cols]), net)
        for n, c in enumerate(cols[1:], start=1):
            aff[i, c - 1] = lg[0, n]
        if not w[:, 1 + labels[i]].any():
            aff[i, labels[i]] = 0.0
    z = aff / temperature
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def plan_from_logits(stats, logits, mode, temp=G.NET_TEMPERATURE, tau=0.0, energy=None, posterior=None,
                     linkage=None, group_soft=None):
    """plan_grouping's steps on given log-odds, with knobs: ``tau`` is subtracted from every
    log-odds before the ``auto`` partition (a stricter bar for merging), ``energy`` weights each
    pair's log-odds in the partition score by (sqrt(share_i share_j) * M) ** energy, and
    ``posterior`` (a temperature) replaces the soft memberships by the co-membership marginals of
    a Gibbs distribution over all partitions."""
    m = stats.m
    shares = stats.shares
    audible = [i for i in range(m) if shares[i] >= G.AUDIBLE_SHARE]
    sub_l = logits[np.ix_(audible, audible)]
    part_l = sub_l
    if energy:
        sh = shares[audible]
        part_l = sub_l * (np.sqrt(np.outer(sh, sh)) * m) ** energy
    if mode == "auto":
        lab = linkage_partition(stats, audible, None, linkage) if linkage else G.best_partition(part_l - tau, None)
        k = int(lab.max()) + 1
    else:
        k = int(mode)
        if k >= m:
            return G.GroupingPlan(np.eye(m), k, m)
        lab = linkage_partition(stats, audible, k, linkage) if linkage else G.best_partition(part_l, k)
    labels = np.full(m, -1)
    labels[audible] = lab
    labels = G._attach(labels, logits, k)
    if group_soft:
        w = group_memberships(stats, labels, k, group_soft, temp)
    elif posterior:
        w = posterior_memberships(logits, labels, k, posterior, shares)
    else:
        w = G.soft_memberships(logits, labels, k, temp)
    order = np.argsort(-(w * shares[:, None]).sum(0), kind="stable")
    return G.GroupingPlan(w[:, order], mode, k)


def posterior_memberships(logits, labels, k, beta, shares):
    """Stem i's weight on group g: the probability, under p(partition) ~ exp(score / beta), that i
    shares a block with g's loudest stem (the group's anchor); rows renormalised."""
    m = logits.shape[0]
    parts = G.set_partitions(m)
    iu = np.triu_indices(m, 1)
    score = (parts[:, iu[0]] == parts[:, iu[1]]) @ logits[iu]
    p = np.exp((score - score.max()) / beta)
    p /= p.sum()
    anchors = [int(np.argmax(np.where(labels == g, shares, -1))) for g in range(k)]
    w = np.zeros((m, k))
    for g, a in enumerate(anchors):
        w[:, g] = ((parts == parts[:, [a]]) * p[:, None]).sum(0)
    # an anchor belongs to its own group only; rows sum to one
    for g, a in enumerate(anchors):
        w[a] = 0.0
        w[a, g] = 1.0
    w = np.maximum(w, 1e-6)
    return w / w.sum(1, keepdims=True)


def variants(net):
    out = {"pairwise": lambda st, mode, L: G.plan_grouping(st, mode, net=net)}
    knobs = {"rep": {}, "tau0.5": {"tau": 0.5}, "tau1": {"tau": 1.0}, "tau2": {"tau": 2.0},
             "T0.3": {"temp": 0.3}, "T1": {"temp": 1.0}, "energy0.5": {"energy": 0.5}, "energy1": {"energy": 1.0},
             "post1": {"posterior": 1.0}, "post2": {"posterior": 2.0}}
    for name, kw in knobs.items():
        out[name] = lambda st, mode, L, kw=kw: plan_from_logits(st, L, mode, **kw)
    out["linkage"] = lambda st, mode, L: plan_from_logits(st, L, mode, linkage=net)
    out["linkage-full"] = lambda st, mode, L: plan_from_logits(st, L, mode, linkage=net, group_soft=net)
    out["full-only"] = lambda st, mode, L: plan_from_logits(st, L, mode, group_soft=net)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--net", type=Path, default=ROOT / "macs_cli/weights/default/grouping_net.safetensors")
    p.add_argument("--limit", type=int, default=0, help="mixtures per source count (0: all)")
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    va = dict(np.load(args.val))
    rate, n_fft = int(va["rate"]), int(va["n_fft"])
    net = G.PairNet.load(args.net)
    vs = variants(net)
    if args.only:
        vs = {k: v for k, v in vs.items() if k in args.only}
    idx = np.arange(len(va["s"]))
    if args.limit:
        idx = np.concatenate([idx[va["s"] == s][: args.limit] for s in sorted(set(va["s"].tolist()))])
    res: dict = {name: {} for name in vs}
    t0 = time.time()
    for n, i in enumerate(idx):
        s = int(va["s"][i])
        stems, refs = va["stems"][i], torch.from_numpy(va["refs"][i][:s])
        stats = G.statistics_of(stems, rate, n_fft)
        L = G.net_logits(stats, net)
        for name, fn in vs.items():
            d = res[name].setdefault(str(s), {"k": [], "auto": [], "count": []})
            for mode, key in ((s, "k"), ("auto", "auto")):
                plan = fn(stats, mode, L)
                est = G.render(stems, plan, n_fft)
                if mode == "auto":
                    est = drop_silent(est, rate)
                d[key].append(matched_sisdr(torch.from_numpy(est), refs) - float(va["base"][i]))
                if mode == "auto":
                    d["count"].append(int(est.shape[0]))
        if (n + 1) % 50 == 0:
            log(f"{n + 1}/{len(idx)} ({time.time() - t0:.0f} s)")
    summary = {}
    for name, per in res.items():
        summary[name] = {}
        for s, d in per.items():
            cnt = np.array(d["count"])
            summary[name][s] = {"k": float(np.mean(d["k"])), "auto": float(np.mean(d["auto"])),
                                "count_right": float(np.mean(cnt == int(s))),
                                "over": float(np.mean(cnt > int(s)))}
        allk = np.concatenate([per[s]["k"] for s in per])
        alla = np.concatenate([per[s]["auto"] for s in per])
        summary[name]["all"] = {"k": float(allk.mean()), "auto": float(alla.mean())}
        log(f"{name:12s} " + "  ".join(f"{s}: K {v['k']:.2f} auto {v['auto']:.2f}"
                                       + (f" count {v['count_right']:.0%}" if "count_right" in v else "")
                                       for s, v in summary[name].items()))
    names = list(res)
    for other in names[1:]:   # paired difference against the first variant, mean [95 %]
        for s in res[names[0]]:
            for key in ("k", "auto"):
                diff = np.array(res[other][s][key]) - np.array(res[names[0]][s][key])
                half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
                summary[other][s][f"{key}_minus_{names[0]}"] = [float(diff.mean()), float(diff.mean() - half),
                                                               float(diff.mean() + half)]
                log(f"{other} - {names[0]}, {s} src {key}: {diff.mean():+.2f} [{diff.mean() - half:+.2f}, {diff.mean() + half:+.2f}]")
    summary["grouped"] = {str(s): float(va["grouped"][idx][va["s"][idx] == s].mean()) for s in sorted(set(va["s"].tolist()))}
    summary["clean_one_to_one"] = {str(s): float(va["clean121"][idx][va["s"][idx] == s].mean())
                                   for s in sorted(set(va["s"].tolist()))}
    log(f"grouped {summary['grouped']}  clean one-to-one {summary['clean_one_to_one']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "per_item": res}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
