"""CPU precision of the separator: fp32 against bf16 autocast, speed and stem difference.

For the built-in model (``load_separator("default")``) on this machine's CPU:

* **speed, one window**: seconds per 8 s window (batch 1, and batch 4) of the network alone
  (``model_window_fn`` with ``precision`` fp32 / bf16), fp32 and bf16 runs interleaved,
  ``--repeats`` timings each after one warm-up, the median kept;
* **speed, a whole file**: ``separate_file`` on a ``--seconds`` long 16 kHz mono file (the example
  mixture tiled, each copy at another gain), model loaded once, both precisions interleaved;
  the median real-time factor (seconds of compute per second of audio, no start-up);
* **difference**: on 8 s windows of real audio (the example mixture's first and last 8 s, and the
  bird + piano clips of tests/data summed), the stems of bf16 against those of fp32:
  ``rel = ||s_bf16 - s_fp32|| / ||s_fp32||`` over all stems of a window, the largest per-stem
  difference relative to the mixture's norm, and the SI-SDR of each bf16 stem against its fp32 stem
  (stems within 30 dB of the loudest).

    python benchmarks/cpu_precision.py --threads 2 --repeats 5 --seconds 60 \
        --out benchmarks/results/cpu_precision.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from macs_cli.precision import cpu_bf16_native  # noqa: E402
from macs_cli.separation.api import SeparateOptions, model_window_fn, separate_file  # noqa: E402
from macs_cli.weights.separator import load_separator  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def windows(model) -> dict[str, np.ndarray]:
    n = model.config.window_samples
    mix, sr = sf.read(str(ROOT / "examples" / "mixture.wav"), dtype="float32")
    assert sr == model.config.sample_rate
    bird, _ = sf.read(str(ROOT / "tests" / "data" / "bird.flac"), dtype="float32")
    piano, _ = sf.read(str(ROOT / "tests" / "data" / "piano.flac"), dtype="float32")
    both = np.zeros(n, np.float32)
    both[: min(n, bird.size)] += bird[:n]
    both[: min(n, piano.size)] += piano[:n]
    return {"example_first_8s": mix[:n], "example_last_8s": mix[-n:], "bird_plus_piano": both}


def sisdr(est: np.ndarray, ref: np.ndarray) -> float:
    est, ref = est.astype(np.float64) - est.mean(), ref.astype(np.float64) - ref.mean()
    a = est @ ref / max(ref @ ref, 1e-20)
    t, e = a * ref, est - a * ref
    return float(10 * np.log10(max(t @ t, 1e-20) / max(e @ e, 1e-20)))


def difference(model) -> dict:
    fns = {p: model_window_fn(model, p) for p in PRECISIONS}
    out = {}
    for name, w in windows(model).items():
        s32 = fns["fp32"](w[None])[0].astype(np.float64)
        s16 = fns["bf16"](w[None])[0].astype(np.float64)
        d = s16 - s32
        energy = (s32 ** 2).sum(1)
        loud = energy >= energy.max() * 1e-3
        out[name] = {
            "relative_difference": float(np.linalg.norm(d) / np.linalg.norm(s32)),
            "max_stem_difference_rel_mixture": float(np.linalg.norm(d, axis=1).max() / np.linalg.norm(w)),
            "sisdr_bf16_vs_fp32_db": [round(sisdr(a, b), 2) for a, b, k in zip(s16, s32, loud) if k],
            "sum_to_mixture_rms": {p: float(np.sqrt(np.mean((s.sum(0) - w) ** 2)))
                                   for p, s in (("fp32", s32), ("bf16", s16))},
        }
    return out


def time_windows(model, batch: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((batch, model.config.window_samples))).astype(np.float32)
    fns = {p: model_window_fn(model, p) for p in PRECISIONS}
    for fn in fns.values():
        fn(x)  # warm-up
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(repeats):
        for p, fn in fns.items():
            t0 = time.perf_counter()
            fn(x)
            times[p].append((time.perf_counter() - t0) / batch)
    med = {p: statistics.median(v) for p, v in times.items()}
    return {"batch": batch, "seconds_per_window": {p: round(v, 4) for p, v in med.items()},
            "all": {p: [round(t, 4) for t in v] for p, v in times.items()},
            "speedup_bf16": round(med["fp32"] / med["bf16"], 3)}


def time_file(model, seconds: float, repeats: int) -> dict:
    mix, sr = sf.read(str(ROOT / "examples" / "mixture.wav"), dtype="float32")
    n = int(seconds * sr)
    reps = -(-n // mix.size)
    x = np.concatenate([mix * (0.5 + 0.5 * (k % 3) / 2) for k in range(reps)])[:n]
    rtf: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        sf.write(path, x, sr, subtype="FLOAT")
        for _ in range(repeats):
            for p in PRECISIONS:
                t0 = time.perf_counter()
                separate_file(model, path, Path(tmp) / p, SeparateOptions(precision=p, force=True))
                rtf[p].append((time.perf_counter() - t0) / seconds)
    med = {p: statistics.median(v) for p, v in rtf.items()}
    return {"seconds": seconds, "real_time_factor": {p: round(v, 4) for p, v in med.items()},
            "all": {p: [round(t, 4) for t in v] for p, v in rtf.items()},
            "speedup_bf16": round(med["fp32"] / med["bf16"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_precision.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_separator("default")
    t0 = time.time()
    result = {
        "command": "python " + " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "processor": _cpu_name(), "nproc": os.cpu_count(),
                    "torch": torch.__version__, "threads": args.threads,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "bf16_native": cpu_bf16_native()},
        "model": model.config.name,
        "difference": difference(model),
        "window_batch1": time_windows(model, 1, args.repeats),
        "window_batch4": time_windows(model, 4, max(1, args.repeats // 2)),
        "file": time_file(model, args.seconds, max(1, args.repeats // 2)),
    }
    result["wall_seconds"] = round(time.time() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("difference", "window_batch1", "window_batch4", "file")}, indent=1))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
