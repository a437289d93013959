"""The laion-clap CLAP network (HTSAT audio tower + RoBERTa text tower), built without network access.

How laion-clap 1.1.7 builds its model, and why we do not call that code path:

- ``import laion_clap`` runs ``laion_clap/__init__.py`` -> ``hook.py`` -> ``training/data.py``,
  which calls ``from_pretrained`` for the ``bert-base-uncased``, ``roberta-base`` and
  ``facebook/bart-base`` tokenizers *at import time* (offline and uncached, the hub client
  retries for minutes) and imports torchvision, webdataset and PIL.
- ``CLAP_Module.__init__`` -> ``factory.create_model('HTSAT-tiny', 'roberta')`` ->
  ``model.CLAP(...)``, whose text tower is ``RobertaModel.from_pretrained('roberta-base')``:
  500 MB of weights downloaded only to be overwritten by the checkpoint.
- ``CLAP_Module.load_ckpt`` downloads into site-packages and unpickles with
  ``weights_only=False``.

We therefore use laion-clap only for its audio tower, the ``HTSAT_Swin_Transformer`` class of
``laion_clap/clap_module/htsat.py``: that module (and the two sibling modules it imports) is
loaded under a private package name, without running ``laion_clap/__init__.py`` or
``clap_module/__init__.py``. Their ``utils`` module imports ``torchvision`` for a class that the
HTSAT path never uses; when torchvision is not installed a stand-in is placed in ``sys.modules``
for the duration of that import only. The text tower is ``transformers.RobertaModel`` built from
a config, and the projection heads are plain ``nn.Sequential``; :class:`LaionClapNet` lays them
out under the names of laion-clap's ``CLAP`` module (``audio_branch.*``, ``text_branch.*``,
``audio_projection.*``, ``text_projection.*``), so laion-clap checkpoints load into it unchanged.

The architecture is read from the checkpoint itself (:func:`arch_from_state_dict`): widths,
depths, heads and window of the Swin stages, number of classes, mel bins and STFT size of the
audio tower; vocabulary, width, depth and feed-forward size of the text tower; the joint
embedding width. So the same code loads HTSAT-tiny (``630k-audioset-best.pt``), HTSAT-base
checkpoints and the tiny random models the tests build. Parts of laion-clap's ``CLAP`` that
embeddings do not use (``audio_transform``, ``text_transform``, ``logit_scale_a/t``) are not
built; their keys are ignored when loading.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import math
import os
import re
import sys
import types
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from ..weights.statecheck import describe_mismatch

_ALIAS = "_macs_laion_clap_module"

# Keys of laion-clap's CLAP module that embeddings never use; dropped when loading a checkpoint.
IGNORED_PREFIXES = ("audio_transform.", "text_transform.", "logit_scale_a", "logit_scale_t")


# -- importing laion-clap's HTSAT -----------------------------------------------------------------
@contextlib.contextmanager
def hub_offline(enabled: bool = True):
    """Set ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` to 1 for the duration (then restore them).

    Used around imports of third-party modules so that nothing they might fetch at import time
    can reach the network unless the caller allowed downloads. The hub libraries are imported
    first, so that their own import-time reading of these variables is not changed for the
    rest of the process.
    """
    if not enabled:
        yield
        return
    import huggingface_hub  # noqa: F401  (fix its import-time constants before changing the env)

    with contextlib.suppress(ImportError):
        import transformers  # noqa: F401

    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _FrozenBatchNorm2dStandIn(nn.Module):
    """Stand-in for ``torchvision.ops.misc.FrozenBatchNorm2d``; laion-clap's HTSAT never uses it."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is not installed (FrozenBatchNorm2d is unavailable)")


@contextlib.contextmanager
def _torchvision_stand_in():
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return
    names = ("torchvision", "torchvision.ops", "torchvision.ops.misc")
    mods = {n: types.ModuleType(n) for n in names}
    mods["torchvision"].ops = mods["torchvision.ops"]
    mods["torchvision.ops"].misc = mods["torchvision.ops.misc"]
    mods["torchvision.ops.misc"].FrozenBatchNorm2d = _FrozenBatchNorm2dStandIn
    sys.modules.update(mods)
    try:
        yield
    finally:
        for n in names:
            if sys.modules.get(n) is mods[n]:
                del sys.modules[n]


def laion_clap_module_dir() -> Path:
    """The installed ``laion_clap/clap_module`` folder (found without importing laion_clap)."""
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("laion-clap is not installed: `pip install laion-clap` (or use an "
                         "hf:<repo> CLAP model through transformers)")
    path = Path(list(spec.submodule_search_locations)[0]) / "clap_module"
    if not (path / "htsat.py").exists():
        raise ModelError(f"laion-clap at {path.parent} has no clap_module/htsat.py: reinstall laion-clap")
    return path


def import_htsat(allow_network: bool = False):
    """laion-clap's ``clap_module.htsat`` module, imported without the package's side effects."""
    name = f"{_ALIAS}.htsat"
    if name in sys.modules:
        return sys.modules[name]
    folder = laion_clap_module_dir()
    if _ALIAS not in sys.modules:
        spec = importlib.machinery.ModuleSpec(_ALIAS, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        pkg = importlib.util.module_from_spec(spec)
        pkg.__path__ = [str(folder)]
        sys.modules[_ALIAS] = pkg
    try:
        with hub_offline(not allow_network), _torchvision_stand_in(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except ImportError as exc:
        raise ModelError(f"laion-clap's HTSAT cannot be imported ({exc}): install laion-clap's "
                         "dependencies (torchlibrosa, librosa, h5py)") from None


# -- architecture ---------------------------------------------------------------------------------
@dataclass
class HtsatArch:
    """Shape of laion-clap's HTSAT audio tower (defaults: HTSAT-tiny as in 630k-audioset-best)."""

    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    window_size: int = 8
    patch_size: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 527
    mel_bins: int = 64
    n_fft: int = 1024
    qkv_bias: bool = True
    ape: bool = False
    # fixed by laion-clap's audio config, not stored in weights
    spec_size: int = 256
    sample_rate: int = 48_000
    hop_size: int = 480
    fmin: int = 50
    fmax: int = 14_000

    @property
    def width(self) -> int:
        """Width of the pooled audio feature (input of ``audio_projection``)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)


@dataclass
class RobertaArch:
    """Shape of the RoBERTa text tower (defaults: ``roberta-base``)."""

    vocab_size: int = 50265
    hidden_size: int = 768
    num_layers: int = 12            # RobertaConfig's num_hidden_layers
    num_heads: int = 12             # num_attention_heads
    intermediate_size: int = 3072
    max_positions: int = 514        # max_position_embeddings
    type_vocab_size: int = 1

    def config(self):
        from transformers import RobertaConfig

        names = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
                 "max_positions": "max_position_embeddings"}
        return RobertaConfig(**{names.get(k, k): v for k, v in asdict(self).items()}, layer_norm_eps=1e-5,
                             pad_token_id=1, bos_token_id=0, eos_token_id=2)


@dataclass
class LaionArch:
    audio: HtsatArch = field(default_factory=HtsatArch)
    text: RobertaArch = field(default_factory=RobertaArch)
    joint_dim: int = 512


def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ModelError(f"not a laion-clap CLAP state dict (missing {key})")
    return tuple(state[key].shape)


def arch_from_state_dict(state: dict[str, torch.Tensor]) -> LaionArch:
    """Infer :class:`LaionArch` from a laion-clap CLAP state dict (``audio_branch.*`` etc.)."""
    if any(k.startswith(("audio_branch.fusion_model.", "audio_branch.mel_conv")) for k in state):
        raise ModelError("this is a laion-clap *fusion* checkpoint; MACS uses the non-fusion model "
                         "(630k-audioset-best.pt)")
    if any(k.startswith("audio_branch.conv_block") for k in state):
        raise ModelError("this laion-clap checkpoint has a PANN audio tower; only HTSAT is supported")
    a = "audio_branch."
    embed_dim, _, patch, _ = _shape(state, a + "patch_embed.proj.weight")
    depths, heads = [], []
    n_layers = 1 + max((int(m.group(1)) for k in state if (m := re.match(rf"{a}layers\.(\d+)\.", k))),
                       default=-1)
    if n_layers == 0:
        raise ModelError("not a laion-clap HTSAT state dict (no audio_branch.layers.*)")
    for i in range(n_layers):
        blocks = {int(m.group(1)) for k in state if (m := re.match(rf"{a}layers\.{i}\.blocks\.(\d+)\.", k))}
        depths.append(len(blocks))
        heads.append(_shape(state, f"{a}layers.{i}.blocks.0.attn.relative_position_bias_table")[1])
    # the bias table of a (w x w) window has (2w - 1)^2 rows; the first stage keeps the full window
    table_rows = _shape(state, f"{a}layers.0.blocks.0.attn.relative_position_bias_table")[0]
    window = (math.isqrt(table_rows) + 1) // 2
    hidden = _shape(state, f"{a}layers.0.blocks.0.mlp.fc1.weight")[0]
    audio = HtsatArch(
        embed_dim=embed_dim, depths=depths, num_heads=heads, window_size=window, patch_size=patch,
        mlp_ratio=hidden / embed_dim, num_classes=_shape(state, a + "head.weight")[0],
        mel_bins=_shape(state, a + "bn0.weight")[0],
        n_fft=_shape(state, a + "spectrogram_extractor.stft.conv_real.weight")[-1],
        qkv_bias=f"{a}layers.0.blocks.0.attn.qkv.bias" in state,
        ape=f"{a}absolute_pos_embed" in state)
    t = "text_branch."
    vocab, width = _shape(state, t + "embeddings.word_embeddings.weight")
    layers = 1 + max((int(m.group(1)) for k in state if (m := re.match(rf"{t}encoder\.layer\.(\d+)\.", k))),
                     default=-1)
    text = RobertaArch(
        vocab_size=vocab, hidden_size=width, num_layers=layers,
        num_heads=max(1, width // 64),  # not stored in weights; RoBERTa uses 64-wide heads
        intermediate_size=_shape(state, t + "encoder.layer.0.intermediate.dense.weight")[0],
        max_positions=_shape(state, t + "embeddings.position_embeddings.weight")[0],
        type_vocab_size=_shape(state, t + "embeddings.token_type_embeddings.weight")[0])
    joint = _shape(state, "audio_projection.0.weight")[0]
    return LaionArch(audio=audio, text=text, joint_dim=joint)


# -- the network ----------------------------------------------------------------------------------
def _projection(width: int, joint: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, joint), nn.ReLU(), nn.Linear(joint, joint))


class LaionClapNet(nn.Module):
    """laion-clap's CLAP for embeddings: HTSAT + RoBERTa + projection heads, laion key layout."""

    def __init__(self, arch: LaionArch | None = None, allow_network: bool = False):
        super().__init__()
        arch = arch or LaionArch()
        self.arch = arch
        htsat = import_htsat(allow_network)
        from transformers import RobertaModel

        a = arch.audio
        audio_cfg = types.SimpleNamespace(mel_bins=a.mel_bins, window_size=a.n_fft, hop_size=a.hop_size,
                                          sample_rate=a.sample_rate, fmin=a.fmin, fmax=a.fmax)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.meshgrid indexing warning inside the Swin blocks
            self.audio_branch = htsat.HTSAT_Swin_Transformer(
                spec_size=a.spec_size, patch_size=a.patch_size, patch_stride=(a.patch_size, a.patch_size),
                num_classes=a.num_classes, embed_dim=a.embed_dim, depths=list(a.depths),
                num_heads=list(a.num_heads), window_size=a.window_size, mlp_ratio=a.mlp_ratio,
                qkv_bias=a.qkv_bias, ape=a.ape, config=audio_cfg, enable_fusion=False, fusion_type="None")
        self.text_branch = RobertaModel(arch.text.config(), add_pooling_layer=True)
        self.audio_projection = _projection(a.width, arch.joint_dim)
        self.text_projection = _projection(arch.text.hidden_size, arch.joint_dim)

    def audio_embedding(self, wav48: torch.Tensor) -> torch.Tensor:
        """``(B, 480000)`` waveform at 48 kHz -> ``(B, joint_dim)``, not normalised."""
        out = self.audio_branch({"waveform": wav48}, mixup_lambda=None, device=wav48.device)
        return self.audio_projection(out["embedding"])

    def text_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids -> ``(B, joint_dim)``, not normalised (RoBERTa pooler output, projected)."""
        pooled = self.text_branch(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.text_projection(pooled)


def load_net_state(net: LaionClapNet, state: dict[str, torch.Tensor], source: str) -> LaionClapNet:
    """Load a laion-clap CLAP state dict into ``net`` strictly, with one-line errors."""
    own = net.state_dict()
    non_persistent = {n for n, _ in net.named_buffers()} - set(own)  # e.g. RoBERTa position_ids
    state = {k: v for k, v in state.items()
             if not k.startswith(IGNORED_PREFIXES) and k not in non_persistent}
    problem = describe_mismatch(own, state)
    if problem:
        raise ModelError(f"{source}: checkpoint does not fit laion-clap's CLAP ({problem})")
    net.load_state_dict(state, strict=True)
    return net
