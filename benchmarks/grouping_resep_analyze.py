"""Scores the features of grouping_resep_probe.py: AUC alone, and 5-fold CV of the pair model with and
without them (K, auto, count) on the same mixtures. See benchmarks/README.md, section 1."""
import sys, pickle, os, numpy as np, torch
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/benchmarks")
from fit_grouping import fit_logistic, auc
from macs_cli.separation import grouping as G
from macs_cli.evaluation.sisdr import matched_sisdr
res = pickle.load(open(sys.argv[1], "rb"))
allitems = pickle.load(open("/work/cache/dev/gitems.pkl", "rb"))
items = [it for it in allitems if (it["s"], it["n"]) in res]
data = dict(np.load("/work/cache/dev/gdev.npz"))
print(len(items), "mixtures")
def newf(it):
    f = res[(it["s"], it["n"])]
    return np.stack([f[:,0], f[:,1], f[:,2], np.log(1-f[:,0]+1e-4)], 1)
X0 = [G.feature_rows(it["feats"]) for it in items]
XN = [newf(it) for it in items]
X1 = [np.concatenate([a, b], 1) for a, b in zip(X0, XN)]
Y = [it["gy"] for it in items]
aud = [np.triu(np.outer(it["stats"].shares>=1e-3, it["stats"].shares>=1e-3),1)[np.triu_indices(6,1)] for it in items]
y = np.concatenate(Y); A = np.concatenate(aud)
for k, name in enumerate(["purity","resep_sdr","resep_sdri","logimp"]):
    v = np.concatenate([x[:,k] for x in XN])
    print(name, "AUC (audible pairs)", round(auc(-v[A], y[A]),3), "same mean", v[A&(y==1)].mean().round(2), "diff mean", v[A&(y==0)].mean().round(2))
rng = np.random.default_rng(0); fold = rng.integers(0, 5, len(items))
def logits_from(pred, m):
    out = np.zeros((m, m)); out[np.triu_indices(m, 1)] = pred; return out + out.T
def cv(Xs, label):
    preds = [None]*len(items)
    for f in range(5):
        tr = [i for i in range(len(items)) if fold[i] != f]
        mdl = fit_logistic(np.concatenate([Xs[i] for i in tr]), np.concatenate([Y[i] for i in tr]))
        for i in np.where(fold == f)[0]:
            z = (Xs[i]-np.array(mdl["mean"]))/np.array(mdl["scale"])
            preds[i] = z@np.array(mdl["coef"])+mdl["intercept"]
    p = np.concatenate(preds)
    per = {s: dict(k=[], auto=[], cnt=[], c121=[], grp=[]) for s in (2,3,4)}
    for i, it in enumerate(items):
        s, n = it["s"], it["n"]; st = it["stats"]
        L = logits_from(preds[i], st.m)
        stems = data[f"stems{s}"][n]; refs = torch.from_numpy(data[f"refs{s}"][n])
        for mode in (s, "auto"):
            m = st.m; sh = st.shares
            au = [j for j in range(m) if sh[j] >= G.AUDIBLE_SHARE]
            if mode == "auto":
                sub = G.best_partition(L[np.ix_(au, au)], None); kk = int(sub.max())+1
            else:
                kk = s
                if len(au) < kk: au = list(range(m))
                sub = G.best_partition(L[np.ix_(au, au)], kk)
            lab = np.full(m, -1); lab[au] = sub
            W = G.soft_memberships(L, G._attach(lab, L, kk), kk)
            out = torch.from_numpy(G.render(stems, G.GroupingPlan(W, mode, kk), 400))
            v = matched_sisdr(out, refs) - it["base"]
            per[s]["k" if mode != "auto" else "auto"].append(v)
            if mode == "auto": per[s]["cnt"].append(kk == s)
        per[s]["c121"].append(it["clean121"]); per[s]["grp"].append(it["cleangrp"])
    line = " | ".join(f"S{s}: K {np.mean(q['k']):.2f} auto {np.mean(q['auto']):.2f} cnt {np.mean(q['cnt']):.2f} c121 {np.mean(q['c121']):.2f} grp {np.mean(q['grp']):.2f}" for s, q in per.items() if q['k'])
    print(f"{label}: AUC {auc(p[A], y[A]):.3f} | {line}", flush=True)
cv(X0, "base features")
cv(X1, "base + resep")
