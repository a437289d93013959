"""Tiny stand-ins for the evaluation networks and tiny data sets, all local and random.

* :class:`TinyImageNet` -- average-pools a clean-fid-preprocessed image to 4x4 and projects it
  linearly to ``dim`` features; used through clean-fid's own preprocessing
  (:class:`CleanFidImageEncoder`) in place of Inception (299 px) and CLIP (224 px).
* :class:`TinyAudioNet` -- log-magnitude spectrum averaged over time, projected to ``dim``.
* builders for LLP-multi / Landscape / folder layouts and separation folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from macs_cli.evaluation.encoders import CleanFidImageEncoder, Encoders, ModuleAudioEncoder

IMG_DIM = 12     # inception stand-in features (needs N > dim for a regular covariance)
CLIP_DIM = 10    # CLIP / Wav2CLIP stand-in embedding size (shared space)


class TinyImageNet(torch.nn.Module):
    """(B, 3, H, W) in [0, 255] -> (B, dim): 4x4 average pool, fixed random projection, tanh."""

    def __init__(self, dim: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.nn.Parameter(torch.randn(48, dim, generator=g) / 7.0, requires_grad=False)
        self.calls = 0
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += x.shape[0]
        pooled = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255.0 - 0.5, 4).flatten(1)
        return torch.tanh(pooled @ self.proj * 3.0)


class TinyAudioNet(torch.nn.Module):
    """(1, T) -> (1, dim): mean log-magnitude of a 256-point STFT, fixed random projection."""

    def __init__(self, dim: int = CLIP_DIM, seed: int = 3):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.nn.Parameter(torch.randn(129, dim, generator=g) / 10.0, requires_grad=False)
        self.calls = 0

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        spec = torch.stft(wave.float(), 256, 128, window=torch.hann_window(256), return_complex=True)
        logmag = torch.log(spec.abs() + 1e-4).mean(-1)               # (1, 129)
        return logmag @ self.proj


def tiny_inception() -> CleanFidImageEncoder:
    return CleanFidImageEncoder("tiny-inception", TinyImageNet(IMG_DIM, seed=1), mode="clean")


def tiny_clip() -> CleanFidImageEncoder:
    from cleanfid.clip_features import img_preprocess_clip

    return CleanFidImageEncoder("tiny-clip", TinyImageNet(CLIP_DIM, seed=2), mode="clean",
                                fn_resize=img_preprocess_clip)


def tiny_encoders() -> Encoders:
    return Encoders(inception=tiny_inception(), clip=tiny_clip(),
                    wav2clip=ModuleAudioEncoder("tiny-wav2clip", TinyAudioNet(), 16000),
                    weights={"inception": "tiny", "clip": "tiny", "wav2clip": "tiny"})


# -- data ------------------------------------------------------------------------------------------
def random_image(seed: int, size=(40, 32)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, size=(4, 4, 3))
    img = np.kron(base, np.ones((size[1] // 4 + 1, size[0] // 4 + 1, 1)))[: size[1], : size[0]]
    img = img + rng.normal(0, 20, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def save_image(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def noisy(arr: np.ndarray, seed: int, sigma: float = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(arr.astype(float) + rng.normal(0, sigma, arr.shape), 0, 255).astype(np.uint8)


def tone(seed: int, seconds: float = 0.5, rate: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f = rng.uniform(200, 3000)
    return (0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def save_audio(path: Path, x: np.ndarray, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate)
    return path


def make_llp(root: Path, clips: int = 12, frames: int = 2, ext: str = ".png", audio_rate=16000):
    """root/gt/<id>_frame_<k>.png, root/pred/<id>_frame_<k>.png, root/audio/<id>.wav."""
    for c in range(clips):
        cid = f"vid{c:03d}"
        save_audio(root / "audio" / f"{cid}.wav", tone(c, rate=audio_rate), audio_rate)
        for k in range(frames):
            gt = random_image(100 * c + k)
            save_image(root / "gt" / f"{cid}_frame_{k}{ext}", gt)
            save_image(root / "pred" / f"{cid}_frame_{k}.png", noisy(gt, 7 + 100 * c + k))
    return root / "pred", root / "gt", root / "audio"

