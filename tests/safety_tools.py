"""Helpers for the data-safety tests: running macs in a real process, a small file system that
fills up for real, aged temporaries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            **{k: str(v) for k, v in extra.items()}}


def macs_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "macs_cli", *[str(a) for a in args]]


def macs(*args, timeout: float = 300, stdin=None, **kw) -> subprocess.CompletedProcess:
    """``python -m macs_cli ARGS`` in a real process (stdout and stderr kept apart)."""
    return subprocess.run(macs_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=kw.pop("env", None) or env(), stdin=stdin, **kw)


def noise(path: Path, seconds: float, rate: int = 16000, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate)).astype(np.float32)
    sf.write(path, x, rate, format="WAV")
    return path


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look ``seconds`` old (its modification time)."""
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


def small_fs_prefix(mountpoint: Path, size: str) -> list[str] | None:
    """A command prefix that runs a command with a tmpfs of ``size`` mounted at ``mountpoint``
    (a real file system that really fills up): ``unshare`` into a private user + mount namespace
    where that is allowed (no root needed, nothing left mounted), else None."""
    if shutil.which("unshare") is None or sys.platform != "linux":
        return None
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k none {mountpoint}"],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size={size} none "$0" && cd "$0" && exec "$@"',
            str(mountpoint)]
