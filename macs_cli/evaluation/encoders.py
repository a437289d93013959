"""Feature extractors of the evaluation, their weights files, and how they are found offline.

Three networks are used, each loaded from a local file only (nothing is ever downloaded):

======================  ==========================  ==========================================
encoder                 file                        used for
======================  ==========================  ==========================================
Inception-v3 (clean-fid) ``inception-2015-12-05.pt`` FID, KID
CLIP ViT-B/32           ``ViT-B-32.pt``             CLIP-FID, AIS (generated image), IIS
Wav2CLIP                ``Wav2CLIP.pt``             AIS (audio)
======================  ==========================  ==========================================

Each file is looked for in ``weights_dir`` (``--weights-dir``) first, then where its library would
have cached it: clean-fid's ``/tmp/inception-2015-12-05.pt``, CLIP's ``~/.cache/clip/ViT-B-32.pt``,
``torch.hub`` checkpoints (``~/.cache/torch/hub/checkpoints/Wav2CLIP.pt``) for Wav2CLIP. A missing
file is a one-line :class:`MissingWeightsError` naming it, where to put it and where to get it.

Image encoders go through clean-fid's own preprocessing (:class:`cleanfid.utils.ResizeDataset`:
``mode='clean'`` PIL-bicubic resize to 299 for Inception; ``img_preprocess_clip`` for CLIP) and its
own networks (:class:`cleanfid.inception_torchscript.InceptionV3W`, ``cleanfid.clip_features.CLIP_fx``),
so the features are the ones ``cleanfid.fid.compute_fid`` / ``compute_kid`` compute. The CLIP features
also serve AIS/IIS: clean-fid's CLIP preprocessing (resize 224 bicubic, centre crop, CLIP
normalisation) is the CLIP model's own ``preprocess``, so every image is embedded by CLIP once.

Encoders are plain objects with a small interface, so tests (and other models) can inject their own:

* :class:`ImageEncoder` -- ``cache_key``, ``load(path) -> (C, H, W) tensor`` (CPU, per file) and
  ``forward(batch on device) -> (B, D)``;
* :class:`AudioEncoder` -- ``cache_key``, ``sample_rate`` and ``forward((1, T) on device) -> (1, D)``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..errors import MacsError, ModelError

INCEPTION_FILE = "inception-2015-12-05.pt"
CLIP_FILE = "ViT-B-32.pt"
WAV2CLIP_FILE = "Wav2CLIP.pt"

INCEPTION_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                 "inception-2015-12-05.pt")
CLIP_URL = ("https://openaipublic.azureedge.net/clip/models/"
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt")
WAV2CLIP_URL = ("https://github.com/descriptinc/lyrebird-wav2clip/releases/download/v0.1.0-alpha/"
                "Wav2CLIP.pt")

WAV2CLIP_RATE = 16000


class MissingWeightsError(ModelError):
    """A weights file of an evaluation network is not on this machine."""


class ImageError(MacsError):
    """An input image is missing or cannot be decoded."""


# -- where the weights are ------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightsSpec:
    key: str            # inception | clip | wav2clip
    filename: str
    purpose: str
    url: str
    default_dirs: Callable[[], list[Path]]


def _cleanfid_dirs() -> list[Path]:
    # cleanfid.features.feature_extractor: "./" on Windows, "/tmp" elsewhere
    return [Path("./" if platform.system() == "Windows" else "/tmp")]


def _clip_dirs() -> list[Path]:
    return [Path(os.path.expanduser("~/.cache/clip"))]


def _torch_hub_dirs() -> list[Path]:
    return [Path(torch.hub.get_dir()) / "checkpoints"]


WEIGHTS: dict[str, WeightsSpec] = {
    "inception": WeightsSpec("inception", INCEPTION_FILE, "Inception-v3 for FID/KID", INCEPTION_URL,
                             _cleanfid_dirs),
    "clip": WeightsSpec("clip", CLIP_FILE, "CLIP ViT-B/32 for CLIP-FID/AIS/IIS", CLIP_URL, _clip_dirs),
    "wav2clip": WeightsSpec("wav2clip", WAV2CLIP_FILE, "Wav2CLIP for AIS", WAV2CLIP_URL,
                            _torch_hub_dirs),
}


def candidate_paths(key: str, weights_dir: Path | None, use_defaults: bool = True) -> list[Path]:
    spec = WEIGHTS[key]
    dirs = [Path(weights_dir)] if weights_dir is not None else []
    if use_defaults:
        dirs += spec.default_dirs()
    return [d / spec.filename for d in dirs]


def find_weights(keys: Iterable[str], weights_dir: Path | None = None,
                 use_defaults: bool = True) -> dict[str, Path]:
    """Path of each needed weights file; one MissingWeightsError (one line) naming all missing ones."""
    if weights_dir is not None and not Path(weights_dir).is_dir():
        raise MissingWeightsError(f"--weights-dir {weights_dir}: no such folder")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key in keys:
        paths = candidate_paths(key, weights_dir, use_defaults)
        hit = next((p for p in paths if p.is_file()), None)
        if hit is None:
            spec = WEIGHTS[key]
            where = " or ".join(str(p) for p in paths) if paths else "--weights-dir"
            missing.append(f"{spec.filename} ({spec.purpose}): put it at {where} (from {spec.url})")
        else:
            found[key] = hit
    if missing:
        many = len(missing) > 1
        hint = "" if weights_dir is not None else \
            f"; or pass --weights-dir DIR holding {'them' if many else 'it'}"
        raise MissingWeightsError(f"missing weights file{'s' if many else ''} " + "; ".join(missing)
                                  + hint)
    return found


# -- encoder interfaces ---------------------------------------------------------------------------
class ImageEncoder:
    """An image feature extractor: per-file CPU loading, batched forward on the device.

    ``cache_key`` names the features in the embedding cache: change it whenever the features would
    change (another network, weights or preprocessing).
    """

    cache_key: str = "image"

    def load(self, path: Path) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, batch: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def to(self, device: str) -> "ImageEncoder":
        return self


class AudioEncoder:
    """An audio feature extractor: ``forward`` takes one mono clip (1, T) at ``sample_rate``."""

    cache_key: str = "audio"
    sample_rate: int = WAV2CLIP_RATE

    def forward(self, wave: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def to(self, device: str) -> "AudioEncoder":
        return self


class CleanFidImageEncoder(ImageEncoder):
    """clean-fid's preprocessing (``ResizeDataset``, ``mode``, optional ``fn_resize``) + a network.

    ``model_fn`` is what clean-fid calls a feature model: images in [0, 255], (B, 3, H, W) on the
    device -> (B, D). With clean-fid's Inception or CLIP_fx it yields exactly the features of
    ``cleanfid.fid.get_files_features``.
    """

    def __init__(self, cache_key: str, model_fn: Callable[[torch.Tensor], torch.Tensor],
                 mode: str = "clean", fn_resize: Callable | None = None):
        from cleanfid.utils import ResizeDataset

        self.cache_key = cache_key
        self.model_fn = model_fn
        self.mode = mode
        self._dataset = ResizeDataset([], mode=mode)
        if fn_resize is not None:
            self._dataset.fn_resize = fn_resize

    def load(self, path: Path) -> torch.Tensor:
        self._dataset.files = [str(path)]
        return self._dataset[0]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        from cleanfid.fid import get_batch_features

        return torch.from_numpy(get_batch_features(batch, self.model_fn, batch.device))


class ModuleAudioEncoder(AudioEncoder):
    """A torch module mapping a (1, T) waveform at ``sample_rate`` to (1, D)."""

    def __init__(self, cache_key: str, module: torch.nn.Module, sample_rate: int = WAV2CLIP_RATE):
        self.cache_key = cache_key
        self.module = module.eval()
        self.sample_rate = sample_rate

    def to(self, device: str) -> "ModuleAudioEncoder":
        self.module.to(device)
        return self

    @torch.no_grad()
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.module(wave)


# -- the real networks, from files ------------------------------------------------------------------
def _file_tag(path: Path) -> str:
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}"


def load_inception(path: Path, device: str) -> CleanFidImageEncoder:
    """clean-fid's Inception (``mode='clean'``) from ``path`` (never downloads)."""
    from cleanfid.inception_torchscript import InceptionV3W

    path = Path(path)
    try:
        if path.name == INCEPTION_FILE:
            net = InceptionV3W(str(path.parent), download=False, resize_inside=False)
        else:  # InceptionV3W insists on the file name: load the torchscript ourselves
            net = InceptionV3W.__new__(InceptionV3W)
            torch.nn.Module.__init__(net)
            net.base = torch.jit.load(str(path)).eval()
            net.layers = net.base.layers
            net.resize_inside = False
        net = net.to(device).eval()
    except Exception as exc:  # noqa: BLE001 - any loading failure is one line
        raise ModelError(f"{path}: cannot load the Inception weights ({_first_line(exc)})") from None
    return CleanFidImageEncoder(f"inception-clean-{_file_tag(path)}", net, mode="clean")


