"""MACS's decoupled cross-attention adapter for a Stable Diffusion v1.x UNet (stage 2).

Three trainable parts, everything else frozen:

- :class:`AudioProjection`: M ranked CLAP stem embeddings (M x 512) plus a learned positional
  encoding ``pe`` (M x 512, N(0, 0.05)) through LayerNorm(512) -> Linear(512, 2048) -> GELU ->
  Dropout(0.5) -> Linear(2048, 768) -> LayerNorm(768): M audio tokens as wide as the UNet's
  cross-attention. Parameter names are the official ``<Dataset>_mlp.pt`` keys (``pe``,
  ``adapter.0/1/4/5.*``).
- :class:`AudioAttnProcessor` on every cross-attention layer (``attn2``): new key/value
  projections ``to_k_ip``/``to_v_ip`` (cross dim -> layer width, no bias, initialised from that
  layer's text ``to_k``/``to_v``) and the shared query::

      H' = Attn(Q, K_text, V_text) + scale * Attn(Q, K_audio, V_audio)

  The processor is a ``torch.nn.Module`` set with diffusers' public ``set_attn_processor``, so
  its weights appear in the UNet's state dict as ``<layer>.attn2.processor.to_k_ip.weight``,
  the official ``<Dataset>_unet.pt`` key names.

The audio tokens travel to the processors the way IP-Adapter's do: appended to the text tokens in
``encoder_hidden_states`` (``[text (77) | audio (K)]``); the processor splits at the text length.
A stock ``StableDiffusionPipeline`` therefore runs the adapter unchanged when given
``prompt_embeds = cat(text, audio)``. With ``scale == 0`` or without audio tokens, the text branch
is exactly diffusers' ``AttnProcessor2_0`` (same operations, same order).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError
from ..weights.statecheck import describe_mismatch

CLAP_DIM = 512
PROCESSOR_SUFFIX = "attn2.processor"


@dataclass
class AdapterConfig:
    """Sizes of the adapter; defaults are the paper's (M = 6, SD v1.x's 768-wide cross-attention)."""

    num_tokens: int = 6              # M: rows of the positional encoding (stems the adapter takes)
    clap_dim: int = CLAP_DIM         # width of a stem embedding
    hidden_dim: int = 2048           # the MLP's hidden width
    cross_attention_dim: int = 768   # the UNet's cross-attention width (= text encoder width)
    dropout: float = 0.5
    pe_std: float = 0.05             # std of the positional encoding's initialisation

    def validate(self) -> "AdapterConfig":
        for key in ("num_tokens", "clap_dim", "hidden_dim", "cross_attention_dim"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"adapter {key} must be a positive integer (got {v!r})")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"adapter dropout must be in [0, 1) (got {self.dropout!r})")
        if not float(self.pe_std) >= 0.0:
            raise ConfigError(f"adapter pe_std must be >= 0 (got {self.pe_std!r})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdapterConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known).validate()
        except TypeError as exc:
            raise ConfigError(f"adapter config: {exc}") from None


class AudioProjection(nn.Module):
    """Stem embeddings (B, K, 512), K <= M, -> audio tokens (B, K, cross_attention_dim).

    Row i gets positional encoding ``pe[i]``: the stems must be in rank order (most significant
    first), as ``macs rank`` writes them. Initialisation as the official code: Xavier-normal
    Linear weights with zero bias, ``pe`` ~ N(0, pe_std).
    """

    def __init__(self, config: AdapterConfig):
        super().__init__()
        c = config.validate()
        self.config = c
        self.pe = nn.Parameter(torch.randn(c.num_tokens, c.clap_dim) * c.pe_std)
        self.adapter = nn.Sequential(
            nn.LayerNorm(c.clap_dim),
            nn.Linear(c.clap_dim, c.hidden_dim),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden_dim, c.cross_attention_dim),
            nn.LayerNorm(c.cross_attention_dim),
        )
        for m in self.adapter:
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        k = embeddings.shape[-2]
        if k > self.pe.shape[0]:
            raise ConfigError(f"{k} stem embeddings but the adapter takes at most {self.pe.shape[0]} "
                              f"(use --top-k {self.pe.shape[0]})")
        x = embeddings.to(self.pe.dtype) + self.pe[:k]
        return self.adapter(x)


class AttentionRecorder:
    """Accumulates the audio branch's attention probabilities as per-stem maps.

    Each call adds (B, Nq, K) probabilities (already averaged over heads) from one layer at one
    denoising step; they are reshaped to the layer's spatial grid, resized bilinearly to the
    latent grid and summed. :meth:`result` is the mean over layers and steps, (B, K, h, w).
    """

    def __init__(self, latent_hw: tuple[int, int]):
        self.latent_hw = (int(latent_hw[0]), int(latent_hw[1]))
        self.total: torch.Tensor | None = None
        self.count = 0

    def grid_of(self, tokens: int) -> tuple[int, int] | None:
        h, w = self.latent_hw
        while h * w > tokens:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return (h, w) if h * w == tokens else None

    def add(self, probs: torch.Tensor) -> None:
        grid = self.grid_of(probs.shape[1])
        if grid is None:
            return
        b, _, k = probs.shape
        maps = probs.float().transpose(1, 2).reshape(b, k, *grid)
        if grid != self.latent_hw:
            maps = F.interpolate(maps, size=self.latent_hw, mode="bilinear", align_corners=False)
        self.total = maps if self.total is None else self.total + maps
        self.count += 1

    def result(self) -> torch.Tensor | None:
        if self.total is None:
            return None
        return (self.total / self.count).cpu()


class AudioAttnProcessor(nn.Module):
    """Decoupled cross-attention: diffusers' ``AttnProcessor2_0`` on the text tokens plus an
    audio branch on the tokens after them, sharing the query."""

    def __init__(self, hidden_size: int, cross_attention_dim: int, text_tokens: int = 77,
                 scale: float = 1.0):
        super().__init__()
        self.hidden_size = hidden_size
        self.cross_attention_dim = cross_attention_dim
        self.text_tokens = int(text_tokens)
        self.scale = float(scale)
        self.recorder: AttentionRecorder | None = None
        self.kv_cache: dict | None = None   # None: off (training); see MacsAdapter.caching
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def _audio_key_value(self, audio_states: torch.Tensor, dtype: torch.dtype, batch_size: int, heads: int,
                         head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The audio tokens' keys and values, (B, heads, K, head_dim) each. Inside
        :meth:`MacsAdapter.caching` they are computed once per conditioning tensor: the audio tokens
        do not change between denoising steps."""
        cache_key = None
        if self.kv_cache is not None:
            cache_key = (audio_states.data_ptr(), tuple(audio_states.shape), audio_states.dtype, dtype)
            hit = self.kv_cache.get(cache_key)
            if hit is not None:
                return hit
        weight_dtype = self.to_k_ip.weight.dtype
        a_key = self.to_k_ip(audio_states.to(weight_dtype)).to(dtype)
        a_value = self.to_v_ip(audio_states.to(weight_dtype)).to(dtype)
        a_key = a_key.view(batch_size, -1, heads, head_dim).transpose(1, 2)
        a_value = a_value.view(batch_size, -1, heads, head_dim).transpose(1, 2)
        if cache_key is not None:
            self.kv_cache = {cache_key: (a_key, a_value)}
        return a_key, a_value

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        # -- the text branch: AttnProcessor2_0, operation for operation -------------------------
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        audio_states = None
        if encoder_hidden_states is not None and encoder_hidden_states.shape[1] > self.text_tokens:
            audio_states = encoder_hidden_states[:, self.text_tokens:]
            encoder_hidden_states = encoder_hidden_states[:, : self.text_tokens]

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                       dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        # -- the audio branch --------------------------------------------------------------------
        if audio_states is not None and (self.scale != 0.0 or self.recorder is not None):
            a_key, a_value = self._audio_key_value(audio_states, query.dtype, batch_size, attn.heads, head_dim)
            if self.recorder is not None:
                with torch.no_grad():
                    logits = (query.float() @ a_key.float().transpose(-1, -2)) / math.sqrt(head_dim)
                    self.recorder.add(logits.softmax(-1).mean(1))
            if self.scale != 0.0:
                audio_out = F.scaled_dot_product_attention(query, a_key, a_value, attn_mask=None,
                                                           dropout_p=0.0, is_causal=False)
                audio_out = audio_out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
                hidden_states = hidden_states + (audio_out if self.scale == 1.0 else self.scale * audio_out)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        hidden_states = hidden_states / attn.rescale_output_factor
        return hidden_states


