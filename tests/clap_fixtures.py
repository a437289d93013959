"""Tiny, randomly initialised CLAP models for the tests, built locally (no network).

- A byte-level BPE tokenizer with a 300-token vocabulary, trained on a few sentences with the
  ``tokenizers`` library and saved as a RoBERTa tokenizer folder (vocab.json, merges.txt, ...).
- A tiny laion-clap CLAP: laion-clap's own ``HTSAT_Swin_Transformer`` with an 8-wide patch
  embedding, two Swin stages of depth 2 and 1 and 8 classes (the input geometry stays CLAP's:
  10 s at 48 kHz, 64 mel bins, 256 x 256 spectrogram image), a one-layer 64-wide RoBERTa and
  512-d projection heads. Saved the way laion-clap's training saves checkpoints: a dict with a
  ``state_dict`` whose keys carry DDP's ``module.`` prefix, including the parts that embeddings
  do not use (``audio_transform``, ``logit_scale_a``...) and RoBERTa's legacy ``position_ids``.
- A tiny ``transformers.ClapModel`` with the same sizes, saved with ``save_pretrained`` together
  with the tokenizer and a ``ClapFeatureExtractor`` configured like ``laion/clap-htsat-unfused``.
"""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "The sound of dog barking", "The sound of Noise", "The sound of a car engine",
    "The sound of birds singing in the rain", "The sound of speech and laughter",
    "The sound of water flowing", "The sound of a door knocking", "The sound of music",
]
VOCAB_SIZE = 300
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4


def make_tokenizer(folder: Path) -> Path:
    """Train and save a tiny RoBERTa (byte-level BPE) tokenizer into ``folder``."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 4, vocab_size=VOCAB_SIZE, min_frequency=1, special_tokens=SPECIALS,
                            show_progress=False)
    bpe.save_model(str(folder))
    tok = RobertaTokenizer.from_pretrained(str(folder))
    assert len(tok) == VOCAB_SIZE, len(tok)
    tok.save_pretrained(str(folder))
    return folder


def tiny_laion_arch(vocab_size: int = VOCAB_SIZE):
    from macs_cli.clap.laion_net import HtsatArch, LaionArch, RobertaArch

    audio = HtsatArch(embed_dim=8, depths=[2, 1], num_heads=[1, 2], window_size=8, num_classes=8)
    text = RobertaArch(vocab_size=vocab_size, hidden_size=64, num_layers=1, num_heads=1,
                       intermediate_size=64, max_positions=128)
    return LaionArch(audio=audio, text=text, joint_dim=512)


def make_laion_net(seed: int = 0):
    from macs_cli.clap.laion_net import LaionClapNet

    torch.manual_seed(seed)
    return LaionClapNet(tiny_laion_arch()).eval()


def laion_training_checkpoint(net) -> dict:
    """``net`` as laion-clap's training code saves it (DDP prefix, unused heads, legacy keys)."""
    state = {f"module.{k}": v.clone() for k, v in net.state_dict().items()}
    joint = net.arch.joint_dim
    for head in ("audio_transform", "text_transform"):
        state[f"module.{head}.sequential.0.weight"] = torch.zeros(joint, joint)
        state[f"module.{head}.sequential.0.bias"] = torch.zeros(joint)
        state[f"module.{head}.sequential.3.weight"] = torch.zeros(joint, joint)
        state[f"module.{head}.sequential.3.bias"] = torch.zeros(joint)
    state["module.logit_scale_a"] = torch.tensor(2.659)
    state["module.logit_scale_t"] = torch.tensor(2.659)
    state["module.text_branch.embeddings.position_ids"] = torch.arange(net.arch.text.max_positions)[None]
    return {"epoch": 3, "name": "tiny", "state_dict": state}


def official_separator_checkpoint(net) -> dict:
    """A MACS-separator-like state dict: separator keys plus the CLAP twice (clap.*, model.clap.*)."""
    clap = {f"model.{k}": v.clone() for k, v in net.state_dict().items()}  # CLAP_Module's state
    state = {
        "model.unet.in_conv.0.weight": torch.randn(6, 1, 3, 3),
        "model.unet.unet.downconv.weight": torch.randn(4, 4, 4, 4),
        "model.tau2": torch.tensor(2.659),
        "unperm": torch.zeros(63, 2, 6),
    }
    state.update({f"clap.{k}": v for k, v in clap.items()})
    state.update({f"model.clap.{k}": v for k, v in clap.items()})
    return state


def make_hf_clap(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Save a tiny ``ClapModel`` + tokenizer + feature extractor into ``folder``."""
    from transformers import (AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel,
                              ClapProcessor)

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = ClapConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=64, max_position_embeddings=128),
        audio_config=dict(patch_embeds_hidden_size=8, hidden_size=16, depths=[2, 1], num_attention_heads=[1, 2],
                          window_size=8, num_classes=8),
        projection_dim=512)
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    fe = ClapFeatureExtractor(frequency_min=50, frequency_max=14_000, truncation="rand_trunc",
                              padding="repeatpad")
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(str(folder))
    return folder