def load_clip(path: Path, device: str) -> CleanFidImageEncoder:
    """CLIP ViT-B/32 through clean-fid's ``CLIP_fx`` (its normalisation) and ``img_preprocess_clip``.

    Built as ``clip.load(name, jit=False)`` builds it (``clip.model.build_model`` of the archive's
    state dict; fp16 on CUDA, fp32 on CPU) but from the file itself: no checksum-and-redownload
    step, and plain state-dict files work too (``clip.load`` re-reads a consumed file handle there).
    """
    from clip.model import build_model
    from cleanfid.clip_features import CLIP_fx, img_preprocess_clip

    path = Path(path)
    try:
        try:  # the released file is a TorchScript archive
            state = torch.jit.load(str(path), map_location="cpu").eval().state_dict()
        except RuntimeError:
            from ..weights.safeload import torch_load_safely

            state = torch_load_safely(path, mmap=False)
        model = build_model(dict(state)).to(device)
        if str(device) == "cpu":
            model.float()
        fx = CLIP_fx.__new__(CLIP_fx)
        fx.model = model.eval()
        fx.name = "clip_vit_b_32"
    except Exception as exc:  # noqa: BLE001
        reason = getattr(exc, "reason", None) or _first_line(exc)
        raise ModelError(f"{path}: cannot load the CLIP weights ({reason})") from None
    dtype = next(fx.model.parameters()).dtype
    key = f"clip-cleanfid-{_file_tag(path)}-{str(dtype).replace('torch.', '')}"
    return CleanFidImageEncoder(key, fx, mode="clean", fn_resize=img_preprocess_clip)


