"""Probe: does the stems' slot (which of the separator's outputs they are) and the rest of the
mixture's pair scores tell more about "same source" than the pair network alone?

    python benchmarks/context_probe.py --net macs_cli/weights/default/grouping_net.safetensors \
        --fit /work/cache/dev/gnet_train5.npz /work/cache/dev/gnet_sparse23b.npz /work/cache/dev/gnet_sparse4b.npz \
        --val /work/cache/dev/gnet_val.npz

The refiners are fitted on mixtures the network never saw (the fit files must not be its training
files) and scored on ``--val`` (pair AUC; with ``--score``, K and auto as fit_grouping_net.py eval).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fit_grouping_net import auc, load_sets, pair_inputs_batch, pair_targets  # noqa: E402
from macs_cli.separation import grouping as G  # noqa: E402

log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731


def net_pair_logits(d: dict, net: G.PairNet) -> np.ndarray:
    """(N, P) network log-odds of every mixture (short inputs: the CNN in one piece, as net_logits)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(d["s"]), 64):
            x = torch.from_numpy(pair_inputs_batch(d["bp"][i: i + 64]))
            f = torch.from_numpy(d["feats"][i: i + 64].astype(np.float32))
            out.append(net(x.flatten(0, 1), f.flatten(0, 1)).reshape(x.shape[0], x.shape[1]).numpy())
    return np.concatenate(out)


def log_shares(cross: np.ndarray) -> np.ndarray:
    e = np.clip(np.einsum("nii->ni", cross), 0, None)
    return np.log10(e / np.maximum(e.sum(1, keepdims=True), 1e-30) + 1e-4)


class Refiner(torch.nn.Module):
    """Per mixture: (P,) network log-odds and (M,) log shares -> (P,) refined log-odds =
    a * logit + b_pair + MLP(all of them); ``mlp=False``: the per-slot-pair bias and scale only."""

    def __init__(self, m: int, hidden: int = 64, mlp: bool = True, known_k: bool = False):
        super().__init__()
        p = m * (m - 1) // 2
        self.scale = torch.nn.Parameter(torch.ones(p))
        self.bias = torch.nn.Parameter(torch.zeros(p))
        self.known_k = known_k
        n_in = p + m + (4 if known_k else 0)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, p)) if mlp else None
        if self.mlp is not None:
            self.mlp[-1].weight.data.zero_()
            self.mlp[-1].bias.data.zero_()

    def forward(self, logit, sh, k=None):
        y = self.scale * logit + self.bias
        if self.mlp is not None:
            z = [logit / 4.0, sh]
            if self.known_k:
                z.append(torch.nn.functional.one_hot(k.long().clamp(1, 4) - 1, 4).float())
            y = y + self.mlp(torch.cat(z, -1))
        return y


