"""The files macs writes: their format tags, and how a previous output of each kind is recognised.

Only a recognised previous output of the same kind may be replaced with ``--force``
(:mod:`macs_cli.fsutil`); everything else at an output path is left alone. Files written before
format tags were recorded are recognised by the keys they hold.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from .fsutil import OutputKind, json_kind, read_json, sibling_kind

STEMS_FORMAT = "macs-stems-v1"            # manifest.json of `macs separate`
EMBEDDINGS_FORMAT = "macs-embeddings-v1"  # sidecar of `macs embed`
RANKED_FORMAT = "macs-ranked-v1"          # sidecar of `macs rank`
IMAGE_FORMAT = "macs-image-v1"            # sidecar of a `macs generate` image
REPORT_FORMAT = "macs-report-v1"          # report.json of `macs eval`
PNG_MARK = "macs"                         # text chunk in every PNG macs writes

NPY_MAGIC = b"\x93NUMPY"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

MANIFEST = json_kind("macs separate manifest", ("macs-stems",), ("macs_version", "stems", "source", "source_frames", "model_sample_rate"))
STEMS = OutputKind("macs separate output folder",
                   lambda p: Path(p).is_dir() and not Path(p).is_symlink() and MANIFEST.owns(Path(p) / "manifest.json"))
_SEPARATE_WRITES = re.compile(r"^(manifest\.json|spectrograms\.png|stem_\d{2,}\.wav)$")


def _only_separate_files(path: Path) -> bool:
    """The folder holds nothing but what ``macs separate`` writes (a file the user added, or a
    sub-folder, is not ours to delete)."""
    try:
        with os.scandir(path) as entries:
            return all(_SEPARATE_WRITES.match(e.name) and not e.is_dir(follow_symlinks=False) for e in entries)
    except OSError:
        return False


# what --force may replace: a stems folder holding only its own files
STEMS_OUTPUT = OutputKind("macs separate output folder holding only its own files (manifest.json, stem_NN.wav, "
                          "spectrograms.png)", lambda p: STEMS.owns(p) and _only_separate_files(Path(p)))

EMBED_SIDECAR = json_kind("macs embed sidecar", ("macs-embeddings",), ("stems", "shape", "normalized", "model", "backend", "stem_sha256",
                                                                      "mixture_embedding"))
EMBEDDINGS = sibling_kind("macs embed output", lambda p: p.with_suffix(".json"), EMBED_SIDECAR, NPY_MAGIC)
RANK_SIDECAR = json_kind("macs rank sidecar", ("macs-ranked",), ("order", "kept", "scores", "spearman_vs_separator_order",
                                                                 "mixture_embedding"))
RANKED = sibling_kind("macs rank output", lambda p: p.with_suffix(".json"), RANK_SIDECAR, NPY_MAGIC)

IMAGE_SIDECAR = json_kind("macs generate sidecar", ("macs-image",), ("image", "seed", "settings", "command"))
IMAGE = sibling_kind("macs generate image", lambda p: p.with_suffix(".json"), IMAGE_SIDECAR, PNG_MAGIC)


def _attention_sidecar(p: Path) -> Path:
    return p.with_name(p.name[: -len("_attention" + p.suffix)] + ".json") \
        if p.stem.endswith("_attention") else p.with_suffix(".none")


ATTENTION_PNG = sibling_kind("macs generate attention map", _attention_sidecar, IMAGE_SIDECAR, PNG_MAGIC)
ATTENTION_NPY = sibling_kind("macs generate attention array", _attention_sidecar, IMAGE_SIDECAR, NPY_MAGIC)


def png_marked(path: Path) -> bool:
    """A PNG that macs wrote (it carries our text chunk)."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != PNG_MAGIC:
                return False
        from PIL import Image

        with Image.open(path) as im:
            return PNG_MARK in getattr(im, "text", {})
    except Exception:  # unreadable or not an image: not ours
        return False


PICTURE = OutputKind("picture written by macs", png_marked)

