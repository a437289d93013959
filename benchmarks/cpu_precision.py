"""CPU precision of the separator: fp32 against bf16 autocast, speed and stem difference.

For the built-in model (``load_separator("default")``) on this machine's CPU:

* **speed, one window**: seconds per 8 s window (batch 1, and batch 4) of the network alone
  (``model_window_fn`` with ``precision`` fp32 / bf16), fp32 and bf16 runs interleaved,
  ``--repeats`` timings each after one warm-up; before each timed run the script waits (up to
  ``--wait-idle`` s) for an idle machine and records how much of the CPU other processes took
  meanwhile; medians and minima are over the runs they left alone (< 10 % of the cores);
* the same on one torch thread, whose CPU time is the compute cost even when other jobs share the
  machine;
* **speed, a whole file**: ``separate_file`` on a ``--seconds`` long 16 kHz mono file (the example
  mixture tiled, each copy at another gain), model loaded once, both precisions interleaved;
  the median real-time factor (seconds of compute per second of audio, no start-up);
* **difference**: on 8 s windows of real audio (the example mixture's first and last 8 s, and the
  bird + piano clips of tests/data summed), the stems of bf16 against those of fp32:
  ``rel = ||s_bf16 - s_fp32|| / ||s_fp32||`` over all stems of a window, the largest per-stem
  difference relative to the mixture's norm, and the SI-SDR of each bf16 stem against its fp32 stem
  (stems within 30 dB of the loudest);
* the same difference for the official architecture (NC = 64, power-spectrogram input) with random
  weights (seed 0), since no official checkpoint is at hand: why ``auto`` keeps such models in fp32.

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

from benchmarks.speed import cpu_busy_seconds, wait_for_idle  # noqa: E402
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


def difference(model, only: tuple[str, ...] | None = None) -> dict:
    fns = {p: model_window_fn(model, p) for p in PRECISIONS}
    out = {}
    for name, w in windows(model).items():
        if only and name not in only:
            continue
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


WAIT_IDLE = 60.0   # seconds to wait for an idle machine before each timed run (--wait-idle)


def timed(fn) -> tuple[float, float, float]:
    """Seconds ``fn()`` took, the share of the machine's cores other processes used meanwhile (from
    /proc/stat minus this process's CPU time), after waiting for an idle machine, and this
    process's CPU seconds (all its threads: less sensitive to other jobs than the wall time)."""
    wait_for_idle(WAIT_IDLE)
    b0, u0, t0 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
    fn()
    dt, cpu = time.perf_counter() - t0, time.process_time() - u0
    others = (cpu_busy_seconds() - b0 - cpu) / dt / (os.cpu_count() or 1)
    return dt, max(0.0, others), cpu


def summarise(times: dict[str, list[float]], others: dict[str, list[float]], key: str,
              cpu: dict[str, list[float]] | None = None) -> dict:
    """Medians and minima over the runs that other processes left alone (< 10 % of the cores),
    over all runs where too few were; and the median CPU seconds of every run."""
    out: dict = {"all": {p: [round(t, 4) for t in v] for p, v in times.items()},
                 "other_processes_cores": {p: [round(o, 3) for o in v] for p, v in others.items()}}
    if cpu is not None:
        med_cpu = {p: statistics.median(v) for p, v in cpu.items()}
        out["cpu_" + key] = {p: round(v, 4) for p, v in med_cpu.items()}
        out["cpu_all"] = {p: [round(t, 4) for t in v] for p, v in cpu.items()}
        out["speedup_bf16_cpu_time"] = round(med_cpu["fp32"] / med_cpu["bf16"], 3)
    med, low = {}, {}
    for p, v in times.items():
        quiet = [t for t, o in zip(v, others[p]) if o < 0.10]
        use = quiet if len(quiet) >= max(1, len(v) // 2) else v
        out.setdefault("uncontended_runs", {})[p] = f"{len(quiet)} of {len(v)}"
        med[p], low[p] = statistics.median(use), min(use)
    out[key] = {p: round(v, 4) for p, v in med.items()}
    out["min_" + key] = {p: round(v, 4) for p, v in low.items()}
    out["speedup_bf16"] = round(med["fp32"] / med["bf16"], 3)
    out["speedup_bf16_of_minima"] = round(low["fp32"] / low["bf16"], 3)
    return out


def time_windows(model, batch: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((batch, model.config.window_samples))).astype(np.float32)
    fns = {p: model_window_fn(model, p) for p in PRECISIONS}
    for fn in fns.values():
        fn(x)  # warm-up
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    others: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    cpu: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(repeats):
        for p, fn in fns.items():
            dt, o, c = timed(lambda: fn(x))
            times[p].append(dt / batch)
            others[p].append(o)
            cpu[p].append(c / batch)
    return {"batch": batch, **summarise(times, others, "seconds_per_window", cpu)}


def time_file(model, seconds: float, repeats: int) -> dict:
    mix, sr = sf.read(str(ROOT / "examples" / "mixture.wav"), dtype="float32")
    n = int(seconds * sr)
    reps = -(-n // mix.size)
    x = np.concatenate([mix * (0.5 + 0.5 * (k % 3) / 2) for k in range(reps)])[:n]
    rtf: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    others: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    cpu: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        sf.write(path, x, sr, subtype="FLOAT")
        for _ in range(repeats):
            for p in PRECISIONS:
                dt, o, c = timed(lambda: separate_file(model, path, Path(tmp) / p,
                                                       SeparateOptions(precision=p, force=True)))
                rtf[p].append(dt / seconds)
                others[p].append(o)
                cpu[p].append(c / seconds)
    return {"seconds": seconds, **summarise(rtf, others, "real_time_factor", cpu)}


def main() -> None:
    global WAIT_IDLE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--wait-idle", type=float, default=WAIT_IDLE,
                    help="seconds to wait for an idle machine before each timed run")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_precision.json")
    args = ap.parse_args()
    WAIT_IDLE = args.wait_idle
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
        "difference_official_architecture_random_weights": difference(_official_random(), ("example_first_8s",
                                                                                          "bird_plus_piano")),
        "window_batch1": time_windows(model, 1, args.repeats),
        "window_batch1_one_thread": _one_thread(lambda: time_windows(model, 1, args.repeats), args.threads),
        "window_batch4": time_windows(model, 4, max(1, args.repeats // 2)),
        "file": time_file(model, args.seconds, max(1, args.repeats // 2)),
    }
    result["wall_seconds"] = round(time.time() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("difference", "difference_official_architecture_random_weights",
                                             "window_batch1", "window_batch1_one_thread", "window_batch4",
                                             "file")}, indent=1))


def _one_thread(fn, threads: int):
    """``fn()`` on one torch thread: its CPU time is then the compute cost, whatever else runs."""
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def _official_random():
    from macs_cli.separation.config import official_config
    from macs_cli.separation.model import Separator

    torch.manual_seed(0)
    return Separator(official_config()).eval()


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
