"""Reading our safetensors weight files and comparing a checkpoint's state dict with a model's,
for one-line loading errors."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from ..errors import ModelError


def read_safetensors(path: Path, what: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of a safetensors file; an unreadable file is one ModelError
    line ("<path>: not a readable safetensors <what> (...)")."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except Exception as exc:  # safetensors raises several types for corrupt files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path}: not a readable safetensors {what} ({first})") from None


def describe_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str | None:
    """None if ``state`` has exactly ``own``'s keys and shapes; otherwise a short description
    ("2 shape mismatch(es), e.g. ...; 1 missing key(s), e.g. ...")."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or bad):
        return None
    parts = []
    if bad:
        k = bad[0]
        parts.append(f"{len(bad)} shape mismatch(es), e.g. {k} {tuple(state[k].shape)} vs "
                     f"{tuple(own[k].shape)} expected")
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
    return "; ".join(parts)
