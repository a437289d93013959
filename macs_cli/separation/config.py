"""Separator configuration: every architecture and STFT size in one validated dataclass."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

INPUT_TRANSFORMS = ("power", "log_power")
LEGACY_ALIGN_CORNERS = False   # the resize of every config saved before the field existed


@dataclass
class SeparatorConfig:
    num_sources: int = 6            # M, the number of output stems
    channels: int = 64              # NC, the U-Net's base width
    depth: int = 5                  # nested U-Net levels
    dropout: float = 0.1            # Dropout2d rate in the non-innermost levels
    sample_rate: int = 16000        # the model's rate
    window_seconds: float = 8.0     # L, the fixed window length (the position embedding fixes it)
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 200
    input_transform: str = "power"  # "power" (official) or "log_power" (level-normalised log)
    # how each U-Net level resizes its up-sampled output onto its skip input (bilinear): the official
    # MACS network uses align_corners=True; configs saved before this field existed mean False
    # (the built-in macs-default-v1 was trained with False), see from_dict
    align_corners: bool = True
    name: str = "custom"
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (training data...)

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def freq_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def frames(self) -> int:
        return self.window_samples // self.hop_length + 1

    def validate(self) -> "SeparatorConfig":
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"invalid separator config: {msg}")

        for key in ("num_sources", "channels", "depth", "sample_rate", "n_fft", "win_length",
                    "hop_length"):
            v = getattr(self, key)
            need(isinstance(v, int) and not isinstance(v, bool) and v > 0,
                 f"{key} must be a positive integer (got {v!r})")
        need(2 <= self.num_sources <= 16, f"num_sources must be in 2..16 (got {self.num_sources})")
        need(1 <= self.depth <= 8, f"depth must be in 1..8 (got {self.depth})")
        # generous bounds (the paper's model: NC = 64, n_fft = 400 at 16 kHz): a file's metadata can
        # never ask for a network or a spectrogram larger than any real one
        need(self.channels <= 512, f"channels must be in 1..512 (got {self.channels})")
        need(self.channels * 2 ** (self.depth - 1) <= 8192,
             f"channels x 2^(depth - 1) (the innermost width) must be at most 8192 (got "
             f"{self.channels * 2 ** (self.depth - 1)})")
        need(8000 <= self.sample_rate <= 192000, f"sample_rate must be in 8000..192000 (got {self.sample_rate})")
        need(self.n_fft <= 8192, f"n_fft must be at most 8192 (got {self.n_fft})")
        need(isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
             f"dropout must be in [0, 1) (got {self.dropout!r})")
        need(isinstance(self.window_seconds, (int, float)) and 0.1 <= self.window_seconds <= 60,
             f"window_seconds must be in [0.1, 60] (got {self.window_seconds!r})")
        need(self.win_length <= self.n_fft, "win_length must not exceed n_fft")
        need(self.hop_length <= self.win_length, "hop_length must not exceed win_length")
        need(self.input_transform in INPUT_TRANSFORMS,
             f"input_transform must be one of {', '.join(INPUT_TRANSFORMS)} "
             f"(got {self.input_transform!r})")
        need(isinstance(self.align_corners, bool),
             f"align_corners must be true or false (got {self.align_corners!r})")
        need(self.freq_bins >= 2 ** self.depth and self.frames >= 2 ** self.depth,
             "the spectrogram is too small for this depth")
        return self

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SeparatorConfig":
        """A saved config. One without ``align_corners`` predates the field: every such model
        (ours, the built-in one included) was built and trained with ``align_corners=False``."""
        if not isinstance(data, dict):
            raise ConfigError("invalid separator config: expected a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"invalid separator config: unknown key(s) {', '.join(unknown)}")
        data = {"align_corners": LEGACY_ALIGN_CORNERS, **data}
        return cls(**data).validate()

    def replace(self, **changes: Any) -> "SeparatorConfig":
        return dataclasses.replace(self, **changes).validate()

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "SeparatorConfig":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read separator config {path}: {exc}") from None
        return cls.from_dict(data)


def official_config() -> SeparatorConfig:
    """The configuration of the official MACS checkpoint (separator_FSD50K_full.pt)."""
    return SeparatorConfig(num_sources=6, channels=64, input_transform="power", align_corners=True,
                           name="macs-official").validate()


NAMED_CONFIGS = {
    "official": official_config,
}