def load_wav2clip(path: Path, device: str) -> ModuleAudioEncoder:
    """Wav2CLIP as ``wav2clip.get_model()`` builds it, from a local checkpoint file."""
    from wav2clip.model.encoder import ResNetExtractor

    path = Path(path)
    try:
        # never unpickle arbitrary objects: a checkpoint that needs more than tensors is refused
        from ..weights.safeload import torch_load_safely

        checkpoint = torch_load_safely(path, mmap=False)
        model = ResNetExtractor(checkpoint=checkpoint, scenario="frozen", transform=True)
    except Exception as exc:  # noqa: BLE001
        reason = getattr(exc, "reason", None) or _first_line(exc)
        raise ModelError(f"{path}: cannot load the Wav2CLIP weights ({reason})") from None
    return ModuleAudioEncoder(f"wav2clip-{_file_tag(path)}", model, WAV2CLIP_RATE).to(device)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass
class Encoders:
    """The networks one evaluation needs (``None`` where no requested metric uses it)."""

    inception: ImageEncoder | None = None
    clip: ImageEncoder | None = None
    wav2clip: AudioEncoder | None = None
    weights: dict[str, str] = field(default_factory=dict)


def needed_networks(metrics: Iterable[str]) -> list[str]:
    """Which networks the metric names need (fid, kid, clip-fid, ais, iis)."""
    m = set(metrics)
    keys = []
    if m & {"fid", "kid"}:
        keys.append("inception")
    if m & {"clip-fid", "ais", "iis"}:
        keys.append("clip")
    if "ais" in m:
        keys.append("wav2clip")
    return keys


def build_encoders(metrics: Iterable[str], device: str, weights_dir: Path | None = None,
                   use_defaults: bool = True) -> Encoders:
    """Find every needed weights file first (one error for all missing), then load the networks."""
    keys = needed_networks(metrics)
    paths = find_weights(keys, weights_dir, use_defaults)
    enc = Encoders(weights={k: str(p) for k, p in paths.items()})
    if "inception" in paths:
        enc.inception = load_inception(paths["inception"], device)
    if "clip" in paths:
        enc.clip = load_clip(paths["clip"], device)
    if "wav2clip" in paths:
        enc.wav2clip = load_wav2clip(paths["wav2clip"], device)
    return enc


def as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
