"""Fit the pair model behind ``--num-sources`` (macs_cli/separation/grouping.py: the log-odds that
two stems carry the same source) on real-condition mixtures of the corpus's *training* split, and
estimate by 5-fold cross-validation (over mixtures) how the grouping does there.

The held-out split is never read: it is for benchmarks/separation_quality.py only.

    python benchmarks/fit_grouping.py --corpus /work/cache/cv21/manifest.csv --mixtures 250 --seed 300 \
        --cache /work/cache/dev/gdev.npz --write --out benchmarks/results/grouping_fit.json

Labels (``--labels``): ``optimal`` (the default since the 2026-12-03 refit): a pair is "same source"
when the two stems go to the same reference in the best grouping of the clean stems (the grouping
that maximises the mean SI-SDR, ``best_grouped_sisdr``), i.e. the grouping ``--num-sources K`` should
find; ``dominant`` (the earlier labels): each stem's clean time-frequency power is attributed to the
references by their ideal ratio masks and a pair is "same source" when both stems are dominated by
the same reference. The two agree on only about 70 % of pairs, and even a perfect pair model trained
on ``dominant`` labels would merge to below the unmerged one-to-one figure for 3 and 4 sources.
The model is a logistic regression (L2, standardised features) fitted by Newton's method; ``--write`` puts it into
grouping.py between the ``PAIR_MODEL`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from macs_cli.evaluation.sisdr import matched_sisdr, mixture_sisdr, best_grouped_sisdr, best_one_to_one_sisdr  # noqa: E402
from macs_cli.separation import grouping as G  # noqa: E402
from macs_cli.training.data import load_clip_bank, real_eval_set  # noqa: E402
from macs_cli.weights.separator import load_separator  # noqa: E402


def spectra(x: np.ndarray, n_fft: int) -> np.ndarray:
    """(C, T) -> (frames, C, F) with grouping.py's framing and window."""
    framer = G._Framer(x.shape[0], n_fft)
    frames = np.concatenate([framer.push(x), framer.finish()])
    return np.fft.rfft(frames * G._window(n_fft), axis=-1)


def stem_labels(stems: np.ndarray, refs: np.ndarray, n_fft: int) -> np.ndarray:
    """The reference that dominates each stem's clean power (by the references' ideal ratio masks)."""
    spec = spectra(stems, n_fft)
    mix = spec.sum(1)
    clean = G.clean_shares(spec) * (mix.real ** 2 + mix.imag ** 2)[:, None, :]   # (T, M, F)
    r = spectra(refs, n_fft)
    rp = r.real ** 2 + r.imag ** 2
    irm = rp / np.maximum(rp.sum(1, keepdims=True), 1e-30)                    # (T, S, F)
    return np.einsum("tmf,tsf->ms", clean, irm).argmax(1)


def optimal_labels(stems: np.ndarray, refs: np.ndarray, n_fft: int) -> np.ndarray:
    """The reference each stem goes to in the best grouping (by mean SI-SDR) of the clean stems."""
    clean = torch.from_numpy(G.clean_stems(stems, n_fft))
    _, mats = best_grouped_sisdr(clean[None], torch.from_numpy(refs)[None])   # (1, S, M)
    return mats[0].argmax(0).numpy()


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> dict:
    """L2 logistic regression on standardised features (Newton's method); ``l2`` as sklearn's 1/C."""
    mean, scale = x.mean(0), x.std(0) + 1e-12
    z = np.concatenate([(x - mean) / scale, np.ones((len(x), 1))], axis=1)
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (p - y) + reg * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": w[:-1].tolist(), "intercept": float(w[-1])}


