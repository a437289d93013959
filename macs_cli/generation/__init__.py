"""MACS stage 2: images from ranked stem embeddings with Stable Diffusion v1.x and decoupled
cross-attention.

    from macs_cli.generation import MacsGenerator, GenerationSettings

    gen = MacsGenerator.load(adapter="runs/landscape", device="cuda")      # backbone from the adapter
    out = gen.generate(np.load("ranked.npy"), GenerationSettings(seed=3, num_images=4))

Modules: :mod:`.adapter` (the MLP, positional encoding and attention processor),
:mod:`.checkpoints` (our safetensors format, the official pair, ``--adapter`` resolution),
:mod:`.backbone` (loading SD v1.x offline-first), :mod:`.pipeline` (generation, interpolation,
attention maps), :mod:`.audio` (mixture -> ranked stem embeddings), :mod:`.visual` (sheets, grids).
Importing this package is cheap: diffusers is imported when a model is loaded.
"""

from .adapter import (AdapterConfig, AttentionRecorder, AudioAttnProcessor, AudioProjection, MacsAdapter,
                      install_adapter, remove_adapter)
from .backbone import DEFAULT_SD_MODEL, OFFICIAL_SD_MODEL, SD_V14, SD_V15, load_backbone
from .checkpoints import AdapterSource, load_official, read_adapter_file, resolve_adapter, save_adapter
from .pipeline import GeneratedImage, GenerationSettings, MacsGenerator

__all__ = [
    "AdapterConfig", "AdapterSource", "AttentionRecorder", "AudioAttnProcessor", "AudioProjection",
    "DEFAULT_SD_MODEL", "GeneratedImage", "GenerationSettings", "MacsAdapter", "MacsGenerator",
    "OFFICIAL_SD_MODEL", "SD_V14", "SD_V15", "install_adapter", "load_backbone", "load_official",
    "read_adapter_file", "remove_adapter", "resolve_adapter", "save_adapter",
]
