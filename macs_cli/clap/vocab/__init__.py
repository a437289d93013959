"""Built-in label vocabularies for zero-shot stem labelling (data files, see README.md here).

Each vocabulary is two files:

- ``<name>.txt``: the display names, one class per line, in the dataset's official index order
  (line ``i`` is class ``i``). This is what :func:`macs_cli.clap.labels.load_vocabulary` returns.
- ``<name>.tsv``: the dataset's own table with a header row, tab-separated (no quoting needed:
  AudioSet names hold commas). ``fsd50k.tsv``: ``index, name, mid`` with FSD50K's original
  underscored names (``Accelerating_and_revving_and_vroom``); ``audioset.tsv``:
  ``index, mid, display_name`` as in AudioSet's ``class_labels_indices.csv``.

FSD50K's display names are its original names with underscores turned into spaces
(``Bathtub (filling or washing)``); AudioSet's are its own display names, unchanged.
"""

from __future__ import annotations

from importlib import resources

BUILTIN: dict[str, str] = {"fsd50k": "FSD50K (200 classes)", "audioset": "AudioSet (527 classes)"}
SIZES: dict[str, int] = {"fsd50k": 200, "audioset": 527}


def canonical_name(text: str) -> str | None:
    """``'FSD50K'``, ``'fsd-50k'``, ``'AudioSet'``, ``'audio_set'``... -> the built-in's key, else None."""
    key = text.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    return key if key in BUILTIN else None


def _read(filename: str) -> str:
    return resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")


def read_names(name: str) -> list[str]:
    """The display names of built-in vocabulary ``name`` (a key of :data:`BUILTIN`), in index order."""
    if name not in BUILTIN:
        raise KeyError(f"no built-in vocabulary {name!r}; built-ins: {', '.join(BUILTIN)}")
    return [line.strip() for line in _read(f"{name}.txt").splitlines() if line.strip()]


def read_table(name: str) -> list[dict[str, str]]:
    """The rows of ``<name>.tsv`` as dicts keyed by its header (``index`` is kept as a string)."""
    if name not in BUILTIN:
        raise KeyError(f"no built-in vocabulary {name!r}; built-ins: {', '.join(BUILTIN)}")
    lines = [line for line in _read(f"{name}.tsv").splitlines() if line.strip()]
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


__all__ = ["BUILTIN", "SIZES", "canonical_name", "read_names", "read_table"]
