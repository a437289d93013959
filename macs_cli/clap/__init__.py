"""CLAP for MACS: preprocessing, audio/text encoders and their loading.

MACS embeds separated stems and text labels with laion-clap's HTSAT-tiny CLAP (non-fusion,
512-d, 48 kHz, clips repeat-padded to 10 s). Typical use::

    from macs_cli.clap import load_clap, to_clap_input, normalize

    clap = load_clap()                                  # 630k-audioset-best from the HF cache
    a = normalize(clap.embed_audio(to_clap_input(stems, 16_000)))   # differentiable
    t = normalize(clap.embed_text(["The sound of dog", "Noise"]))
    e = clap.embed_waveforms(clips, 44_100)             # any length, no gradients, (N, 512)

Importing this package is cheap: transformers and laion-clap are imported when a model is loaded.
"""

from .encoders import ClapEncoder, HFClapEncoder, LaionClapEncoder, normalize
from .loading import DEFAULT_FILE, DEFAULT_HF_MODEL, DEFAULT_REPO, load_clap
from .melspec import ClapLogMel
from .preprocess import CLAP_SAMPLE_RATE, CLIP_SAMPLES, chunk_10s, repeat_pad, resample_to_48k, to_clap_input

__all__ = [
    "CLAP_SAMPLE_RATE", "CLIP_SAMPLES", "ClapEncoder", "ClapLogMel", "DEFAULT_FILE", "DEFAULT_HF_MODEL",
    "DEFAULT_REPO", "HFClapEncoder", "LaionClapEncoder", "chunk_10s", "load_clap", "normalize",
    "repeat_pad", "resample_to_48k", "to_clap_input",
]
