"""Shared fixtures: a tiny separator saved locally, tiny audio files, a tiny clip corpus.

Nothing here touches the network; every model is built and randomly initialised locally.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from macs_cli.separation.config import SeparatorConfig  # noqa: E402
from macs_cli.separation.model import Separator  # noqa: E402
from macs_cli.weights.separator import save_separator  # noqa: E402

TINY = dict(num_sources=4, channels=4, depth=3, window_seconds=1.0, input_transform="log_power",
            dropout=0.0)


def tiny_config(**changes) -> SeparatorConfig:
    return SeparatorConfig(**{**TINY, **changes}).validate()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = Separator(tiny_config()).eval()
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_separator(model, path)
    return path


def tone_mix(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    a = 0.3 * np.sin(2 * np.pi * 440 * t)
    b = 0.1 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 0.5 * t) > 0)
    x = (a + b).astype(np.float32)
    if channels > 1:
        x = np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1)
    return x


@pytest.fixture()
def wav(tmp_path) -> Path:
    p = tmp_path / "in" / "mix.wav"
    p.parent.mkdir()
    sf.write(p, tone_mix(2.5, 22050, channels=2), 22050)
    return p


def make_clip_folder(root: Path, n_labels: int = 4, per_label: int = 3, rate: int = 16000) -> Path:
    """Labelled clips in <root>/<label>/<i>.wav, plus a heldout/<label>/ sub-tree."""
    rng = np.random.default_rng(1)
    for split in ("", "heldout"):
        for li in range(n_labels):
            d = root / split / f"label_{li}" if split else root / f"label_{li}"
            d.mkdir(parents=True, exist_ok=True)
            for k in range(per_label):
                n = int(rate * rng.uniform(0.3, 1.2))
                t = np.arange(n) / rate
                x = 0.3 * np.sin(2 * np.pi * (200 + 150 * li) * t) * np.exp(-3 * t)
                x += 0.01 * rng.standard_normal(n)
                sf.write(d / f"{k}.wav", x.astype(np.float32), rate)
    return root


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory) -> Path:
    return make_clip_folder(tmp_path_factory.mktemp("clips"))