def auc(score: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(score)
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    pos = y.astype(bool)
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def write_model(model: dict, note: str) -> None:
    path = ROOT / "macs_cli" / "separation" / "grouping.py"
    text = path.read_text()
    fmt = lambda v: "[" + ", ".join(f"{x:.6g}" for x in v) + "]"  # noqa: E731
    block = (f"PAIR_MODEL = {{  # {note}\n"
             f"    \"mean\": {fmt(model['mean'])},\n"
             f"    \"scale\": {fmt(model['scale'])},\n"
             f"    \"coef\": {fmt(model['coef'])},\n"
             f"    \"intercept\": {model['intercept']:.6g},\n"
             "}")
    new, n = re.subn(r"PAIR_MODEL = \{.*?\n\}", block.replace("\\", "\\\\"), text, count=1, flags=re.S)
    if n != 1:
        raise SystemExit("PAIR_MODEL block not found in grouping.py")
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="data/sound-corpus/manifest.csv", help="its 'train' split is used")
    p.add_argument("--mixtures", type=int, default=100, help="mixtures per source count")
    p.add_argument("--sources", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--seed", type=int, default=100, help="mixtures with S sources use seed + S")
    p.add_argument("--model", default="default")
    p.add_argument("--cache", type=Path, default=None, help="npz of the mixtures and stems (made if missing)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--write", action="store_true", help="write the fitted model into grouping.py")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--labels", choices=("optimal", "dominant"), default="optimal",
                   help="what 'same source' means for a pair of stems (see the module docstring)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()
    model = load_separator(args.model, device="cpu").eval()
    cfg = model.config
    rate, n_fft = cfg.sample_rate, cfg.n_fft
    data: dict[str, np.ndarray] = {}
    if args.cache and args.cache.exists():
        data = dict(np.load(args.cache))
        log(f"read {args.cache}")
    else:
        bank = load_clip_bank(args.corpus, "train", rate, max_seconds=cfg.window_seconds)
        for s in args.sources:
            mix, refs = real_eval_set(bank, args.mixtures, s, cfg.window_samples, seed=args.seed + s)
            with torch.inference_mode():
                stems = torch.cat([model(mix[i: i + 4]).float() for i in range(0, len(mix), 4)])
            data.update({f"mix{s}": mix.numpy(), f"refs{s}": refs.numpy(), f"stems{s}": stems.numpy()})
            log(f"  {s} sources: {len(mix)} mixtures separated ({time.time() - t0:.0f} s)")
        if args.cache:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.cache, **data)
    items = []
    for s in args.sources:
        for n in range(len(data[f"mix{s}"])):
            stems, refs = data[f"stems{s}"][n], data[f"refs{s}"][n]
            stats = G.statistics_of(stems, rate, n_fft)
            lab = (optimal_labels if args.labels == "optimal" else stem_labels)(stems, refs, n_fft)
            iu = np.triu_indices(len(lab), 1)
            items.append({"s": s, "n": n, "stats": stats, "x": G.feature_rows(G.pair_features(stats)),
                          "y": (lab[iu[0]] == lab[iu[1]]).astype(float)})
    log(f"features of {len(items)} mixtures ({time.time() - t0:.0f} s)")
    x = np.concatenate([it["x"] for it in items])
    y = np.concatenate([it["y"] for it in items])
    full = fit_logistic(x, y)
    z = (x - np.array(full["mean"])) / np.array(full["scale"])
    train_auc = auc(z @ np.array(full["coef"]), y)

    # cross-validated grouping quality on these (training-split) mixtures
    rng = np.random.default_rng(0)
    fold = rng.integers(0, args.folds, len(items))
    per = {s: {"k": [], "auto": [], "count": [], "grouped": [], "one_to_one": [], "clean_one_to_one": []}
           for s in args.sources}
    for f in range(args.folds):
        tr = [i for i in range(len(items)) if fold[i] != f]
        m = fit_logistic(np.concatenate([items[i]["x"] for i in tr]), np.concatenate([items[i]["y"] for i in tr]))
        for i in np.where(fold == f)[0]:
            it = items[i]
            s, n = it["s"], it["n"]
            mix, refs, stems = (torch.from_numpy(data[f"{k}{s}"][n]) for k in ("mix", "refs", "stems"))
            base = float(mixture_sisdr(mix[None], refs[None])[0])
            for mode, key in ((s, "k"), ("auto", "auto")):
                plan = G.plan_grouping(it["stats"], mode, model=m)
                out = torch.from_numpy(G.render(stems.numpy(), plan, n_fft))
                per[s][key].append(matched_sisdr(out, refs) - base)
                if mode == "auto":
                    per[s]["count"].append(plan.estimated)
            per[s]["grouped"].append(float(best_grouped_sisdr(stems[None], refs[None])[0][0]) - base)
            per[s]["one_to_one"].append(float(best_one_to_one_sisdr(stems[None], refs[None])[0][0]) - base)
            clean = torch.from_numpy(G.clean_stems(stems.numpy(), n_fft))
            per[s]["clean_one_to_one"].append(float(best_one_to_one_sisdr(clean[None], refs[None])[0][0]) - base)
    cv = {}
    for s, v in per.items():
        counts = np.array(v["count"])
        cv[str(s)] = {"mixtures": len(v["k"]), "grouped_sisdri": float(np.mean(v["grouped"])),
                      "one_to_one_sisdri": float(np.mean(v["one_to_one"])),
                      "clean_one_to_one_sisdri": float(np.mean(v["clean_one_to_one"])),
                      "num_sources_k_sisdri": float(np.mean(v["k"])), "auto_sisdri": float(np.mean(v["auto"])),
                      "count_accuracy": float((counts == s).mean()),
                      "count_histogram": {str(k): int((counts == k).sum()) for k in range(1, 7)}}
        log(f"  {s} sources (CV): grouped {cv[str(s)]['grouped_sisdri']:.2f}  one-to-one "
            f"{cv[str(s)]['one_to_one_sisdri']:.2f} (clean {cv[str(s)]['clean_one_to_one_sisdri']:.2f})  K {cv[str(s)]['num_sources_k_sisdri']:.2f}  auto "
            f"{cv[str(s)]['auto_sisdri']:.2f}  count accuracy {cv[str(s)]['count_accuracy']:.2f}")
    result = {"benchmark": "fit_grouping", "corpus": args.corpus, "split": "train",
              "settings": {"mixtures": args.mixtures, "sources": args.sources, "seed": args.seed,
                           "folds": args.folds, "model": args.model, "features": list(G.FEATURES),
                           "labels": args.labels, "temperature": G.TEMPERATURE},
              "pairs": int(len(y)), "same_source_fraction": float(y.mean()), "train_auc": train_auc,
              "model": full, "cross_validation": cv, "wall_seconds": round(time.time() - t0, 1)}
    log(f"{len(y)} pairs, {y.mean():.1%} same source; training AUC {train_auc:.3f}")
    if args.write:
        write_model(full, f"fitted by benchmarks/fit_grouping.py --seed {args.seed} --mixtures "
                          f"{args.mixtures} --labels {args.labels} (training split)")
        log("wrote PAIR_MODEL into macs_cli/separation/grouping.py")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
