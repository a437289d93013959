"""Speed and memory of ``macs separate`` on long 44.1 kHz stereo files (CPU by default; ``--device``).

Builds test inputs by resampling ``examples/mixture.wav`` (10 s, 16 kHz mono) to 44.1 kHz and
tiling it to each duration; the right channel is the same signal shifted by 1.234 s (so the
channels differ and macs's channel mean is not just a copy of one). Each file is separated by
``macs separate FILE -o OUT --device cpu -q`` (default model, default overlap 0.25, batch 1) in its
own subprocess; the script records

* wall time of the subprocess (Python start-up and model loading included) and its real-time
  factor RTF = wall / audio duration;
* the manifest's own timing (``timing.seconds``: inside ``separate_file``, no start-up);
* peak RSS of that subprocess: ``ru_maxrss`` from ``os.wait4`` in a small launcher process (the
  kernel's high-water mark, no polling gaps; see LAUNCHER for why not from this script), cross-
  checked by polling ``VmHWM`` in /proc every 0.1 s;
* for the longest file: that the 6 stems (16 kHz) sum to the 16 kHz mono mixture computed
  independently (``soxr.resample`` HQ of the channel mean of the file as read, which is what macs
  does, in one shot rather than streamed) -- RMS of the difference.

    python benchmarks/speed.py --durations 10 60 600 --repeats 3 --out benchmarks/results/speed_cpu.json
    python benchmarks/speed.py --device cuda --durations 600 --repeats 2 --wait-idle 0 \
        --out benchmarks/results/speed_gpu.json --extra --batch-size 16
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
    # ``python -m macs_cli`` run with this checkout first on PYTHONPATH (run_separate), so the code
    # measured is this checkout's, not whichever copy an installed ``macs`` script would import
    return [sys.executable, "-m", "macs_cli"]


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


# A small launcher process runs the command and reports its rusage. Why not Popen + wait4 from
# here: Linux carries the parent's RSS high-water mark into a forked child's ru_maxrss (the child
# starts as a copy of the parent's address space, and exec keeps the old high-water mark), so a
# child of this script -- which holds the test audio and has imported torch -- would report this
# script's peak instead of its own whenever that is larger. The launcher is a few MiB.
LAUNCHER = r"""
import json, os, subprocess, sys, time
out_path, every, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
def status(pid):
    try:
        d = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
        return int(d["VmHWM"].split()[0]), int(d["VmRSS"].split()[0])
    except (OSError, KeyError, ValueError):
        return None
with open(out_path, "wb") as out:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    hwm, rss, n = 0, [], 0
    while True:
        pid, st, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        s = status(p.pid)
        if s:
            hwm = max(hwm, s[0]); rss.append((round(time.perf_counter() - t0, 2), s[1]))
        time.sleep(every)
    wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "returncode": os.waitstatus_to_exitcode(st),
                  "ru_maxrss_kib": ru.ru_maxrss, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
                  "vmhwm_polled_kib": hwm, "rss_kib": rss, "launcher_maxrss_kib":
                  __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss}))
"""


def cpu_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine so far, all cores (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_idle(max_wait: float, busy_limit: float = 0.15, log=None) -> float:
    """Wait (up to ``max_wait`` s) until the machine is busy less than ``busy_limit`` of its cores
    over a 1 s sample; returns the seconds waited. Other users' jobs skew timings on a small box."""
    t0 = time.time()
    cores = os.cpu_count() or 1
    while True:
        b0 = cpu_busy_seconds()
        time.sleep(1.0)
        busy = (cpu_busy_seconds() - b0) / cores
        if busy < busy_limit or time.time() - t0 > max_wait:
            if log and time.time() - t0 > 2:
                log(f"  waited {time.time() - t0:.0f} s for an idle machine (busy {busy:.0%})")
            return time.time() - t0