REPORT_JSON = json_kind("macs eval report", ("macs-report",), ("task", "pairing", "results", "macs_version"))
REPORT_PART = sibling_kind("macs eval report", lambda p: p.with_name("report.json"), REPORT_JSON)


# -- run folders (train-sep, train-gen) ------------------------------------------------------------
def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


CHECKPOINT_KEYS = frozenset({"optimizer", "scheduler", "step", "config"})   # in every run's checkpoint.pt


def _run_checkpoint(path: Path) -> bool:
    """A training run's ``checkpoint.pt``: torch's zip format whose pickle holds the keys every
    macs run saves (``optimizer``, ``scheduler``, ``step`` and ``config``, the run's YAML with
    ``train:`` and ``optim:`` sections). Read with :mod:`pickletools`, which parses the opcodes
    and never runs them. Any other checkpoint (another tool's ``checkpoint.pt``) is not ours."""
    import pickletools

    try:
        with zipfile.ZipFile(path) as z:
            pkl = [i for i in z.infolist() if i.filename.endswith("/data.pkl")]
            if len(pkl) != 1 or pkl[0].file_size > 64 << 20:
                return False
            data = z.read(pkl[0])
        strings = {arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str)}
    except Exception:   # unreadable, not a zip, a damaged pickle: not ours
        return False
    return CHECKPOINT_KEYS <= strings and any(
        re.search(r"(?m)^train:", v) and re.search(r"(?m)^optim:", v) for v in strings if len(v) > 12)


def _safetensors_format(path: Path, family: str) -> bool:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            fmt = (f.metadata() or {}).get("format", "")
        return fmt.startswith(family)
    except Exception:
        return False


def _run_config(path: Path, sections: frozenset[str]) -> bool:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and {"train", "optim"} <= set(data) and set(data) <= sections


def _metrics(path: Path) -> bool:
    try:
        with open(path) as f:
            return f.readline().startswith("step,")
    except (OSError, UnicodeDecodeError):
        return False


_SAMPLE = re.compile(r"^step_\d+\.png$")


def _samples(path: Path) -> bool:
    """train-gen's samples/ folder: nothing but step_NNNNNN.png files and (hidden) temporaries of
    them; a hidden folder of the user's (.git/, .ipynb_checkpoints/) makes it not ours."""
    p = Path(path)
    try:
        if not p.is_dir() or p.is_symlink():
            return False
        with os.scandir(p) as entries:
            return all(not e.is_dir(follow_symlinks=False) and
                       (_SAMPLE.match(e.name) or e.name.startswith(".step_")) for e in entries)
    except OSError:
        return False


def _separator_json(path: Path) -> bool:
    data = read_json(path)
    return data is not None and {"num_sources", "channels", "n_fft"} <= set(data)


def _adapter_json(path: Path) -> bool:
    return str((read_json(path) or {}).get("format", "")).startswith("macs-adapter")


SEPARATOR_FILE = OutputKind("macs separator checkpoint", lambda p: _safetensors_format(p, "macs-separator"))
SEPARATOR_JSON = OutputKind("macs separator config", _separator_json)
ADAPTER_FILE = OutputKind("macs adapter checkpoint", lambda p: _safetensors_format(p, "macs-adapter"))
ADAPTER_JSON = OutputKind("macs adapter config", _adapter_json)


def run_file_kinds(label: str, sections: frozenset[str]) -> dict[str, OutputKind]:
    """How each of a training run's own files is recognised (what ``--force`` may remove)."""
    checks = {
        "config.yaml": lambda p: _run_config(p, sections),
        "checkpoint.pt": _run_checkpoint,
        "metrics.csv": _metrics,
        "curves.png": lambda p: _starts_with(p, PNG_MAGIC),
        "separator.safetensors": SEPARATOR_FILE.owns,
        "separator.json": _separator_json,
        "adapter.safetensors": ADAPTER_FILE.owns,
        "adapter.json": _adapter_json,
        "samples": _samples,
    }
    return {name: OutputKind(f"{label} {name}", fn) for name, fn in checks.items()}
