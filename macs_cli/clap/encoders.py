"""CLAP encoders: one interface, two backends.

:class:`ClapEncoder` is what the rest of the toolkit uses: ``embed_audio`` (differentiable, for
training through CLAP), ``embed_text`` and ``embed_waveforms`` (inference on clips of any length
and sample rate). Embeddings are the raw outputs of the projection heads, *not* L2-normalised:
call :func:`normalize` where cosine geometry is wanted (the official MACS code feeds normalised
laion-clap embeddings to its losses and to the adapter MLP).

- :class:`LaionClapEncoder`: laion-clap's HTSAT + RoBERTa CLAP (the model MACS uses,
  ``630k-audioset-best.pt``), see :mod:`macs_cli.clap.laion_net`. Its log-mel front end is
  inside HTSAT (torchlibrosa), so gradients reach the waveform.
- :class:`HFClapEncoder`: ``transformers.ClapModel`` (e.g. ``laion/clap-htsat-unfused``). Its
  numpy feature extractor is replaced by :class:`~macs_cli.clap.melspec.ClapLogMel`, which
  computes the same features in torch (checked by the tests), for inference and training alike.

Both encoders freeze their weights (``requires_grad=False``) and stay in eval mode: gradients
flow to the input waveform only. Neither is an ``nn.Module``, so a training model holding one does
not put CLAP's weights in its optimiser, state dict or ``train()`` calls.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AudioError, ModelError
from .preprocess import CLAP_SAMPLE_RATE, CLIP_SAMPLES, chunk_10s

TEXT_MAX_LENGTH = 77  # laion-clap's tokenizer call: padding='max_length', truncation, 77 tokens
ROBERTA = "roberta-base"
TOKENIZER_FILES = "--include '*.json' '*.txt'"  # a tokenizer's files, without the model weights


def normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise embeddings along the last dimension."""
    return F.normalize(x, dim=-1, eps=eps)


# -- tokenizers -----------------------------------------------------------------------------------
from ..weights.hub import first_line as _first_line  # noqa: E402
from ..weights.hub import looks_like_path  # noqa: E402
from ..weights.hub import not_cached_message as missing_hub_files_message  # noqa: E402


