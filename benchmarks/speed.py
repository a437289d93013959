"""CPU speed and memory of ``macs separate`` on long 44.1 kHz stereo files.

Builds test inputs by resampling ``examples/mixture.wav`` (10 s, 16 kHz mono) to 44.1 kHz and
tiling it to each duration; the right channel is the same signal shifted by 1.234 s (so the
channels differ and macs's channel mean is not just a copy of one). Each file is separated by
``macs separate FILE -o OUT --device cpu -q`` (default model, default overlap 0.25, batch 1) in its
own subprocess; the script records

* wall time of the subprocess (Python start-up and model loading included) and its real-time
  factor RTF = wall / audio duration;
* the manifest's own timing (``timing.seconds``: inside ``separate_file``, no start-up);
* peak RSS of that subprocess (``os.wait4`` rusage ``ru_maxrss``, i.e. the kernel's high-water
  mark for that child, no polling gaps);
* for the longest file: that the 6 stems (16 kHz) sum to the 16 kHz mono mixture computed
  independently (``soxr.resample`` HQ of the channel mean of the file as read, which is what macs
  does, in one shot rather than streamed) -- RMS of the difference.

    python benchmarks/speed.py --durations 10 60 600 --out benchmarks/results/speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
SHIFT_S = 1.234


def make_input(example: Path, seconds: float, path: Path) -> dict:
    x, sr = sf.read(str(example), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    x = soxr.resample(x, sr, RATE, quality="HQ").astype(np.float32)
    n = int(round(seconds * RATE))
    reps = -(-n // x.size)
    left = np.tile(x, reps)[:n]
    right = np.roll(left, int(SHIFT_S * RATE))
    stereo = np.stack([left, right], axis=1)
    peak = float(np.abs(stereo).max())
    if peak > 0.99:  # keep PCM_16 from clipping
        stereo *= 0.99 / peak
    sf.write(str(path), stereo, RATE, subtype="PCM_16")
    return {"path": str(path), "seconds": n / RATE, "sample_rate": RATE, "channels": 2,
            "subtype": "PCM_16", "bytes": path.stat().st_size}


def macs_command() -> list[str]:
    exe = shutil.which("macs")
    return [exe] if exe else [sys.executable, "-m", "macs_cli"]


def run_separate(path: Path, outdir: Path, extra: list[str]) -> dict:
    cmd = [*macs_command(), "separate", str(path), "-o", str(outdir), "--device", "cpu", "-q", *extra]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output}")
    # ru_maxrss is in KiB on Linux
    return {"command": " ".join(cmd), "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024.0,
            "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0]}


def stem_sum_check(path: Path, stem_dir: Path, manifest: dict) -> dict:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = x.mean(axis=1)
    ref = soxr.resample(mono, sr, manifest["model_sample_rate"], quality="HQ").astype(np.float64)
    total = None
    for stem in manifest["stems"]:
        s, srs = sf.read(str(stem_dir / stem["file"]), dtype="float64")
        assert srs == manifest["model_sample_rate"]
        total = s if total is None else total + s
    n = min(total.size, ref.size)
    diff = total[:n] - ref[:n]
    return {"stems": len(manifest["stems"]), "stem_samples": int(total.size), "reference_samples": int(ref.size),
            "rms_diff": float(np.sqrt(np.mean(diff ** 2))), "max_abs_diff": float(np.abs(diff).max()),
            "reference_rms": float(np.sqrt(np.mean(ref ** 2))), "threshold": 1e-4,
            "pass": bool(np.sqrt(np.mean(diff ** 2)) < 1e-4 and abs(total.size - ref.size) <= 1)}


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    return {"cpu": cpu, "nproc": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--example", type=Path, default=ROOT / "examples" / "mixture.wav")
    p.add_argument("--durations", type=float, nargs="+", default=[10, 60, 600], help="seconds")
    p.add_argument("--workdir", type=Path, default=None, help="where inputs/outputs go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="extra arguments for macs separate (e.g. --batch-size 4)")
    p.add_argument("--out", type=Path, default=None, help="results JSON")
    args = p.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="macs-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results = {"benchmark": "speed", "settings": {"device": "cpu", "model": "default", "overlap": 0.25,
                                                  "batch_size": 1, "extra_args": args.extra,
                                                  "input": f"{args.example.name} resampled to 44.1 kHz, "
                                                           f"tiled; right channel shifted {SHIFT_S} s"},
               "machine": machine(), "runs": []}
    longest = max(args.durations)
    try:
        for seconds in args.durations:
            name = f"in_{int(seconds)}s"
            src = work / f"{name}.wav"
            info = make_input(args.example, seconds, src)
            out = work / f"out_{int(seconds)}s"
            shutil.rmtree(out, ignore_errors=True)
            log(f"{seconds:.0f} s: separating ({info['bytes'] / 1e6:.0f} MB input) ...")
            r = run_separate(src, out, args.extra)
            manifest = json.loads((out / name / "manifest.json").read_text())
            r.update(duration_s=manifest["duration_s"], input=info,
                     rtf_wall=r["wall_s"] / manifest["duration_s"],
                     manifest_timing=manifest["timing"],
                     manifest_settings=manifest["settings"])
            if seconds == longest:
                r["stem_sum_check"] = stem_sum_check(src, out / name, manifest)
            results["runs"].append(r)
            log(f"  wall {r['wall_s']:.1f} s  RTF {r['rtf_wall']:.4f}  manifest RTF "
                f"{manifest['timing']['real_time_factor']:.4f}  peak RSS {r['peak_rss_mib']:.0f} MiB")
            if "stem_sum_check" in r:
                c = r["stem_sum_check"]
                log(f"  stems sum to the 16 kHz mono mix: RMS diff {c['rms_diff']:.2e} "
                    f"(max {c['max_abs_diff']:.2e}) -> {'PASS' if c['pass'] else 'FAIL'}")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    rows = ["| input (44.1 kHz stereo) | wall time (s) | RTF (wall) | manifest time (s) | RTF (manifest) | peak RSS (MiB) |",
            "|---|---|---|---|---|---|"]
    for r in results["runs"]:
        rows.append(f"| {r['duration_s']:.0f} s | {r['wall_s']:.1f} | {r['rtf_wall']:.4f} | "
                    f"{r['manifest_timing']['seconds']:.1f} | {r['manifest_timing']['real_time_factor']:.4f} | "
                    f"{r['peak_rss_mib']:.0f} |")
    results["markdown"] = "\n".join(rows)
    print(results["markdown"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