@dataclass
class MacsAdapter:
    """The adapter installed on a UNet: the projection and the per-layer audio processors.

    ``state_dict()`` uses the official key names: ``pe``, ``adapter.*`` and
    ``<layer>.attn2.processor.to_k_ip.weight`` / ``to_v_ip.weight``.
    """

    config: AdapterConfig
    projection: AudioProjection
    processors: dict[str, AudioAttnProcessor] = field(default_factory=dict)

    # -- parameters ----------------------------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every trainable parameter, in a fixed order (projection first, then layers by name)."""
        out = [(k, p) for k, p in self.projection.named_parameters()]
        for name in sorted(self.processors):
            out += [(f"{name}.{k}", p) for k, p in self.processors[name].named_parameters()]
        return out

    def parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_parameters()]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: p.detach() for k, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, torch.Tensor], source: str = "adapter") -> None:
        """Copy ``state`` (official key names) into the adapter; a one-line ModelError on a mismatch."""
        own = dict(self.named_parameters())
        problem = describe_mismatch(own, state)
        if problem:
            raise ModelError(f"{source}: does not fit this backbone's adapter ({problem})")
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(state[k].to(device=p.device, dtype=p.dtype))

    def fingerprint(self) -> str:
        """SHA-256 over the adapter's float32 tensors in key order: the same adapter gives the same
        value whichever file format it came from."""
        h = hashlib.sha256()
        for k, p in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    # -- behaviour -----------------------------------------------------------------------------
    def set_scale(self, scale: float) -> None:
        for p in self.processors.values():
            p.scale = float(scale)

    def set_recorder(self, recorder: AttentionRecorder | None) -> None:
        for p in self.processors.values():
            p.recorder = recorder

    @contextlib.contextmanager
    def caching(self) -> Iterator[None]:
        """Within the block, each layer computes the audio keys/values once per conditioning tensor
        and reuses them at every denoising step (inference only: the cache holds no gradients and
        is dropped on exit, so a tensor freed later cannot be mistaken for a cached one)."""
        for p in self.processors.values():
            p.kv_cache = {}
        try:
            yield
        finally:
            for p in self.processors.values():
                p.kv_cache = None

    def train(self, mode: bool = True) -> "MacsAdapter":
        self.projection.train(mode)
        for p in self.processors.values():
            p.train(mode)
        return self

    def eval(self) -> "MacsAdapter":
        return self.train(False)

    def requires_grad_(self, flag: bool = True) -> "MacsAdapter":
        for p in self.parameters():
            p.requires_grad_(flag)
        return self


