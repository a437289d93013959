"""Raw against clean stems on the development set (the corpus's *training* split only): the choice
behind ``macs separate --stem-mode auto`` (clean for the built-in separator).

Clean stems re-render each stem from the mixture's STFT with the non-negative part of its share of
every time-frequency bin, renormalised over the stems (``grouping.clean_shares``), i.e. what
``grouping.GroupRenderer`` does with identity weights. ``--powers`` also tries shares raised to a
power p before renormalising (p = 1 is what ships).

    python benchmarks/clean_stems_dev.py --corpus data/sound-corpus/manifest.csv --mixtures 100 \
        --cache data/clean-dev.npz --powers 1 0.75 1.5 --out benchmarks/results/clean_stems_dev.json
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macs_cli.evaluation.sisdr import best_grouped_sisdr, best_one_to_one_sisdr, mixture_sisdr  # noqa: E402
from macs_cli.separation import grouping as G  # noqa: E402
from macs_cli.training.data import load_clip_bank, real_eval_set  # noqa: E402
from macs_cli.weights.separator import load_separator  # noqa: E402


CLEAN_SHARES = G.clean_shares


def powered_shares(p: float):
    def shares(spec: np.ndarray) -> np.ndarray:
        c = CLEAN_SHARES(spec) ** p
        return c / np.maximum(c.sum(-2, keepdims=True), 1e-30)
    return shares


def paired(d: np.ndarray) -> dict:
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
    return {"mean": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="data/sound-corpus/manifest.csv", help="its 'train' split is used")
    ap.add_argument("--mixtures", type=int, default=100, help="per source count (2, 3, 4)")
    ap.add_argument("--seed", type=int, default=100, help="S sources use seed + S")
    ap.add_argument("--cache", type=Path, default=None, help="npz of mixtures, references and raw stems")
    ap.add_argument("--powers", type=float, nargs="+", default=[1.0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.time()
    model = load_separator("default", device="cpu").eval()
    cfg = model.config
    if args.cache and args.cache.exists():
        data = dict(np.load(args.cache))
    else:
        bank = load_clip_bank(args.corpus, "train", cfg.sample_rate, max_seconds=cfg.window_seconds)
        data = {}
        for s in (2, 3, 4):
            mix, refs = real_eval_set(bank, args.mixtures, s, cfg.window_samples, seed=args.seed + s)
            with torch.inference_mode():
                stems = torch.cat([model(mix[i:i + 4]).float() for i in range(0, len(mix), 4)])
            data.update({f"mix{s}": mix.numpy(), f"refs{s}": refs.numpy(), f"stems{s}": stems.numpy()})
        if args.cache:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.cache, **data)
    results: dict = {"corpus": str(args.corpus), "split": "train", "mixtures": args.mixtures, "seed": args.seed,
                     "model": cfg.name, "rows": {}}
    original = CLEAN_SHARES
    try:
        for p in [None, *args.powers]:          # None: the raw stems
            row = {}
            if p is not None:
                G.clean_shares = powered_shares(p) if p != 1 else original
            for s in (2, 3, 4):
                mix, refs, raw = (torch.from_numpy(data[f"{k}{s}"]) for k in ("mix", "refs", "stems"))
                est = raw if p is None else torch.from_numpy(np.stack([G.clean_stems(x, cfg.n_fft) for x in raw.numpy()]))
                base = mixture_sisdr(mix.double(), refs.double())
                row[str(s)] = {"grouped": (best_grouped_sisdr(est, refs)[0] - base).numpy().tolist(),
                               "one_to_one": (best_one_to_one_sisdr(est, refs)[0] - base).numpy().tolist()}
            name = "raw" if p is None else f"clean p={p:g}"
            results["rows"][name] = row
            print(f"{name:12s} " + " | ".join(f"{s} src grouped {np.mean(row[s]['grouped']):.2f} one-to-one "
                                               f"{np.mean(row[s]['one_to_one']):.2f}" for s in row), flush=True)
            G.clean_shares = original
    finally:
        G.clean_shares = original
    raw = results["rows"]["raw"]
    for name, row in results["rows"].items():
        if name != "raw":
            row["minus_raw"] = {s: {f: paired(np.array(row[s][f]) - np.array(raw[s][f]))
                                    for f in ("grouped", "one_to_one")} for s in ("2", "3", "4")}
    results["wall_seconds"] = round(time.time() - t0, 1)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
