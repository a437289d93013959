"""MixIT's empty-group scoring and early training: counts and held-out SI-SDRi of two short runs.

Two parts (see benchmarks/README.md, section 7, for the training runs themselves):

* ``count``: on the initial model of a small ``train-sep`` configuration (seed 0) and the first
  ``--batches`` training batches of its data stream, how often MixIT's best assignment leaves one
  mixture without stems, with the earlier scoring (an empty group scored 0 dB) and with auraloss's
  (-80 dB), the official one;
* ``curves``: the validation rows of the runs' ``metrics.csv``;
* ``evaluate``: separators (``NAME=PATH`` pairs) on fixed held-out 2- and 3-source mixtures of the
  corpus (``--mixtures`` each, seeds 79 and 80), best-grouping and one-to-one SI-SDRi, all scored
  by this checkout's metric code.

    python benchmarks/mixit_early_training.py count --corpus corpus.npz
    python benchmarks/mixit_early_training.py evaluate --corpus corpus.npz --mixtures 200 \\
        before=runs/before/separator.safetensors after=runs/after/separator.safetensors \\
        --out benchmarks/results/mixit_early_training.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from macs_cli.evaluation.sisdr import EPS, _zero_mean, grouping_matrices  # noqa: E402

# the configuration of the two training runs (benchmarks/README.md, section 7)
SETS = ["model.channels=8", "model.depth=4", "model.window_seconds=2.0", "optim.batch_size=8",
        "optim.warmup=0.05", "train.steps=120"]


def _scores(stems: torch.Tensor, refs: torch.Tensor, mats: torch.Tensor, auraloss: bool) -> torch.Tensor:
    s, r = _zero_mean(stems.double()), _zero_mean(refs.double())
    a = mats.double()
    dot = torch.einsum("ksm,bms->bks", a, s @ r.transpose(1, 2))
    ee = torch.einsum("ksm,bmn,ksn->bks", a, s @ s.transpose(1, 2), a)
    rr = r.square().sum(-1)[:, None, :]
    if auraloss:
        alpha = dot / (rr + EPS)
        t = alpha.square() * rr
        return 10 * torch.log10(t / ((ee - 2 * alpha * dot + t).clamp_min(0) + EPS) + EPS)
    t = dot.square() / (rr + EPS)                          # the earlier definition
    return 10 * torch.log10((t + EPS) / ((ee - t).clamp_min(0) + EPS))


def count(args) -> dict:
    from macs_cli.training.config import load_config
    from macs_cli.training.data import synthesize
    from macs_cli.training.trainer import Trainer

    cfg = load_config(None, SETS + [f"data.train={args.corpus}", "validation.mixtures=0",
                                    f"train.seed={args.seed}"])
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, Path(tmp) / "run", device="cpu", progress=False)
        tr.load_data()
        mats = grouping_matrices(tr.model_cfg.num_sources, 2, include_empty=True)
        empty = (mats.sum(-1) == 0).any(-1)
        gen = torch.Generator()
        out = {"items": 0, "empty_group_wins_old_scoring": 0, "empty_group_wins_auraloss": 0}
        tr.model.train()
        with torch.no_grad():
            for step in range(args.batches):
                tr.step = step
                tr.seed_micro_batch(gen, 0)
                batch = synthesize(tr.bank, cfg["optim"]["batch_size"], tr.model_cfg.window_samples, gen, tr.spec)
                stems = tr.model(batch.mix)
                for key, aura in (("empty_group_wins_old_scoring", False), ("empty_group_wins_auraloss", True)):
                    best = _scores(stems, batch.references, mats, aura).sum(-1).argmax(1)
                    out[key] += int(empty[best].sum())
                out["items"] += stems.shape[0]
    return out


def evaluate(args) -> dict:
    from macs_cli.training.data import fixed_eval_set, load_clip_bank
    from macs_cli.training.trainer import evaluate as sisdri
    from macs_cli.weights.separator import load_separator

    bank = load_clip_bank(args.corpus, "heldout", 16000, 8.0, "npz")
    out = {}
    models = dict(spec.split("=", 1) for spec in args.models)
    for s in (2, 3):
        mixes, refs = fixed_eval_set(bank, args.mixtures, s, 32000, seed=77 + s)
        for name, path in models.items():
            r = sisdri(load_separator(path), mixes, refs)
            out[f"{name}_{s}_sources"] = {k: round(v, 3) for k, v in r.items()}
            print(name, s, out[f"{name}_{s}_sources"], flush=True)
    return out


def curves(args) -> dict:
    """The validation rows (step, grouped and one-to-one SI-SDRi) of train-sep runs' metrics.csv."""
    import csv

    out = {}
    for spec in args.models:
        name, path = spec.split("=", 1)
        rows = [r for r in csv.DictReader(open(path)) if r["val_grouped"]]
        out[name] = [{"step": int(r["step"]), "val_grouped": round(float(r["val_grouped"]), 3),
                      "val_one_to_one": round(float(r["val_one_to_one"]), 3)} for r in rows]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("count")
    c.add_argument("--corpus", required=True)
    c.add_argument("--batches", type=int, default=10)
    c.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("evaluate")
    e.add_argument("--corpus", required=True)
    e.add_argument("--mixtures", type=int, default=200)
    e.add_argument("models", nargs="+", help="NAME=separator.safetensors")
    k = sub.add_parser("curves")
    k.add_argument("models", nargs="+", help="NAME=RUN/metrics.csv")
    for p in (c, e, k):
        p.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {"command": "python " + " ".join(sys.argv), **{"count": count, "evaluate": evaluate,
                                                             "curves": curves}[args.what](args)}
    print(json.dumps(result, indent=1))
    if args.out:
        old = json.loads(args.out.read_text()) if args.out.exists() else {}
        old[args.what] = result
        args.out.write_text(json.dumps(old, indent=2) + "\n")


if __name__ == "__main__":
    main()
