"""Numeric precision of inference (``--precision`` of ``separate``, ``embed`` and ``generate``).

``auto`` resolves per stage and device:

* separator on CUDA: ``fp32`` (the official code's precision; cuDNN's default TF32 convolutions stay
  allowed, as there). bf16 was the old default and moved stems by a few percent.
* separator on the CPU: ``bf16`` autocast for the models whose bf16 error was measured (the
  built-in ``macs-default-v1``: ``benchmarks/cpu_precision.py``, see benchmarks/README.md) where the
  CPU computes bf16 natively (AVX512-BF16 or AMX: :func:`cpu_bf16_native`); ``fp32`` elsewhere, and
  for every other model (the official checkpoint gives what the official code gives: fp32).
* CLAP: ``fp32`` on every device (its error in bf16 was not measured with real weights).

``fp32``, ``bf16`` and ``fp16`` force a precision (``fp16`` needs CUDA). Low precision is autocast:
weights stay float32, the STFT, the masks and mixture consistency run in float32.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_HELP = ("auto (fp32; the built-in separator in bf16 on CPUs with native bf16, AVX512-BF16/AMX), "
                  "fp32, bf16 or fp16 (CUDA only).")
# the CPU default where bf16 is native, for the models measured in benchmarks/cpu_precision.py
# (benchmarks/results/cpu_precision.json)
CPU_NATIVE_BF16_DEFAULT = "bf16"
CPU_BF16_MODELS = frozenset({"macs-default-v1"})
_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_flags(path: str | Path = "/proc/cpuinfo") -> set[str]:
    try:
        text = Path(path).read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    return flags


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16): torch's own CPU
    feature check where it has one, else the ``/proc/cpuinfo`` flags."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    checks = [c for c in checks if callable(c)]
    if checks:
        try:
            return any(bool(c()) for c in checks)
        except Exception:  # a torch build without the check: fall back to the flags
            pass
    return bool(_cpuinfo_flags() & set(_CPU_FLAGS))


def cpu_bf16_warning(precision: str, device: str) -> str | None:
    """What to tell a user who asks for bf16 on a CPU that only emulates it (None: nothing)."""
    if str(device) != "cpu" or precision != "bf16" or cpu_bf16_native():
        return None
    return ("--precision bf16: this CPU has no native bf16 (AVX512-BF16/AMX), so bf16 is emulated and much "
            "slower than fp32 (over 10x per window measured on an AVX2 CPU; benchmarks/README.md section 2)")


def check_precision(precision: str) -> str:
    p = str(precision).strip().lower()
    if p not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    return p


def resolve_precision(precision: str, device: str | torch.device, stage: str = "separator",
                      model: str | None = None) -> str:
    """``auto``/``fp32``/``bf16``/``fp16`` on ``device`` for ``stage`` (``separator`` or ``clap``) ->
    the precision that runs (``fp32``, ``bf16`` or ``fp16``). ``model``: the separator's config name
    (``auto`` takes bf16 on the CPU only for the measured models, :data:`CPU_BF16_MODELS`)."""
    import torch

    p = check_precision(precision)
    kind = torch.device(device).type
    if p == "fp16" and kind != "cuda":
        raise ConfigError(f"--precision fp16 needs a CUDA device (this run uses {kind}): use fp32 or bf16")
    if p != "auto":
        return p
    if stage == "separator" and kind == "cpu" and model in CPU_BF16_MODELS and cpu_bf16_native():
        return CPU_NATIVE_BF16_DEFAULT
    return "fp32"


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a *resolved* precision on ``device`` (a no-op for fp32)."""
    import torch

    kind = torch.device(device).type
    if precision == "fp32" or kind not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


@contextlib.contextmanager
def inference(precision: str, device: str | torch.device) -> Iterator[None]:
    import torch

    with torch.inference_mode(), autocast(precision, device):
        yield


__all__ = ["PRECISIONS", "PRECISION_HELP", "autocast", "check_precision", "cpu_bf16_native", "inference",
           "resolve_precision"]