def run_separate(path: Path, outdir: Path, extra: list[str], poll_every: float = 0.1, device: str = "cpu") -> dict:
    cmd = [*macs_command(), "separate", str(path), "-o", str(outdir), "--device", device, "-q", *extra]
    load_before = os.getloadavg()[0]
    busy_before = cpu_busy_seconds()
    log_path = outdir.parent / f"{outdir.name}.log"
    res = subprocess.run([sys.executable, "-c", LAUNCHER, str(log_path), str(poll_every), *cmd],
                         capture_output=True, text=True, check=True, env=child_env())
    busy = cpu_busy_seconds() - busy_before
    r = json.loads(res.stdout.strip().splitlines()[-1])
    output = log_path.read_text(errors="replace") if log_path.exists() else ""
    if r["returncode"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r['returncode']}):\n{output}")
    rss = r.pop("rss_kib")
    timeline = [round(rss[min(len(rss) - 1, int(q * (len(rss) - 1) / 10))][1] / 1024) for q in range(11)] if rss else []
    # ru_maxrss is in KiB on Linux; it is the kernel's high-water mark for the child (exact)
    return {"command": " ".join(cmd), "wall_s": r["wall_s"], "peak_rss_mib": r["ru_maxrss_kib"] / 1024.0,
            "user_s": r["user_s"], "sys_s": r["sys_s"],
            "vmhwm_polled_mib": r["vmhwm_polled_kib"] / 1024.0,
            "launcher_peak_rss_mib": r["launcher_maxrss_kib"] / 1024.0,
            "rss_timeline_mib": timeline, "poll_every_s": poll_every,
            "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0],
            # CPU time other processes used meanwhile (machine busy time minus the child's own)
            "other_cpu_s": round(busy - r["user_s"] - r["sys_s"], 2),
            "contended": bool(busy - r["user_s"] - r["sys_s"] > 0.1 * r["wall_s"] + 0.3)}


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

    sys.path.insert(0, str(ROOT))
    from macs_cli.precision import cpu_bf16_native

    # what decides --precision auto on the CPU: without native bf16 the separator runs in fp32
    return {"cpu": cpu, "nproc": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_bf16_native": bool(cpu_bf16_native())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--example", type=Path, default=ROOT / "examples" / "mixture.wav")
    p.add_argument("--durations", type=float, nargs="+", default=[10, 60, 600], help="seconds")
    p.add_argument("--workdir", type=Path, default=None, help="where inputs/outputs go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--repeats", type=int, default=3, help="runs per duration (medians are reported)")
    p.add_argument("--wait-idle", type=float, default=120.0,
                   help="before each run, wait up to this many seconds for an idle machine (0: don't)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="extra arguments for macs separate (e.g. --batch-size 4)")
    p.add_argument("--device", default="cpu", help="--device for macs separate (cpu, cuda, cuda:N)")
    p.add_argument("--out", type=Path, default=None, help="results JSON")
    args = p.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="macs-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results = {"benchmark": "speed", "settings": {"device": args.device, "model": "default", "overlap": 0.25,
                                                  "batch_size": 1, "extra_args": args.extra,
                                                  "repeats": args.repeats, "command": " ".join(macs_command()),
                                                  "input": f"{args.example.name} resampled to 44.1 kHz, "
                                                           f"tiled; right channel shifted {SHIFT_S} s"},
               "machine": machine(), "runs": []}
    longest = max(args.durations)
    try:
        for seconds in args.durations:
            name = f"in_{int(seconds)}s"
            src = work / f"{name}.wav"
            info = make_input(args.example, seconds, src)
            for rep in range(args.repeats):
                out = work / f"out_{int(seconds)}s"
                shutil.rmtree(out, ignore_errors=True)
                log(f"{seconds:.0f} s, run {rep + 1}/{args.repeats}: separating "
                    f"({info['bytes'] / 1e6:.0f} MB input) ...")
                if args.wait_idle:
                    wait_for_idle(args.wait_idle, log=log)
                r = run_separate(src, out, args.extra, device=args.device)
                manifest = json.loads((out / name / "manifest.json").read_text())
                r.update(duration_s=manifest["duration_s"], repeat=rep, input=info,
                         rtf_wall=r["wall_s"] / manifest["duration_s"],
                         manifest_timing=manifest["timing"],
                         manifest_settings=manifest["settings"])
                if seconds == longest and rep == args.repeats - 1:
                    r["stem_sum_check"] = stem_sum_check(src, out / name, manifest)
                results["runs"].append(r)
                log(f"  wall {r['wall_s']:.1f} s  RTF {r['rtf_wall']:.4f}  manifest RTF "
                    f"{manifest['timing']['real_time_factor']:.4f}  peak RSS {r['peak_rss_mib']:.0f} MiB  "
                    f"other processes {r['other_cpu_s']:.1f} CPU s" + ("  (CONTENDED)" if r["contended"] else ""))
                if "stem_sum_check" in r:
                    c = r["stem_sum_check"]
                    results["stem_sum_check"] = {"duration_s": r["duration_s"], **c}
                    log(f"  stems sum to the 16 kHz mono mix: RMS diff {c['rms_diff']:.2e} "
                        f"(max {c['max_abs_diff']:.2e}) -> {'PASS' if c['pass'] else 'FAIL'}")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    rows = ["| input (44.1 kHz stereo) | uncontended runs | precision used | wall time (s), median | "
            "RTF (wall), median [min-max] | manifest time (s), median | RTF (manifest), median | "
            "process CPU s (user + sys), median | other processes' CPU s, median | peak RSS (MiB), median [min-max] |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    results["summary"] = []
    for seconds in args.durations:
        every = [r for r in results["runs"] if abs(r["input"]["seconds"] - seconds) < 1e-6]
        clean = [r for r in every if not r["contended"]]
        runs = clean or every  # timings from runs that had the machine to themselves, if any
        wall = np.array([r["wall_s"] for r in runs])
        rtf = np.array([r["rtf_wall"] for r in runs])
        mt = np.array([r["manifest_timing"]["seconds"] for r in runs])
        mrtf = np.array([r["manifest_timing"]["real_time_factor"] for r in runs])
        rss = np.array([r["peak_rss_mib"] for r in runs])
        summ = {"duration_s": runs[0]["duration_s"], "runs": len(runs), "runs_total": len(every),
                "all_runs_contended": not clean,
                "wall_s_median": float(np.median(wall)), "rtf_wall_median": float(np.median(rtf)),
                "rtf_wall_min": float(rtf.min()), "rtf_wall_max": float(rtf.max()),
                "manifest_seconds_median": float(np.median(mt)), "rtf_manifest_median": float(np.median(mrtf)),
                "peak_rss_mib_median": float(np.median(rss)), "peak_rss_mib_min": float(rss.min()),
                "peak_rss_mib_max": float(rss.max()),
                "process_cpu_s_median": float(np.median([r["user_s"] + r["sys_s"] for r in runs])),
                "other_cpu_s_median": float(np.median([r["other_cpu_s"] for r in runs])),
                "precision_used": sorted({str(r["manifest_settings"].get("precision_used")) for r in runs})}
        results["summary"].append(summ)
        flag = "" if clean else " (all contended)"
        rows.append(f"| {summ['duration_s']:.0f} s | {len(runs)} of {len(every)}{flag} | "
                    f"{', '.join(summ['precision_used'])} | {summ['wall_s_median']:.1f} | "
                    f"{summ['rtf_wall_median']:.4f} [{rtf.min():.4f}-{rtf.max():.4f}] | "
                    f"{summ['manifest_seconds_median']:.1f} | {summ['rtf_manifest_median']:.4f} | "
                    f"{summ['process_cpu_s_median']:.1f} | {summ['other_cpu_s_median']:.1f} | "
                    f"{summ['peak_rss_mib_median']:.0f} [{rss.min():.0f}-{rss.max():.0f}] |")
    results["markdown"] = "\n".join(rows)
    print(results["markdown"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
