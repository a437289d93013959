"""Train separator v2 from scratch on one GPU in one run of at most ~9 minutes, and merge its shards.

What it does, in order (every phase is timed into the report):

1. reads the packed corpus (a ``pack_corpus.py`` .npz: int16, float or 8-bit mu-law; or a folder
   holding one .npz and a ``READY`` marker) and puts the training clips on the GPU;
2. picks the batch: the largest multiple of 8 that fits in ``--mem-fraction`` of the GPU memory,
   from the measured peak memory of one training step at two small batches (linear in the batch),
   capped at ``--max-batch``, and confirmed by one step at that size (halved on out-of-memory);
   the learning rate is scaled by sqrt(batch / 32) from the config's (capped at ``--max-lr``);
3. measures the training throughput at that batch and sets ``train.steps`` so that the whole
   warm-up + cosine schedule ends within the time left of ``--budget-s`` (the whole script's wall
   time, minus a reserve for the last validation and the shards); ``train.max_minutes`` stops it
   in any case;
4. trains with ``macs_cli.training.trainer.Trainer`` (bf16 autocast on CUDA, mixtures synthesised on
   the GPU, validation on real-condition held-out mixtures), then writes the weights as float16
   safetensors shards of < 15 MB each (< 16 MiB) plus ``separator.json``, and ``report.json``.

    python recipes/default-separator/train_gpu_v2.py --corpus /path/corpus.npz --out $OUT/v2 --budget-s 500
    # back here: one loadable separator from the shards
    python recipes/default-separator/train_gpu_v2.py --merge $OUT/v2/shards -o runs/v2/separator.safetensors
    # on a CPU, a few steps of a tiny model (a smoke test of every phase but the GPU ones)
    python recipes/default-separator/train_gpu_v2.py --corpus data/sound-corpus/corpus.npz --out /tmp/v2 --tiny
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from macs_cli.separation.model import Separator  # noqa: E402
from macs_cli.training.config import load_config, separator_config  # noqa: E402
from macs_cli.training.data import load_clip_bank, synthesize, validation_sets  # noqa: E402
from macs_cli.training.losses import MixITLoss, StemSparsity  # noqa: E402
from macs_cli.training.trainer import Trainer, mix_specs  # noqa: E402
from train_gpu import write_shards  # noqa: E402

SHARD_LIMIT = 15_000_000          # bytes per shard (< 16 MiB with the header)
BASE_BATCH = 32                   # the batch the config's learning rate is meant for
TINY = ["model.channels=4", "model.depth=2", "validation.mixtures=4", "validation.sources=[2]",
        "log.every=1", "checkpoint.every=1000"]


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def resolve_corpus(path: str) -> Path:
    """A .npz file, or a folder with a READY marker and exactly one .npz (what the corpus helper
    leaves); anything else is an error naming what is missing."""
    p = Path(path)
    if p.is_dir():
        if not (p / "READY").exists():
            raise SystemExit(f"error: {p}: no READY marker (is the corpus still being packed?)")
        found = sorted(p.glob("*.npz"))
        if len(found) != 1:
            raise SystemExit(f"error: {p}: expected one .npz beside READY, found {len(found)}")
        p = found[0]
    if not p.is_file() or p.suffix != ".npz":
        raise SystemExit(f"error: {p}: not a packed corpus .npz")
    return p


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


class Probe:
    """One training step of the configured model and losses at a given batch (a throwaway model)."""

    def __init__(self, cfg: dict, bank, dev: str):
        self.cfg, self.bank, self.dev = cfg, bank, dev
        self.model_cfg = separator_config(cfg)
        self.model = Separator(self.model_cfg).to(dev).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-5)
        self.spec, self.aug = mix_specs(cfg)
        self.mixit = MixITLoss(self.model_cfg.num_sources, empty_refs=self.spec.total_sources is not None
                               and self.spec.total_sources[0] == 1)
        w = cfg["loss"]["sparsity"]
        self.sparsity = (w, StemSparsity(cfg["loss"]["sparsity_kind"])) if w else None
        self.gen = torch.Generator(device=dev).manual_seed(0)

    def step(self, batch: int) -> None:
        b = synthesize(self.bank, batch, self.model_cfg.window_samples, self.gen, self.spec, self.aug)
        with torch.autocast(self.dev.split(":")[0], dtype=torch.bfloat16, enabled=self.dev.startswith("cuda")):
            stems = self.model(b.mix)
        stems = stems.float()
        loss = self.mixit(b, stems)
        if self.sparsity:
            loss = loss + self.sparsity[0] * self.sparsity[1](b, stems)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def peak_bytes(self, batch: int) -> int:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        self.step(batch)
        _sync(self.dev)
        return torch.cuda.max_memory_allocated()

    def rate(self, batch: int, steps: int) -> float:
        for _ in range(2):
            self.step(batch)
        _sync(self.dev)
        t0 = time.time()
        for _ in range(steps):
            self.step(batch)
        _sync(self.dev)
        return steps / (time.time() - t0)


def pick_batch(probe: Probe, max_batch: int, fraction: float, report: dict) -> int:
    total = torch.cuda.get_device_properties(0).total_memory
    small = 8
    p1, p2 = probe.peak_bytes(small), probe.peak_bytes(2 * small)
    per_item = max(1, (p2 - p1) / small)
    fixed = max(0.0, p1 - per_item * small)
    batch = int((fraction * total - fixed) // per_item) // 8 * 8
    batch = max(8, min(max_batch, batch))
    report["batch_probe"] = {"gpu_bytes": total, "peak_bytes_b8": p1, "peak_bytes_b16": p2,
                             "bytes_per_item": per_item, "fraction": fraction, "rule_batch": batch}
    while True:
        try:
            peak = probe.peak_bytes(batch)
            report["batch_probe"]["peak_bytes_chosen"] = peak
            return batch
        except torch.OutOfMemoryError:
            probe.opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            if batch <= 8:
                raise
            batch = max(8, batch // 2 // 8 * 8)
            report["batch_probe"].setdefault("halved", []).append(batch)


def train(args) -> None:
    t_start = time.time()
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = "cpu" if args.tiny else args.device
    corpus = resolve_corpus(args.corpus)
    sets = [f"data.train={corpus}", *(TINY if args.tiny else []), *args.set]
    cfg = load_config(Path(args.config), sets)
    out = Path(args.out)
    report: dict = {"device": torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu",
                    "torch": torch.__version__, "corpus": str(corpus), "config": args.config,
                    "overrides": sets[1:], "budget_s": args.budget_s, "phases_s": {}}

    def phase(name: str, t0: float) -> float:
        report["phases_s"][name] = round(time.time() - t0, 2)
        return time.time()

    t = time.time()
    bank = load_clip_bank(corpus, "train", 16000, cfg["data"]["max_seconds"]).to(dev)
    held = load_clip_bank(corpus, "heldout", 16000, cfg["data"]["max_seconds"])
    report.update(train_clips=len(bank), train_hours=round(bank.seconds / 3600, 3), heldout_clips=len(held))
    t = phase("load", t)

    base_lr = cfg["optim"]["lr"]
    if args.tiny:
        batch, steps, rate = args.batch or 2, args.tiny_steps, None
    else:
        probe = Probe(cfg, bank, dev)
        batch = args.batch or pick_batch(probe, args.max_batch, args.mem_fraction, report)
        t = phase("batch_probe", t)
        rate = probe.rate(batch, args.probe_steps)
        del probe
        torch.cuda.empty_cache()
        t = phase("rate_probe", t)
        left = args.budget_s - (time.time() - t_start) - args.reserve_s
        if left < 30:
            raise SystemExit(f"error: only {left:.0f} s of --budget-s left for training")
        steps = max(10, int(rate * left * 0.95))
        cfg["train"]["max_minutes"] = left / 60
        report.update(train_steps_per_s=rate, train_windows_per_s=rate * batch, train_budget_s=round(left, 1))
    lr = base_lr if args.lr_scale == "none" else min(args.max_lr, base_lr * math.sqrt(batch / BASE_BATCH))
    cfg["optim"].update(batch_size=batch, lr=lr)
    cfg["train"]["steps"] = steps
    cfg["validation"]["every"] = max(1, steps // 8)
    cfg["checkpoint"]["every"] = max(1, steps // 3)
    report.update(batch=batch, lr=lr, steps=steps)
    say(json.dumps(report))

    trainer = Trainer(cfg, out, device=dev, progress=False)
    trainer.bank = bank
    trainer.load_data = lambda: None                    # the bank is already on the device
    v = cfg["validation"]
    trainer.val_set = validation_sets(held, v["mixtures"], v["sources"], trainer.model_cfg.window_samples,
                                      seed=v["seed"], mode=v["mode"])
    result = trainer.run(fresh=args.force)
    t = phase("train", t)
    model = trainer.accel.unwrap_model(trainer.model)
    shards = Path(args.shards_to) if args.shards_to else out / "shards"
    write_shards(model, shards, SHARD_LIMIT)
    sizes = {f.name: f.stat().st_size for f in sorted(shards.glob("shard_*.safetensors"))}
    t = phase("shards", t)
    if dev.startswith("cuda"):
        report["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    report.update(final=result, shards=sizes, wall_s=round(time.time() - t_start, 1))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report), flush=True)


def merge(shard_dir: Path, target: Path, force: bool = False) -> Path:
    """The shards of ``write_shards`` -> one separator checkpoint (weights as shipped: float16
    kernels and matrices, the rest float32), checked against the model its separator.json
    describes, written with its .json beside it (never over anything but a previous separator)."""
    from safetensors.torch import load_file, save_file

    from macs_cli.formats import SEPARATOR_FILE, SEPARATOR_JSON
    from macs_cli.fsutil import OutputSet
    from macs_cli.separation.config import SeparatorConfig
    from macs_cli.weights.statecheck import describe_mismatch

    files = sorted(shard_dir.glob("shard_*.safetensors"), key=lambda f: int(f.stem.split("_")[1]))
    if not files or not (shard_dir / "separator.json").is_file():
        raise SystemExit(f"error: {shard_dir}: no shard_*.safetensors with a separator.json")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        part = load_file(str(f))
        clash = set(part) & set(state)
        if clash:
            raise SystemExit(f"error: {f}: tensor {sorted(clash)[0]} is in two shards")
        state.update(part)
    config = SeparatorConfig.load(shard_dir / "separator.json")
    problem = describe_mismatch(Separator(config).state_dict(), state)
    if problem:
        raise SystemExit(f"error: {shard_dir}: the shards do not make the model of separator.json ({problem})")
    target = target if target.suffix == ".safetensors" else target.with_suffix(".safetensors")
    meta = {"macs_config": json.dumps(config.to_dict()), "format": "macs-separator-v1",
            "merged_from": str(len(files))}
    with OutputSet(force) as out:
        tmp = out.path(target, SEPARATOR_FILE)
        side = out.path(target.with_suffix(".json"), SEPARATOR_JSON)
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=meta)
        config.save(side)
    return target


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", help="packed corpus .npz, or a folder with READY and one .npz")
    ap.add_argument("--out", help="the run folder (checkpoint, metrics, report.json, shards/)")
    ap.add_argument("--config", default=str(HERE / "config_v2.yaml"))
    ap.add_argument("--set", action="append", default=[], help="section.key=value (repeatable)")
    ap.add_argument("--budget-s", type=float, default=500, help="wall time of the whole script (s)")
    ap.add_argument("--reserve-s", type=float, default=40, help="kept for the last validation and shards")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=None, help="fixed batch (skip the memory probe)")
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--mem-fraction", type=float, default=0.8)
    ap.add_argument("--lr-scale", choices=("sqrt", "none"), default="sqrt")
    ap.add_argument("--max-lr", type=float, default=3e-3)
    ap.add_argument("--probe-steps", type=int, default=8)
    ap.add_argument("--shards-to", default=None, help="where the shards go (default OUT/shards)")
    ap.add_argument("--force", action="store_true", help="replace a previous run in --out")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: a tiny model, a few steps")
    ap.add_argument("--tiny-steps", type=int, default=3)
    ap.add_argument("--merge", metavar="SHARDS", default=None, help="merge these shards into -o and exit")
    ap.add_argument("-o", "--output", default=None, help="with --merge: the separator .safetensors to write")
    args = ap.parse_args(argv)
    if args.merge:
        if not args.output:
            ap.error("--merge needs -o/--output")
        print(merge(Path(args.merge), Path(args.output), args.force))
        return
    if not args.corpus or not args.out:
        ap.error("--corpus and --out are required (or --merge SHARDS -o FILE)")
    train(args)


if __name__ == "__main__":
    main()
