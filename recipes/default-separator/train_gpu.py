"""Train the shipped default separator on one GPU within a fixed time budget.

Measures the training throughput first, then sets ``train.steps`` so that the whole cosine schedule
fits the budget. Also times inference (windows/s) of the trained size and of the official size.

    python recipes/default-separator/train_gpu.py --corpus data/sound-corpus/corpus.npz \
        --budget-s 420 --out runs/default
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from macs_cli.separation.config import SeparatorConfig, official_config  # noqa: E402
from macs_cli.separation.model import Separator  # noqa: E402
from macs_cli.training.config import load_config, separator_config  # noqa: E402
from macs_cli.training.data import MixSpec, load_clip_bank, synthesize  # noqa: E402
from macs_cli.training.losses import MixITLoss  # noqa: E402
from macs_cli.training.trainer import Trainer  # noqa: E402


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def train_rate(cfg: dict, bank, dev: str, steps: int = 25) -> float:
    model_cfg = separator_config(cfg)
    model = Separator(model_cfg).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = MixITLoss(model_cfg.num_sources)
    gen = torch.Generator(device=dev).manual_seed(0)
    spec = MixSpec(tuple(cfg["mix"]["sources_per_mixture"]), tuple(cfg["mix"]["repeats"]),
                   tuple(cfg["mix"]["gain_db"]))
    for i in range(steps + 5):
        if i == 5:
            _sync(dev)
            t0 = time.time()
        batch = synthesize(bank, cfg["optim"]["batch_size"], model_cfg.window_samples, gen, spec)
        with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16):
            stems = model(batch.mix)
        loss = loss_fn(batch, stems.float())
        loss.backward()
        opt.step()
        opt.zero_grad()
    _sync(dev)
    return steps / (time.time() - t0)


def infer_rate(config: SeparatorConfig, dev: str, batch: int = 64, reps: int = 10) -> float:
    model = Separator(config).to(dev).eval()
    x = torch.randn(batch, config.window_samples, device=dev)
    with torch.inference_mode(), torch.autocast(dev.split(":")[0], dtype=torch.bfloat16):
        for _ in range(3):
            model(x)
        _sync(dev)
        t0 = time.time()
        for _ in range(reps):
            model(x)
        _sync(dev)
    return batch * reps / (time.time() - t0)


def write_shards(model, out: Path, limit: int = 15_000_000) -> None:
    """Model weights in safetensors shards under ``limit`` bytes: matrices/kernels in fp16."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    shards, cur, size = [], {}, 0
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point() and v.dim() > 1:
            v = v.half()
        n = v.numel() * v.element_size()
        if cur and size + n > limit:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = v.contiguous()
        size += n
    shards.append(cur)
    for i, sd in enumerate(shards):
        save_file(sd, str(out / f"shard_{i}.safetensors"))
    model.config.save(out / "separator.json")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(Path(__file__).with_name("config.yaml")))
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--budget-s", type=float, default=420)
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shards-to", default=None,
                    help="also write the model as fp16 shards of < 15 MB here (for transfer)")
    ap.add_argument("--probe-steps", type=int, default=25)
    ap.add_argument("--infer-batch", type=int, default=64)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg = load_config(Path(args.config), [f"data.train={args.corpus}", *args.set])
    dev = args.device
    report = {"device": torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu",
              "torch": torch.__version__}
    bank = load_clip_bank(args.corpus, "train", 16000, cfg["data"]["max_seconds"]).to(dev)
    rate = train_rate(cfg, bank, dev, args.probe_steps)
    steps = int(args.budget_s * rate * 0.92)
    report.update(train_steps_per_s=rate, train_windows_per_s=rate * cfg["optim"]["batch_size"],
                  steps=steps, train_clips=len(bank), train_seconds_of_audio=bank.seconds)
    print(json.dumps(report), flush=True)
    cfg["train"]["steps"] = steps
    cfg["train"]["max_minutes"] = args.budget_s / 60 * 1.15
    cfg["validation"]["every"] = max(50, steps // 12)
    cfg["checkpoint"]["every"] = max(100, steps // 4)
    trainer = Trainer(cfg, Path(args.out), device=dev, progress=False)
    trainer.bank = bank
    trainer.load_data = lambda: None  # the bank is already on the GPU
    from macs_cli.training.data import validation_sets
    held = load_clip_bank(args.corpus, "heldout", 16000, cfg["data"]["max_seconds"])
    v = cfg["validation"]
    trainer.val_set = validation_sets(held, v["mixtures"], v["sources"], trainer.model_cfg.window_samples,
                                      seed=v["seed"], mode=v["mode"], loop_prob=v["loop_prob"])
    t0 = time.time()
    result = trainer.run()
    report.update(train_wall_s=time.time() - t0, final=result)
    report["infer_windows_per_s_bf16_b64"] = {
        "trained": infer_rate(trainer.model_cfg, dev, args.infer_batch),
        "official_nc64": infer_rate(official_config(), dev, args.infer_batch)}
    Path(args.out, "gpu_report.json").write_text(json.dumps(report, indent=2))
    if args.shards_to:
        write_shards(trainer.accel.unwrap_model(trainer.model), Path(args.shards_to))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