def cross_attention_layers(unet) -> dict[str, Any]:
    """Processor name -> the ``Attention`` module, for every cross-attention (``attn2``) layer."""
    layers = {}
    for name in unet.attn_processors:
        if name.endswith(PROCESSOR_SUFFIX):
            layers[name] = unet.get_submodule(name[: -len(".processor")])
    return layers


def install_adapter(unet, config: AdapterConfig | None = None, text_tokens: int = 77,
                    projection: AudioProjection | None = None) -> MacsAdapter:
    """Put an :class:`AudioAttnProcessor` on every ``attn2`` layer of ``unet`` (other layers keep
    their processors) and build the projection; returns the :class:`MacsAdapter`.

    The audio key/value projections start as copies of the layer's text ``to_k``/``to_v``. The
    new modules take the UNet's device; their dtype is float32 unless the UNet's is wider.
    """
    cross = int(unet.config.cross_attention_dim) if unet.config.cross_attention_dim else None
    config = config or AdapterConfig(cross_attention_dim=cross or 768)
    config.validate()
    if cross is not None and config.cross_attention_dim != cross:
        raise ModelError(f"the adapter makes {config.cross_attention_dim}-wide audio tokens but this UNet's "
                         f"cross-attention is {cross} wide (a different backbone?)")
    layers = cross_attention_layers(unet)
    if not layers:
        raise ModelError("this UNet has no cross-attention (attn2) layers: not a Stable Diffusion v1.x UNet")
    procs = dict(unet.attn_processors)
    ours: dict[str, AudioAttnProcessor] = {}
    for name, attn in layers.items():
        w_k, w_v = attn.to_k.weight, attn.to_v.weight
        if w_k.shape[1] != config.cross_attention_dim:
            raise ModelError(f"{name}: expects {w_k.shape[1]}-wide context, the adapter makes "
                             f"{config.cross_attention_dim}")
        proc = AudioAttnProcessor(w_k.shape[0], w_k.shape[1], text_tokens)
        with torch.no_grad():
            proc.to_k_ip.weight.copy_(w_k.float())
            proc.to_v_ip.weight.copy_(w_v.float())
        proc.to(w_k.device)
        ours[name] = proc
        procs[name] = proc
    unet.set_attn_processor(procs)
    if projection is None:
        projection = AudioProjection(config)
    projection.to(next(unet.parameters()).device)
    return MacsAdapter(config, projection, ours)


def remove_adapter(unet) -> None:
    """Give every ``attn2`` layer back diffusers' default processor."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    procs = dict(unet.attn_processors)
    for name, proc in procs.items():
        if isinstance(proc, AudioAttnProcessor):
            procs[name] = AttnProcessor2_0()
    unet.set_attn_processor(procs)


def config_from_state(state: dict[str, torch.Tensor], source: str = "adapter") -> AdapterConfig:
    """Adapter sizes read off an (official or our) state dict."""
    try:
        pe = state["pe"]
        w1 = state["adapter.1.weight"]
        w4 = state["adapter.4.weight"]
    except KeyError as exc:
        raise ModelError(f"{source}: not a MACS adapter (no {exc.args[0]!r} key)") from None
    if pe.ndim != 2 or w1.ndim != 2 or w4.ndim != 2:
        raise ModelError(f"{source}: adapter tensors have unexpected shapes")
    return AdapterConfig(num_tokens=int(pe.shape[0]), clap_dim=int(pe.shape[1]), hidden_dim=int(w1.shape[0]),
                         cross_attention_dim=int(w4.shape[0])).validate()


def trainable_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter's entries of a state dict that may hold more (an official full UNet file)."""
    return {k: v for k, v in state.items()
            if k == "pe" or k.startswith("adapter.") or k.endswith((".to_k_ip.weight", ".to_v_ip.weight"))}
