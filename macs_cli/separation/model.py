"""The MACS stage-1 separator: a mask-predicting U-Net on the power spectrogram.

Architecture (see docs/method.md of the project's specification):

* ``in_conv``: Conv(1->M) -> channel position embedding -> BN -> GELU -> Conv(M->NC) -> BN -> GELU
* five nested blocks (NC->NC, NC->2NC, 2NC->4NC, 4NC->8NC, 8NC->8NC innermost), each
  down-conv (4x4, stride 2) -> BN -> GELU -> residual block -> Dropout2d -> inner block ->
  residual block -> transposed conv -> BN -> GELU -> resize -> concat with the skip input
  (bilinear; ``align_corners`` from the config: True in the official network)
* ``out_conv``: Conv(2NC->NC) -> BN -> GELU -> Conv(NC->NC) -> BN -> GELU -> Conv1x1(NC->M)

Module names follow the official checkpoint's keys so that an official state dict loads into
:class:`MaskUNet` after stripping its ``model.unet.`` prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SeparatorConfig


class SqueezeExcite(nn.Module):
    """Channel gate: global max-pool -> Linear(C, C/r) -> GELU -> Linear -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc(torch.amax(x, dim=(2, 3))))
        return x * gate[:, :, None, None]


class ResidualBlock(nn.Module):
    """x + (Conv3x3 -> BN -> GELU -> Conv3x3 -> BN), squeeze-excited, then GELU."""

    def __init__(self, channels: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )
        self.senet = SqueezeExcite(channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.senet(x + self.layers(x)))


class UNetBlock(nn.Module):
    """One level of the nested U-Net. Returns ``cat(x, up(inner(down(x))))``."""

    def __init__(self, outer: int, inner: int, submodule: nn.Module | None, dropout: float,
                 align_corners: bool = True):
        super().__init__()
        innermost = submodule is None
        self.align_corners = bool(align_corners)
        self.downconv = nn.Conv2d(outer, inner, 4, stride=2, padding=1)
        self.downnorm = nn.BatchNorm2d(inner)
        self.downresblock = ResidualBlock(inner)
        self.drop = nn.Identity() if innermost or dropout <= 0 else nn.Dropout2d(dropout)
        self.submodule = SqueezeExcite(inner) if innermost else submodule
        up_in = inner if innermost else 2 * inner
        self.upresblock = ResidualBlock(up_in)
        self.upconv = nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1)
        self.upnorm = nn.BatchNorm2d(outer)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.downnorm(self.downconv(x)))
        y = self.drop(self.downresblock(y))
        y = self.upresblock(self.submodule(y))
        y = self.act(self.upnorm(self.upconv(y)))
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        return torch.cat([x, y], dim=1)