def check_tokenizer(tok: Any, vocab_rows: int, source: str) -> Any:
    """Reject a tokenizer whose vocabulary cannot be the text model's.

    transformers 5 does not fail when a RoBERTa tokenizer's files are missing offline: it returns
    a placeholder with a 5-token vocabulary, which would turn every text into ``<unk>``. A
    vocabulary smaller than half the text model's embedding table (or larger than it) is refused.
    """
    n = len(tok)
    if n < max(vocab_rows // 2, 6):
        if source == ROBERTA:
            hint = missing_hub_files_message(f"{ROBERTA} (CLAP's tokenizer)", ROBERTA, TOKENIZER_FILES,
                                             "a local tokenizer folder")
        else:
            hint = f"{source} does not hold the tokenizer files (vocab.json + merges.txt or tokenizer.json)"
        raise ModelError(f"tokenizer '{source}' has only {n} tokens but the text model expects "
                         f"{vocab_rows}: {hint}")
    if n > vocab_rows:
        raise ModelError(f"tokenizer '{source}' has {n} tokens, more than the text model's "
                         f"{vocab_rows}: it is not this model's tokenizer")
    return tok


def load_roberta_tokenizer(source: str | os.PathLike, vocab_rows: int, allow_download: bool = False,
                           cache_dir: str | os.PathLike | None = None) -> Any:
    """RoBERTa's tokenizer from a local folder or the Hugging Face cache (hub only if allowed)."""
    from transformers import RobertaTokenizer

    source = str(source)
    local = Path(source).expanduser()
    try:
        if local.is_dir():
            tok = RobertaTokenizer.from_pretrained(str(local))
        else:
            tok = RobertaTokenizer.from_pretrained(source, local_files_only=not allow_download,
                                                   cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as exc:  # OSError, ValueError, hub errors...
        if local.is_dir() or looks_like_path(source):
            raise ModelError(f"{source}: cannot load a RoBERTa tokenizer ({_first_line(exc)})") from None
        hint = missing_hub_files_message(f"tokenizer {source!r}", source, TOKENIZER_FILES,
                                         "a local tokenizer folder")
        raise ModelError(f"{hint} ({type(exc).__name__})") from None
    return check_tokenizer(tok, vocab_rows, source)


# -- the interface --------------------------------------------------------------------------------
class ClapEncoder(abc.ABC):
    """A frozen CLAP model: 48 kHz, 10 s clips, ``dim``-wide (512) audio and text embeddings."""

    dim: int = 512
    sample_rate: int = CLAP_SAMPLE_RATE
    clip_samples: int = CLIP_SAMPLES
    source: str = ""
    model: torch.nn.Module

    # backends implement these two
    @abc.abstractmethod
    def _audio(self, wav48: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def _text(self, texts: list[str]) -> torch.Tensor: ...

    # -- common ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "ClapEncoder":
        self.model.to(device)
        return self

    def eval(self) -> "ClapEncoder":
        self.model.eval()
        return self

    def _freeze(self) -> None:
        self.model.requires_grad_(False)
        self.model.eval()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, source={self.source!r}, device={self.device})"

    def embed_audio(self, wav48: torch.Tensor) -> torch.Tensor:
        """``(B, 480000)`` waveforms at 48 kHz (see ``to_clap_input``) -> ``(B, dim)``.

        Not normalised. Differentiable with respect to ``wav48`` when called with gradients
        enabled (the weights themselves are frozen).
        """
        if wav48.dim() != 2 or wav48.shape[-1] != self.clip_samples:
            raise ValueError(f"embed_audio expects (B, {self.clip_samples}) audio at {self.sample_rate} Hz, "
                             f"got {tuple(wav48.shape)}: use macs_cli.clap.to_clap_input")
        dtype = next(self.model.parameters()).dtype
        return self._audio(wav48.to(device=self.device, dtype=dtype))

    def embed_text(self, texts: Sequence[str] | str) -> torch.Tensor:
        """Texts -> ``(B, dim)`` text embeddings, not normalised."""
        texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        return self._text(texts)

    def embed_waveforms(self, waves: Iterable[np.ndarray | torch.Tensor], sample_rate: int | Sequence[int],
                        batch_size: int = 8, normalize: bool = False) -> torch.Tensor:
        """Clips of any length -> float32 ``(N, dim)`` on the CPU (inference, no gradients).

        ``sample_rate``: the clips' rate, or one rate per clip. Each clip is resampled to 48 kHz
        (``torchaudio.functional.resample`` with its default sinc settings, the official MACS
        resampler, see :mod:`macs_cli.clap.preprocess`) and cut into 10 s chunks by
        :func:`chunk_10s` (one repeat-padded chunk for clips of at most 10 s); chunks of all clips are embedded
        ``batch_size`` at a time and each clip's embedding is the mean of its chunks'. With
        ``normalize=True`` the chunk embeddings are L2-normalised before averaging and the mean
        is normalised again; otherwise the raw embeddings are averaged.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        sums: list[torch.Tensor] = []
        counts: list[int] = []
        pending: list[tuple[int, torch.Tensor]] = []

        def flush() -> None:
            batch = torch.stack([c for _, c in pending]).to(self.device)
            emb = self.embed_audio(batch).float().cpu()
            if normalize:
                emb = F.normalize(emb, dim=-1)
            for (i, _), e in zip(pending, emb):
                sums[i] += e
            pending.clear()

        with torch.inference_mode():
            for i, chunk in self._chunks(waves, sample_rate, sums, counts):
                pending.append((i, chunk))
                if len(pending) == batch_size:
                    flush()
            if pending:
                flush()
        if not sums:
            return torch.zeros(0, self.dim)
        out = torch.stack(sums) / torch.tensor(counts, dtype=torch.float32).unsqueeze(1)
        return F.normalize(out, dim=-1) if normalize else out

    def _chunks(self, waves, sample_rate, sums, counts) -> Iterator[tuple[int, torch.Tensor]]:
        waves = list(waves)
        rates = [sample_rate] * len(waves) if isinstance(sample_rate, (int, np.integer)) else list(sample_rate)
        if len(rates) != len(waves):
            raise ValueError(f"{len(rates)} sample rates for {len(waves)} clips")
        for i, (w, rate) in enumerate(zip(waves, rates)):
            x = w.detach().cpu() if isinstance(w, torch.Tensor) else torch.as_tensor(np.asarray(w))
            x = x.to(torch.float32)
            if x.dim() != 1:
                raise ValueError(f"clip {i}: expected mono audio of shape (T,), got {tuple(x.shape)}")
            if x.numel() == 0:
                raise AudioError(f"clip {i} is empty: there is no audio to embed")
            if not torch.isfinite(x).all():
                raise AudioError(f"clip {i} holds non-finite samples (NaN or inf)")
            chunks, _ = chunk_10s(x, int(rate))
            sums.append(torch.zeros(self.dim))
            counts.append(chunks.shape[1])
            for c in chunks[0]:
                yield i, c


# -- laion-clap -----------------------------------------------------------------------------------
class LaionClapEncoder(ClapEncoder):
    """laion-clap's CLAP (HTSAT audio tower, RoBERTa text tower); see :mod:`.laion_net`.

    ``net``: a loaded :class:`~macs_cli.clap.laion_net.LaionClapNet`. ``tokenizer``: a RoBERTa
    tokenizer object, a local tokenizer folder, or a hub id (``roberta-base``, looked up in the
    Hugging Face cache, downloaded only with ``allow_download``). The tokenizer is loaded on the
    first ``embed_text`` call, so audio-only use does not need it.
    """

    def __init__(self, net, tokenizer: Any = ROBERTA, *, allow_download: bool = False,
                 cache_dir: str | os.PathLike | None = None, source: str = ""):
        self.model = net
        self.dim = int(net.arch.joint_dim)
        self.source = source
        self._tokenizer_spec = tokenizer
        self._tokenizer = None if isinstance(tokenizer, (str, os.PathLike)) else tokenizer
        self._allow_download = allow_download
        self._cache_dir = cache_dir
        self._freeze()
        if self._tokenizer is not None:
            check_tokenizer(self._tokenizer, net.arch.text.vocab_size, type(tokenizer).__name__)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_roberta_tokenizer(self._tokenizer_spec, self.model.arch.text.vocab_size,
                                                     self._allow_download, self._cache_dir)
        return self._tokenizer

    def _audio(self, wav48: torch.Tensor) -> torch.Tensor:
        return self.model.audio_embedding(wav48)

    def _text(self, texts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(texts, padding="max_length", truncation=True, max_length=TEXT_MAX_LENGTH,
                             return_tensors="pt")
        return self.model.text_embedding(tok["input_ids"].to(self.device),
                                         tok["attention_mask"].to(self.device))


# -- transformers' ClapModel ----------------------------------------------------------------------
class HFClapEncoder(ClapEncoder):
    """``transformers.ClapModel`` (unfused) with a torch log-mel front end.

    ``model``: a ``ClapModel``; ``tokenizer``: its tokenizer; ``feature_extractor``: its
    ``ClapFeatureExtractor`` (only its settings are used; ``None``: CLAP's standard 48 kHz,
    1024/480, 64 mels, 50 Hz - 14 kHz).
    """

    def __init__(self, model, tokenizer, feature_extractor=None, *, source: str = ""):
        from .melspec import ClapLogMel

        if getattr(model.config.audio_config, "enable_fusion", False):
            raise ModelError(f"{source or 'ClapModel'}: fusion CLAP models are not supported; MACS uses "
                             "the unfused model (e.g. laion/clap-htsat-unfused)")
        self.model = model
        self.source = source
        self.dim = int(model.config.projection_dim)
        self.tokenizer = check_tokenizer(tokenizer, int(model.config.text_config.vocab_size),
                                         source or type(tokenizer).__name__)
        fe = feature_extractor
        self.frontend = ClapLogMel.from_feature_extractor(fe) if fe is not None else ClapLogMel()
        if self.frontend.sample_rate != CLAP_SAMPLE_RATE:
            raise ModelError(f"{source}: feature extractor expects {self.frontend.sample_rate} Hz audio; "
                             f"only {CLAP_SAMPLE_RATE} Hz CLAP models are supported")
        self._freeze()

    def to(self, device: str | torch.device) -> "HFClapEncoder":
        self.model.to(device)
        self.frontend.to(device)
        return self

    def _audio(self, wav48: torch.Tensor) -> torch.Tensor:
        feats = self.frontend(wav48).to(wav48.dtype)  # (B, 1, frames, mels)
        is_longer = torch.zeros(wav48.shape[0], 1, dtype=torch.bool, device=wav48.device)
        pooled = self.model.audio_model(input_features=feats, is_longer=is_longer).pooler_output
        return self.model.audio_projection(pooled)

    def _text(self, texts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(texts, padding="max_length", truncation=True, max_length=TEXT_MAX_LENGTH,
                             return_tensors="pt")
        pooled = self.model.text_model(input_ids=tok["input_ids"].to(self.device),
                                       attention_mask=tok["attention_mask"].to(self.device)).pooler_output
        return self.model.text_projection(pooled)
