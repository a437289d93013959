"""The files macs writes: their format tags, and how a previous output of each kind is recognised.

Only a recognised previous output of the same kind may be replaced with ``--force``
(:mod:`macs_cli.fsutil`); everything else at an output path is left alone. Files written before
format tags were recorded are recognised by the keys they hold.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

from .errors import MacsError
from .fsutil import OutputKind, json_kind, read_json, require_regular_file, sibling_kind

STEMS_FORMAT = "macs-stems-v1"            # manifest.json of `macs separate`
EMBEDDINGS_FORMAT = "macs-embeddings-v1"  # sidecar of `macs embed`
RANKED_FORMAT = "macs-ranked-v1"          # sidecar of `macs rank`
IMAGE_FORMAT = "macs-image-v1"            # sidecar of a `macs generate` image
REPORT_FORMAT = "macs-report-v1"          # report.json of `macs eval`
STEM_ORDERS = ("separator", "significance")   # the two stem orders (macs_cli.ranking)
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


# -- embedding sets: one .npy (rows: stems) and its .json sidecar ---------------------------------
def write_npy_with_sidecar(out: Path, array: np.ndarray, sidecar: dict, kind: str = "embeddings",
                           force: bool = False) -> list[Path]:
    """``out`` (.npy) and its ``.json`` sidecar, written together: both are complete under
    temporary names before either is placed, the sidecar first, so no ``.npy`` ever stands
    without its sidecar. ``kind`` (``embeddings`` or ``ranked``) sets the format tag and what
    ``force`` may replace: only a previous output of the same kind."""
    import numpy as np

    from .fsutil import OutputSet

    kinds = {"embeddings": (EMBEDDINGS, EMBED_SIDECAR, EMBEDDINGS_FORMAT),
             "ranked": (RANKED, RANK_SIDECAR, RANKED_FORMAT)}
    npy_kind, side_kind, fmt = kinds[kind]
    out = Path(out)
    with OutputSet(force) as outputs:
        side_tmp = outputs.path(out.with_suffix(".json"), side_kind)
        npy_tmp = outputs.path(out, npy_kind)
        side_tmp.write_text(json.dumps({"format": fmt, **sidecar}, indent=2) + "\n")
        with open(npy_tmp, "wb") as f:
            np.save(f, np.asarray(array, dtype=np.float32))
    return [out, out.with_suffix(".json")]


def read_npy_with_sidecar(path: Path) -> tuple[np.ndarray, dict]:
    """An array written by :func:`write_npy_with_sidecar` (or any plain .npy) and its sidecar
    (``{}`` when there is none); never unpickles."""
    import numpy as np

    path = Path(path)
    require_regular_file(path, "file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise MacsError(f"{path}: not a .npy array ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    if not isinstance(arr, np.ndarray):   # np.load opens a .npz archive too
        arr.close()
        raise MacsError(f"{path}: not a .npy array (a .npz archive; save one array with numpy.save)")
    side = path.with_suffix(".json")
    meta = {}
    if os.path.lexists(side):
        require_regular_file(side, "sidecar")
        try:
            meta = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MacsError(f"{side}: not JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise MacsError(f"{side}: not a sidecar (a JSON object is expected, found {type(meta).__name__})")
    return arr, meta


def read_stem_manifest(path: str | os.PathLike) -> dict:
    """The ``manifest.json`` of a ``macs separate`` folder, parsed and checked for the parts readers
    use (``stems``: a list of objects whose ``file`` is a name; ``source``: a path): the one reader
    of the format ``separate`` writes (:data:`STEMS_FORMAT`). One-line MacsError naming the file."""
    path = Path(path)
    require_regular_file(path, "manifest")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise MacsError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise MacsError(f"{path}: manifest is not a JSON object (got {type(manifest).__name__})")
    stems = manifest.get("stems", [])
    if not isinstance(stems, list):
        raise MacsError(f"{path}: manifest 'stems' is not a list (got {type(stems).__name__})")
    for i, entry in enumerate(stems):
        if not isinstance(entry, dict):
            raise MacsError(f"{path}: manifest 'stems'[{i}] is not an object")
        if "file" in entry and (not isinstance(entry["file"], str) or not entry["file"]):
            raise MacsError(f"{path}: manifest 'stems'[{i}].file is not a file name")
    src = manifest.get("source")
    if src is not None and not isinstance(src, str):
        raise MacsError(f"{path}: manifest 'source' is not a path (got {type(src).__name__})")
    return manifest


def read_image_record(image: str | os.PathLike) -> dict:
    """The JSON sidecar that ``macs generate`` writes beside an image (:data:`IMAGE_FORMAT`: seed,
    settings, the command, the embeddings it came from): the reader of the format that
    ``generation.files.write_image`` writes. One-line MacsError when it is missing or not one."""
    side = Path(image).with_suffix(".json")
    require_regular_file(side, "image record")
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise MacsError(f"{side}: unreadable image record ({exc})") from None
    if not isinstance(record, dict) or not IMAGE_SIDECAR.owns(side):
        raise MacsError(f"{side}: not a macs generate image record")
    return record


def find_embedding_files(items: list[Path]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Inputs -> [(embeddings file, its name below the output folder)]: a file is itself (its file
    name); a folder is searched recursively for ``macs embed`` outputs, which keep their path below
    it (``a/song.npy`` and ``b/song.npy`` stay apart)."""
    found, problems = [], []
    for item in items:
        item = Path(item)
        if item.is_dir():
            hits = sorted(p for p in item.rglob("*.npy")
                          if not any(part.startswith(".") for part in p.relative_to(item).parts)
                          and EMBEDDINGS.owns(p))
            if not hits:
                problems.append(f"{item}: holds no macs embed output (.npy with its .json sidecar)")
            found += [(p, p.relative_to(item)) for p in hits]
        else:
            found.append((item, Path(item.name)))
    return found, problems


class EmbeddingSet:
    """One embedding set as ``macs embed`` / ``macs rank`` write it: ``array`` (M, D) float32 rows
    in ``stem_order``, ``meta`` (the sidecar), ``path`` (None for a set made in memory)."""

    def __init__(self, array, meta: dict | None = None, path: Path | None = None):
        import numpy as np

        self.array = np.asarray(array, dtype=np.float32)
        self.meta = dict(meta or {})
        self.path = None if path is None else Path(path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "EmbeddingSet":
        array, meta = read_npy_with_sidecar(Path(path))
        return cls(array, meta, Path(path))

    @property
    def ranked(self) -> bool:
        """Written by ``macs rank`` (most significant first)."""
        return isinstance(self.meta.get("order"), list)

    @property
    def stem_order(self) -> str:
        return "significance" if self.ranked else "separator"

    @property
    def mixture(self):
        import numpy as np

        mix = self.meta.get("mixture_embedding")
        return None if mix is None else np.asarray(mix, dtype=np.float32)

    @property
    def labels(self) -> list | None:
        labels = self.meta.get("labels")
        return labels if isinstance(labels, list) and len(labels) == len(self.array) else None

    def write(self, path: str | os.PathLike, kind: str = "embeddings", force: bool = False) -> list[Path]:
        return write_npy_with_sidecar(Path(path), self.array, self.meta, kind, force)

    def __len__(self) -> int:
        return len(self.array)

    def __repr__(self) -> str:
        return f"EmbeddingSet({self.array.shape[0]} stems x {self.array.shape[1]}, {self.stem_order} order)"