class PositionEmbedding(nn.Module):
    """Learned per-channel position embedding: a row vector over H plus a column vector over W."""

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        self.row_embed = nn.Parameter(torch.randn(channels, height) * 0.05)
        self.col_embed = nn.Parameter(torch.randn(channels, width) * 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.row_embed[None, :, :, None] + self.col_embed[None, :, None, :]


class MaskUNet(nn.Module):
    """Predicts ``num_sources`` mask logits of shape (B, M, F, T) from a (B, 1, F, T) input."""

    def __init__(self, num_sources: int, channels: int, freq_bins: int, frames: int,
                 depth: int = 5, dropout: float = 0.1, align_corners: bool = True):
        super().__init__()
        m, nc = num_sources, channels
        self.in_conv = nn.Sequential(
            nn.Conv2d(1, m, 3, padding=1),
            PositionEmbedding(m, freq_bins, frames),
            nn.BatchNorm2d(m),
            nn.GELU(),
            nn.Conv2d(m, nc, 3, padding=1),
            nn.BatchNorm2d(nc),
            nn.GELU(),
        )
        # channel pairs from outer to inner: NC->NC, NC->2NC, 2NC->4NC, 4NC->8NC, 8NC->8NC
        widths = [nc] + [nc * min(2 ** i, 8) for i in range(depth)]
        block: nn.Module | None = None
        for level in reversed(range(depth)):
            block = UNetBlock(widths[level], widths[level + 1], block, dropout, align_corners)
        self.unet = block
        self.out_conv = nn.Sequential(
            nn.Conv2d(2 * nc, nc, 3, padding=1),
            nn.BatchNorm2d(nc),
            nn.GELU(),
            nn.Conv2d(nc, nc, 3, padding=1),
            nn.BatchNorm2d(nc),
            nn.GELU(),
            nn.Conv2d(nc, m, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_conv(self.unet(self.in_conv(x)))


class Separator(nn.Module):
    """Waveform in, ``num_sources`` waveforms out (one fixed-length window at a time).

    ``forward(mix)`` takes (B, L) mono audio at ``config.sample_rate`` with L = window samples and
    returns (B, M, L) stems that sum to the input (mixture consistency).
    """

    def __init__(self, config: SeparatorConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.unet = MaskUNet(config.num_sources, config.channels, config.freq_bins,
                             config.frames, depth=config.depth, dropout=config.dropout,
                             align_corners=config.align_corners)
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)

    def set_align_corners(self, flag: bool) -> None:
        """Switch the U-Net's resize (no weights change): for a run resumed from a checkpoint that
        was trained with the other value."""
        self.config = self.config.replace(align_corners=bool(flag))
        for module in self.unet.modules():
            if isinstance(module, UNetBlock):
                module.align_corners = bool(flag)

    # -- spectral helpers -------------------------------------------------------------------
    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        c = self.config
        return torch.stft(wav.float(), n_fft=c.n_fft, hop_length=c.hop_length,
                          win_length=c.win_length, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        c = self.config
        return torch.istft(spec, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
                           window=self.window, center=True, length=length)

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        """Network input from the complex STFT: the power spectrogram, optionally normalised."""
        power = spec.real.square() + spec.imag.square()
        if self.config.input_transform == "log_power":
            # level-independent: divide by the window's mean power, then log-compress
            power = power / (power.mean(dim=(-2, -1), keepdim=True) + 1e-10)
            power = torch.log(power + 1e-4)
        return power.unsqueeze(1)

    def masks(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.features(spec)
        if getattr(self, "channels_last", False):
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.sigmoid(self.unet(x).float())

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        length = mix.shape[-1]
        spec = self.stft(mix)                                   # (B, F, T) complex
        masks = self.masks(spec)                                # (B, M, F, T)
        stems_spec = masks * spec.unsqueeze(1)
        b, m, f, t = stems_spec.shape
        stems = self.istft(stems_spec.reshape(b * m, f, t), length).reshape(b, m, length)
        return mixture_consistency(stems, mix)


def fold_batchnorm(net: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a convolution into that convolution (eval-mode
    statistics), in place: the same function up to float rounding, one pass less per layer.
    Returns how many were folded. Only for inference (the folded network has no BN to train)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for module in net.modules():
        if isinstance(module, nn.Sequential):
            items = list(module)
            for i in range(len(items) - 1):
                conv, bn = items[i], items[i + 1]
                if type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                    module[i] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                    module[i + 1] = nn.Identity()
                    folded += 1
        if isinstance(module, UNetBlock):
            for conv_name, bn_name, transpose in (("downconv", "downnorm", False), ("upconv", "upnorm", True)):
                conv, bn = getattr(module, conv_name), getattr(module, bn_name)
                if isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                    setattr(module, conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval(), transpose=transpose))
                    setattr(module, bn_name, nn.Identity())
                    folded += 1
    return folded


def cpu_inference_copy(model: Separator) -> Separator:
    """A copy of ``model`` prepared for CPU inference: eval mode, BatchNorm folded into the
    convolutions, the U-Net's weights and activations in channels_last (NHWC) layout, which
    oneDNN's CPU convolutions take without reordering. Stems differ from ``model``'s by float
    rounding only (about 1e-6 relative, tests/test_fidelity.py); costs one copy of the weights."""
    import copy

    fast = copy.deepcopy(model).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    fold_batchnorm(fast.unet)
    fast.unet.to(memory_format=torch.channels_last)
    fast.channels_last = True
    fast.source = getattr(model, "source", "in-memory")
    return fast


def mixture_consistency(stems: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Project stems so that they sum to the mixture: s_i += (m - sum_j s_j) / M."""
    residual = mix.to(stems.dtype) - stems.sum(dim=1)
    return stems + residual.unsqueeze(1) / stems.shape[1]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_flops(model: nn.Module, example: torch.Tensor) -> float:
    """Multiply-accumulates x 2 of all convolutions for one forward pass (a rough FLOP count)."""
    total = 0.0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += 2.0 * k * out.numel()
        elif isinstance(mod, nn.ConvTranspose2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.out_channels
            total += 2.0 * k * inp[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return total


__all__ = ["Separator", "MaskUNet", "mixture_consistency", "fold_batchnorm", "cpu_inference_copy", "count_parameters", "conv_flops"]
