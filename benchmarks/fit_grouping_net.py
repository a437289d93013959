"""The learned pair model behind ``--num-sources`` (grouping.PairNet): a small CNN that reads the clean
band-power statistics of two stems (what ``grouping.StemStatistics`` keeps while streaming) and
gives the log-odds that they carry the same source, beside the ten hand-made pair features.

Data: mixtures of the corpus's *training* split only, separated by the default model: real-condition
mixtures (``real_eval_set``: every pair of sources overlapping) and, with ``make --mode sparse``,
mixtures whose sources mostly take turns (``sparse_eval_set``); labels from the best grouping of
the clean stems (as ``fit_grouping.py --labels optimal``). Training mixtures and validation
mixtures use different seeds. The held-out split is read only by ``make --split heldout``, for
the final measurement.

The shipped weights (macs_cli/weights/default/grouping_net.safetensors, v4 of 4 December 2026)
came from (times on one core of a 2-core EPYC):

    C=/work/cache/cv21/manifest.csv D=/work/cache/dev
    for n in 500:"" 600:2 700:3 800:4; do   # 600 real-condition mixtures per count each, 10 min each
      python benchmarks/fit_grouping_net.py make --corpus $C --mixtures 600 --seed ${n%%:*} --threads 1 \
          --out $D/gnet_train${n#*:}.npz; done
    python benchmarks/fit_grouping_net.py make --corpus $C --mode sparse --sources 2 3 --mixtures 300 \
        --seed 1000 --out $D/gnet_sparse23.npz                                                  # 6 min
    python benchmarks/fit_grouping_net.py make --corpus $C --mode sparse --sources 4 --mixtures 300 \
        --seed 1000 --out $D/gnet_sparse4.npz                                                   # 3 min
    python benchmarks/fit_grouping_net.py make --corpus $C --mixtures 16 --seed 900 --out $D/gnet_mon.npz
    python benchmarks/fit_grouping_net.py make --corpus $C --mixtures 200 --seed 300 --keep-audio \
        --out $D/gnet_val.npz                                                                   # 8 min
    python benchmarks/fit_grouping_net.py train --train $D/gnet_train.npz $D/gnet_train2.npz \
        $D/gnet_train3.npz $D/gnet_train4.npz $D/gnet_sparse23.npz $D/gnet_sparse4.npz \
        --val $D/gnet_mon.npz --epochs 10 --hidden 64 --threads 2 --out $D/net64_8100s          # 5 min
    python benchmarks/fit_grouping_net.py eval --val $D/gnet_val.npz --net $D/net64_8100s/grouping_net.safetensors \
        --net-only --out benchmarks/results/grouping_net_dev_v4.json

``train --train`` takes several files from ``make`` (their mixtures concatenated) and keeps their
pair inputs in float16 (since 4 December, after v4 was trained: halves the memory of 12600 mixtures). v3 (3 December)
was the same recipe on gnet_train.npz alone (1800 mixtures); the networks on 3600-7200
real-condition mixtures without the sparse ones are in benchmarks/README.md (not shipped).

``--val`` in ``train`` only prints an AUC per epoch (nothing is selected on it); the choices
(hidden 64, 10 epochs, unweighted loss, temperature 0.5, the training sets) were made with
``eval`` on gnet_val.npz (training split, seeds 302-304) and the synthetic known groupings of
tests/test_grouping.py. Measured on the held-out split afterwards:

    python benchmarks/fit_grouping_net.py make --corpus $C --split heldout --mixtures 60 --seed 0 \
        --keep-audio --out $D/gnet_heldout.npz
    python benchmarks/fit_grouping_net.py eval --val $D/gnet_heldout.npz \
        --net macs_cli/weights/default/grouping_net.safetensors --out benchmarks/results/grouping_net_heldout_cv21_v4.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from macs_cli.evaluation.sisdr import best_grouped_sisdr, best_one_to_one_sisdr, matched_sisdr, mixture_sisdr  # noqa: E402
from macs_cli.separation import grouping as G  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from fit_grouping import auc, fit_logistic  # noqa: E402

log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

# the per-mixture arrays ``make`` writes (besides rate, n_fft and, with --keep-audio, the audio)
PER_MIXTURE = ("s", "bp", "cross", "feats", "lab", "base", "grouped", "clean121")


def make(args) -> int:
    from macs_cli.training.data import fixed_eval_set, load_clip_bank
    from macs_cli.weights.separator import load_separator
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    t0 = time.time()
    model = load_separator(args.model, device="cpu").eval()
    cfg = model.config
    rate, n_fft = cfg.sample_rate, cfg.n_fft
    bank = load_clip_bank(args.corpus, args.split, rate, max_seconds=cfg.window_seconds)
    out: dict[str, list] = {k: [] for k in PER_MIXTURE}
    audio: dict[str, list] = {"mix": [], "refs": [], "stems": []}
    for s in args.sources:
        mix, refs = fixed_eval_set(bank, args.mixtures, s, cfg.window_samples, seed=args.seed + s, mode=args.mode)
        for i in range(0, len(mix), args.batch):
            with torch.inference_mode():
                stems = model(mix[i: i + args.batch]).float().numpy()
            for b in range(stems.shape[0]):
                st, rf, mx = stems[b], refs[i + b].numpy(), mix[i + b]
                stats = G.statistics_of(st, rate, n_fft)
                clean = torch.from_numpy(G.clean_stems(st, n_fft))
                score, mats = best_grouped_sisdr(clean[None], torch.from_numpy(rf)[None])
                base = float(mixture_sisdr(mx[None], torch.from_numpy(rf)[None])[0])
                out["s"].append(s)
                out["bp"].append(stats.band_power.astype(np.float32))
                out["cross"].append(stats.cross)
                out["feats"].append(G.feature_rows(G.pair_features(stats)))
                out["lab"].append(mats[0].argmax(0).numpy())
                out["base"].append(base)
                out["grouped"].append(float(score[0]) - base)
                out["clean121"].append(float(best_one_to_one_sisdr(clean[None], torch.from_numpy(rf)[None])[0][0]) - base)
                if args.keep_audio:
                    audio["mix"].append(mx.numpy())
                    audio["refs"].append(np.pad(rf, ((0, max(args.sources) - s), (0, 0))))
                    audio["stems"].append(st)
            log(f"  {s} sources: {min(i + args.batch, len(mix))}/{len(mix)} ({time.time() - t0:.0f} s)")
    arrays = {k: np.stack(v) for k, v in out.items()}
    arrays.update(rate=np.array(rate), n_fft=np.array(n_fft))
    if args.keep_audio:
        arrays.update({k: np.stack(v).astype(np.float32) for k, v in audio.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)
    log(f"wrote {args.out} ({len(arrays['s'])} mixtures, {time.time() - t0:.0f} s)")
    return 0


def pair_inputs_batch(band_power: np.ndarray, dtype=np.float32) -> np.ndarray:
    """(N, frames, M, BANDS) -> (N, pairs, NET_CHANNELS, BANDS, frames): grouping.pair_inputs per
    mixture (``dtype`` float16 halves the memory of a large training set)."""
    first = G.pair_inputs(band_power[0])
    out = np.empty((len(band_power),) + first.shape, dtype=dtype)   # filled in place: one copy in memory
    out[0] = first
    for n in range(1, len(band_power)):
        out[n] = G.pair_inputs(band_power[n])
    return out


def pair_targets(lab: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(lab.shape[-1], 1)
    return (lab[:, iu[0]] == lab[:, iu[1]]).astype(np.float32)


def load_sets(paths) -> dict:
    """One or more files written by ``make``, their mixtures concatenated."""
    parts = [dict(np.load(p)) for p in paths]
    out = {k: np.concatenate([d[k] for d in parts]) for k in PER_MIXTURE}
    out.update(rate=parts[0]["rate"], n_fft=parts[0]["n_fft"])
    return out


def train(args) -> int:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    tr = load_sets(args.train)
    va = dict(np.load(args.val))
    net = G.PairNet(hidden=args.hidden)
    feats_tr = tr["feats"].reshape(-1, len(G.FEATURES))
    mean, scale = feats_tr.mean(0), feats_tr.std(0) + 1e-12
    net.set_feature_norm(mean, scale)
    lin = fit_logistic(feats_tr, pair_targets(tr["lab"]).reshape(-1))
    with torch.no_grad():   # start from the logistic model refitted on these mixtures; the MLP's output at zero
        net.skip.weight.copy_(torch.tensor([lin["coef"]], dtype=torch.float32))
        net.skip.bias.fill_(float(lin["intercept"]))
        net.head[-1].weight.zero_()
        net.head[-1].bias.zero_()
    x_tr = torch.from_numpy(pair_inputs_batch(tr["bp"], np.float16))   # (N, P, C, B, T), float16 in memory
    del tr["bp"]
    f_tr = torch.from_numpy(tr["feats"].astype(np.float32))     # (N, P, F)
    y_tr = torch.from_numpy(pair_targets(tr["lab"]))             # (N, P)
    x_va = torch.from_numpy(pair_inputs_batch(va["bp"]))
    f_va = torch.from_numpy(va["feats"].astype(np.float32))
    y_va = pair_targets(va["lab"])
    n, p = y_tr.shape
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (n * p // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    flat_x, flat_f, flat_y = x_tr.flatten(0, 1), f_tr.flatten(0, 1), y_tr.flatten()
    if args.weight == "energy":   # a pair counts by sqrt of its smaller stem's energy share (mean weight 1)
        e = np.clip(np.einsum("nii->ni", tr["cross"]), 0, None)
        sh = e / np.maximum(e.sum(1, keepdims=True), 1e-30)
        iu = np.triu_indices(sh.shape[1], 1)
        w = np.sqrt(np.minimum(sh[:, iu[0]], sh[:, iu[1]])).reshape(-1)
        flat_w = torch.from_numpy((w / w.mean()).astype(np.float32))
    else:
        flat_w = torch.ones_like(flat_y)
    t0 = time.time()
    history = []
    for ep in range(args.epochs):
        net.train()
        perm = torch.randperm(len(flat_y))
        tot = 0.0
        for k in range(0, len(perm) - args.batch + 1, args.batch):
            idx = perm[k: k + args.batch]
            logit = net(flat_x[idx].float(), flat_f[idx])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, flat_y[idx], weight=flat_w[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        net.eval()
        with torch.no_grad():
            lv = torch.cat([net(x_va[i: i + 64].flatten(0, 1), f_va[i: i + 64].flatten(0, 1)) for i in range(0, len(x_va), 64)])
        a = auc(lv.numpy(), y_va.reshape(-1))
        history.append({"epoch": ep + 1, "loss": tot / len(perm), "val_auc": a})
        log(f"epoch {ep + 1}: loss {tot / len(perm):.4f}  val AUC {a:.4f}  ({time.time() - t0:.0f} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    net.save(args.out / "grouping_net.safetensors")
    (args.out / "history.json").write_text(json.dumps(history, indent=1))
    # logistic baseline on the same validation pairs
    lin = G.PAIR_MODEL
    z = (va["feats"].reshape(-1, len(G.FEATURES)) - np.array(lin["mean"])) / np.array(lin["scale"])
    log(f"logistic (shipped) val AUC {auc(z @ np.array(lin['coef']), y_va.reshape(-1)):.4f}")
    return 0


def evaluate(args) -> int:
    """K and auto on the validation mixtures (their audio kept) with the net and with the logistic model."""
    va = dict(np.load(args.val))
    if "stems" not in va:
        raise SystemExit(f"{args.val}: made without --keep-audio, cannot be scored")
    if args.net_only and not args.net:
        raise SystemExit("--net-only needs --net")
    rate, n_fft = int(va.get("rate", 16000)), int(va.get("n_fft", 400))
    from separation_quality import drop_silent
    if args.temperature is not None:
        G.TEMPERATURE = G.NET_TEMPERATURE = args.temperature
    net = G.PairNet.load(args.net) if args.net else None
    models = [] if args.net_only else [("logistic", False)]
    if args.train:   # the logistic model refitted on the same training mixtures as the net
        tr = load_sets(args.train)
        models.append(("logistic-refit", fit_logistic(tr["feats"].reshape(-1, len(G.FEATURES)),
                                                      pair_targets(tr["lab"]).reshape(-1))))
    if net is not None:
        models.append(("net", net))
    res = {}
    for name, m in models:
        per, scores = {}, []
        for i in range(len(va["s"])):
            s = int(va["s"][i])
            stems, refs = va["stems"][i], torch.from_numpy(va["refs"][i][:s])
            stats = G.statistics_of(stems, rate, n_fft)
            d = per.setdefault(s, {"k": [], "auto": [], "count": []})
            logits = (G.pair_logits(stats, m) if name == "logistic-refit" else
                      G.net_logits(stats, m) if isinstance(m, G.PairNet) else G.pair_logits(stats))
            scores.append(logits[np.triu_indices(stats.m, 1)])
            for mode, key in ((s, "k"), ("auto", "auto")):
                if name == "logistic-refit":
                    plan = G.plan_grouping(stats, mode, model=m, net=False)
                else:
                    plan = G.plan_grouping(stats, mode, net=m)
                est = G.render(stems, plan, n_fft)
                if mode == "auto":   # the outputs macs separate -n auto keeps
                    est = drop_silent(est, rate)
                est = torch.from_numpy(est)
                d[key].append(matched_sisdr(est, refs) - float(va["base"][i]))
                if mode == "auto":
                    d["count"].append(est.shape[0] == s)
        res[name] = {str(s): {**{k: float(np.mean(v)) for k, v in d.items()},
                              "per_item": {k: [float(x) for x in v] for k, v in d.items() if k != "count"}}
                     for s, d in per.items()}
        res[name]["pair_auc"] = auc(np.concatenate(scores), pair_targets(va["lab"]).reshape(-1))
        log(f"{name}: pair AUC {res[name]['pair_auc']:.4f}")
        for s, d in sorted(per.items()):
            sel = va["s"] == s
            log(f"{name:8s} {s} sources: K {np.mean(d['k']):.2f}  auto {np.mean(d['auto']):.2f}  count {np.mean(d['count']):.0%}"
                f"  (grouped {va['grouped'][sel].mean():.2f}, clean one-to-one {va['clean121'][sel].mean():.2f})")
    if "net" in res and "logistic" in res:   # paired differences, net - shipped logistic, mean [95 % interval]
        res["net_minus_logistic"] = {}
        for s in sorted(k for k in res["net"] if k.isdigit()):
            row = {}
            for k in ("k", "auto"):
                diff = np.array(res["net"][s]["per_item"][k]) - np.array(res["logistic"][s]["per_item"][k])
                half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
                row[k] = [float(diff.mean()), float(diff.mean() - half), float(diff.mean() + half)]
            res["net_minus_logistic"][s] = row
            log(f"net - logistic, {s} sources: K {row['k'][0]:+.2f} [{row['k'][1]:+.2f}, {row['k'][2]:+.2f}]  "
                f"auto {row['auto'][0]:+.2f} [{row['auto'][1]:+.2f}, {row['auto'][2]:+.2f}]")
    res["grouped"] = {str(s): float(va["grouped"][va["s"] == s].mean()) for s in sorted(set(va["s"].tolist()))}
    res["clean_one_to_one"] = {str(s): float(va["clean121"][va["s"] == s].mean()) for s in sorted(set(va["s"].tolist()))}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--corpus", required=True)
    m.add_argument("--mixtures", type=int, default=1000)
    m.add_argument("--sources", type=int, nargs="+", default=[2, 3, 4])
    m.add_argument("--seed", type=int, default=500)
    m.add_argument("--model", default="default")
    m.add_argument("--batch", type=int, default=8)
    m.add_argument("--keep-audio", action="store_true")
    m.add_argument("--split", default="train", choices=("train", "heldout"),
                   help="heldout only for the one final measurement (separation_quality.py's mixtures: --seed 0 --mixtures 60)")
    m.add_argument("--mode", choices=("real", "sparse"), default="real",
                   help="real: every pair of sources overlapping (the default); sparse: sources that mostly take turns")
    m.add_argument("--threads", type=int, default=0)
    m.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train")
    t.add_argument("--train", type=Path, nargs="+", required=True, help="one or more files from make")
    t.add_argument("--val", type=Path, required=True)
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--hidden", type=int, default=64)
    t.add_argument("--weight", choices=("none", "energy"), default="none")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--out", type=Path, required=True)
    e = sub.add_parser("eval")
    e.add_argument("--val", type=Path, required=True)
    e.add_argument("--net", type=Path, default=None)
    e.add_argument("--train", type=Path, nargs="+", default=None, help="also refit the logistic model on these mixtures")
    e.add_argument("--temperature", type=float, default=None)
    e.add_argument("--net-only", action="store_true", help="score only the net")
    e.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    return {"make": make, "train": train, "eval": evaluate}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