def fit(ref: Refiner, logit, sh, y, k, epochs=300, lr=3e-3, wd=1e-3):
    opt = torch.optim.AdamW(ref.parameters(), lr=lr, weight_decay=wd)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(ref(logit, sh, k), y)
        loss.backward()
        opt.step()
    return ref.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", type=Path, required=True)
    ap.add_argument("--fit", type=Path, nargs="+", required=True)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--score", action="store_true", help="also K and auto SI-SDRi on --val (needs its audio)")
    ap.add_argument("--ensemble", type=Path, default=None,
                    help="a second network: also score the mean of the two networks' log-odds")
    ap.add_argument("--only", nargs="+", default=None, help="score only these variants (net, slot, context, context+K, ensemble)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    net = G.PairNet.load(args.net)
    tr, va = load_sets(args.fit), dict(np.load(args.val))
    m = tr["lab"].shape[1]
    t = {k: torch.from_numpy(v.astype(np.float32)) for k, v in
         (("logit", net_pair_logits(tr, net)), ("sh", log_shares(tr["cross"])), ("y", pair_targets(tr["lab"])),
          ("k", tr["s"]))}
    v = {k: torch.from_numpy(x.astype(np.float32)) for k, x in
         (("logit", net_pair_logits(va, net)), ("sh", log_shares(va["cross"])), ("k", va["s"]))}
    yv = pair_targets(va["lab"])
    res = {"net": {"auc_fit": auc(t["logit"].numpy().ravel(), t["y"].numpy().ravel()),
                   "auc_val": auc(v["logit"].numpy().ravel(), yv.ravel())}}
    refiners = {"slot": Refiner(m, mlp=False), "context": Refiner(m), "context+K": Refiner(m, known_k=True)}
    for name, r in refiners.items():
        fit(r, t["logit"], t["sh"], t["y"], t["k"])
        with torch.no_grad():
            lf = r(t["logit"], t["sh"], t["k"]).numpy()
            lv = r(v["logit"], v["sh"], v["k"]).numpy()
        res[name] = {"auc_fit": auc(lf.ravel(), t["y"].numpy().ravel()), "auc_val": auc(lv.ravel(), yv.ravel())}
    for name, r in res.items():
        log(f"{name:10s} AUC fit {r['auc_fit']:.4f}  val {r['auc_val']:.4f}")
    if args.score:
        other = G.PairNet.load(args.ensemble) if args.ensemble else None
        res.update(score(va, net, refiners, other, args.only))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


def score(va, net, refiners, other=None, only=None) -> dict:
    """K and auto (one-to-one SI-SDRi) on the validation mixtures, with each refiner's log-odds in
    place of the network's inside plan_grouping (``ensemble``: the mean of ``net``'s and ``other``'s)."""
    from macs_cli.evaluation.sisdr import matched_sisdr
    from separation_quality import drop_silent
    rate, n_fft = int(va["rate"]), int(va["n_fft"])
    orig = G.net_logits
    out = {}
    names = ["net", *refiners] + (["ensemble"] if other is not None else [])
    for name in [n for n in names if only is None or n in only]:
        per = {}
        for i in range(len(va["s"])):
            s = int(va["s"][i])
            stems, refs = va["stems"][i], torch.from_numpy(va["refs"][i][:s])
            stats = G.statistics_of(stems, rate, n_fft)
            d = per.setdefault(s, {"k": [], "auto": [], "count": []})
            for mode, key in ((s, "k"), ("auto", "auto")):
                if name == "ensemble":
                    G.net_logits = lambda st, nt: 0.5 * (orig(st, nt) + orig(st, other))
                elif name != "net":
                    r = refiners[name]
                    if mode == "auto" and r.known_k:   # the count is not known in auto
                        r = refiners["context"]

                    def patched(st, nt, r=r, s=s):
                        base = orig(st, nt)
                        iu = np.triu_indices(st.m, 1)
                        sh = np.log10(st.shares + 1e-4)
                        with torch.no_grad():
                            y = r(torch.tensor(base[iu], dtype=torch.float32)[None],
                                  torch.tensor(sh, dtype=torch.float32)[None],
                                  torch.tensor([s], dtype=torch.float32)).numpy()[0]
                        o = np.zeros_like(base)
                        o[iu] = y
                        return o + o.T
                    G.net_logits = patched
                try:
                    plan = G.plan_grouping(stats, mode, net=net)
                finally:
                    G.net_logits = orig
                est = G.render(stems, plan, n_fft)
                if mode == "auto":
                    est = drop_silent(est, rate)
                d[key].append(matched_sisdr(torch.from_numpy(est), refs) - float(va["base"][i]))
                if mode == "auto":
                    d["count"].append(est.shape[0] == s)
        out[f"score_{name}"] = {str(s): {k: float(np.mean(x)) for k, x in d.items()} for s, d in per.items()}
        out[f"items_{name}"] = {str(s): {k: [float(y) for y in x] for k, x in d.items() if k != "count"} for s, d in per.items()}
        row = out[f"score_{name}"]
        log(f"{name:10s} " + "  ".join(f"{s}: K {row[s]['k']:.2f} auto {row[s]['auto']:.2f} count {row[s]['count']:.0%}"
                                        for s in sorted(row)))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
