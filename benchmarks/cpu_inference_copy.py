"""CPU time per 8 s window of the built-in separator as ``separate`` ran it before (the model
itself) and as it runs it now on the CPU (``cpu_inference_copy``: BatchNorm folded, channels_last),
interleaved, in one process, fp32 (and bf16 autocast with ``--bf16``).

    python benchmarks/cpu_inference_copy.py --threads 1 2 --repeats 5 \
        --out benchmarks/results/cpu_inference_copy.json

The process's CPU time (``time.process_time``) is the figure to compare on a shared machine; wall
time is recorded beside it, and the other processes' CPU use during the run (from /proc/stat).
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

from macs_cli.audio.io import read_audio  # noqa: E402
from macs_cli.precision import autocast, cpu_bf16_native  # noqa: E402
from macs_cli.separation.model import cpu_inference_copy  # noqa: E402
from macs_cli.weights.separator import load_separator  # noqa: E402
from speed import cpu_busy_seconds, machine  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    model = load_separator("default", device="cpu").eval()
    fast = cpu_inference_copy(model)
    audio, _ = read_audio(ROOT / "examples" / "mixture.wav", model.config.sample_rate)
    x = torch.from_numpy(np.stack([audio[: model.config.window_samples]] * a.batch).copy())
    precisions = ["fp32"] + (["bf16"] if a.bf16 else [])
    res = {"benchmark": "cpu_inference_copy", "machine": machine(), "batch": a.batch, "repeats": a.repeats,
           "input": "examples/mixture.wav, first 8 s", "rows": []}
    with torch.inference_mode():
        ref = model(x)
        for prec in precisions:
            with autocast(prec, "cpu"):
                diff = float((fast(x).float() - model(x).float()).norm() / ref.norm())
            for threads in a.threads:
                torch.set_num_threads(threads)
                times = {"model": [], "cpu_inference_copy": []}
                busy0, cpu0, wall0 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
                with autocast(prec, "cpu"):
                    model(x), fast(x)  # warm-up
                    for _ in range(a.repeats):
                        for name, net in (("model", model), ("cpu_inference_copy", fast)):
                            c, w = time.process_time(), time.perf_counter()
                            net(x)
                            times[name].append((time.process_time() - c, time.perf_counter() - w))
                busy = cpu_busy_seconds() - busy0
                own = time.process_time() - cpu0
                row = {"precision": prec, "threads": threads, "rel_diff_vs_model": diff,
                       "other_processes_cores": round((busy - own) / (time.perf_counter() - wall0) / 2, 2)}
                for name, v in times.items():
                    cpu = np.array([t[0] for t in v]) / a.batch
                    wall = np.array([t[1] for t in v]) / a.batch
                    row[name] = {"cpu_s_per_window_median": float(np.median(cpu)), "cpu_s_min": float(cpu.min()),
                                 "cpu_s_max": float(cpu.max()), "wall_s_per_window_median": float(np.median(wall))}
                row["cpu_ratio"] = row["model"]["cpu_s_per_window_median"] / \
                    row["cpu_inference_copy"]["cpu_s_per_window_median"]
                res["rows"].append(row)
                print(f"{prec} threads {threads}: model {row['model']['cpu_s_per_window_median']:.3f} CPU s/window, "
                      f"copy {row['cpu_inference_copy']['cpu_s_per_window_median']:.3f} -> {row['cpu_ratio']:.2f}x; "
                      f"rel diff {diff:.1e}; other processes {row['other_processes_cores']:.2f} of the cores",
                      file=sys.stderr)
    if a.out:
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
