"""Pieces both training loops share: the learning-rate schedule and the mixed-precision choice."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, total: int, warmup_frac: float) -> float:
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine decay to 0."""
    warm = int(total * warmup_frac)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def mixed_precision(name: str, device: torch.device, cpu_allowed: bool = True) -> str:
    """accelerate's ``mixed_precision`` for a config value (auto, fp32, bf16, fp16): ``auto`` is
    bf16 (fp16 where bf16 is unsupported) on CUDA and fp32 on the CPU; with ``cpu_allowed=False``
    the CPU always trains in fp32."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"
    if device.type != "cuda" and not cpu_allowed:
        return "no"
    return {"fp32": "no"}.get(name, name)
