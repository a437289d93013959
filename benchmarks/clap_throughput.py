"""CLAP embedding throughput (stems/s) of `macs embed`'s encoder path, at full model size.

Weights are random (speed does not depend on them): laion-clap HTSAT-tiny + RoBERTa-base as MACS
uses, and transformers' ClapModel at its default (clap-htsat-unfused) size. Stems are 8 s at
16 kHz, as `macs separate` writes them (resampled to 48 kHz and repeat-padded to 10 s inside).

    python benchmarks/clap_throughput.py --stems 48 --batch-size 8 --device cpu \
        --out benchmarks/results/clap_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macs_cli.clap.encoders import HFClapEncoder, LaionClapEncoder  # noqa: E402
from macs_cli.clap.laion_net import LaionClapNet  # noqa: E402


def timed(encoder, waves, batch: int) -> float:
    encoder.embed_waveforms(waves[:batch], 16000, batch_size=batch)          # warm-up
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    encoder.embed_waveforms(waves, 16000, batch_size=batch, normalize=True)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return len(waves) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stems", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(8 * 16000)).astype(np.float32) for _ in range(args.stems)]
    torch.manual_seed(0)
    results = {}
    laion = LaionClapEncoder(LaionClapNet(), tokenizer=None, source="random HTSAT-tiny + roberta-base")
    laion.to(args.device).eval()
    results["laion_htsat_tiny"] = timed(laion, waves, args.batch_size)
    del laion
    from transformers import ClapConfig, ClapModel

    model = ClapModel(ClapConfig()).eval()

    class AudioOnlyTokenizer:  # the audio path never tokenises; only its size is checked
        def __len__(self) -> int:
            return int(model.config.text_config.vocab_size)

    hf = HFClapEncoder(model, tokenizer=AudioOnlyTokenizer(), source="random ClapConfig()")
    hf.to(args.device)
    results["hf_clap_default"] = timed(hf, waves, args.batch_size)
    report = {"benchmark": "clap_throughput", "unit": "stems/s (8 s stems, one 10 s CLAP window each)",
              "results": results, "stems": args.stems, "batch_size": args.batch_size,
              "device": args.device, "torch_threads": torch.get_num_threads(), "nproc": os.cpu_count(),
              "torch": torch.__version__, "python": platform.python_version()}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
