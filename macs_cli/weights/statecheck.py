"""Comparing a checkpoint's state dict with a model's, for one-line loading errors."""

from __future__ import annotations

from typing import Mapping

import torch


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
