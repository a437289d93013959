"""What ``macs generate`` reads and writes: its inputs (embedding sets, put into the adapter's stem
order, or mixture files), the names of the images, the checks made before any model loads, and
the image record (PNG + JSON sidecar, and the attention maps) written as one output.

    job = GenerateJob.plan(GenerateInputs(embeddings=[Path("song.npy")]), Path("out/"), 1, seed=0,
                           stem_order="significance")
    gen = MacsGenerator.load(...)
    job.check_fits(gen, top_k=None)
    for s in job.inputs:
        job.write_input(gen, s, settings, common={...})
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, MacsError
from ..formats import STEM_ORDERS
from ..fsutil import file_sha256

PICTURE_SUFFIXES = (".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
OFFICIAL_SEPARATOR_HINT = ("with an official adapter --separator defaults to official, the separator its adapters "
                           "were trained on; pass --separator default for the built-in one")


def check_options(interpolate: bool, frames: int, num_images: int, attention_maps: bool, order: str | None) -> None:
    """The option rules that no model is needed for (after GenerationSettings.validate)."""
    if interpolate and frames < 2:
        raise ConfigError(f"--frames must be >= 2 (got {frames})")
    if interpolate and (num_images != 1 or attention_maps):
        raise ConfigError("--interpolate makes one image per frame from one seed: --num-images and "
                          "--attention-maps do not apply")
    if order is not None and order not in STEM_ORDERS:
        raise ConfigError(f"--order must be separator or significance (got {order!r})")


def stem_order_for(source, order: str | None) -> tuple[str, dict]:
    """The stem order given to the adapter (``--order``, else the one it was trained on) and its record."""
    stem_order = order or (source.stem_order if source.stem_order in STEM_ORDERS else "significance")
    return stem_order, {"stem_order": stem_order, "from": "--order" if order else "adapter",
                        "adapter_stem_order": source.stem_order}


def load_embeddings(path: Path, order: str = "significance") -> tuple[Any, dict, dict]:
    """An embeddings file -> (array (N, K, 512) in ``order``, its sidecar, a record of what was done);
    the order rules are :func:`macs_cli.ranking.ensure_order`'s (a `macs embed` set is ranked here)."""
    from ..formats import EmbeddingSet
    from ..ranking import order_set
    from .pipeline import as_batch

    found = EmbeddingSet.read(path)
    record: dict[str, Any] = {"file": str(path.resolve()), "sha256": file_sha256(path), "shape": list(found.array.shape)}
    ordered, done = order_set(found, order)
    record.update(done)
    return as_batch(ordered.array, str(path)), ordered.meta, record


def labels_of(meta: dict, k: int) -> list[str]:
    """Titles for the attention maps: rank and best label of each stem (labels as `macs embed`
    writes them; anything else in a hand-edited sidecar is ignored)."""
    labels = meta.get("labels")
    labels = labels if isinstance(labels, list) else []
    out = []
    for i in range(k):
        row = labels[i] if i < len(labels) else None
        best = row[0].get("label") if isinstance(row, list) and row and isinstance(row[0], dict) else None
        out.append(f"#{i + 1} {best}" if isinstance(best, str) and best else f"#{i + 1}")
    return out


@dataclass
class InputSet:
    """One input: its embeddings (N, K, 512) (filled later for --audio), sidecar, record, output names."""

    name: str
    array: Any
    meta: dict
    record: dict
    audio: Path | None = None
    names: dict = field(default_factory=dict)   # (row, seed) -> output name
    path: Path | None = None                    # the file as given (messages name it so)

    def plan(self, num_images: int, seed: int) -> None:
        rows = 1 if self.array is None else self.array.shape[0]
        for row in range(rows):
            for k in range(num_images):
                parts = [self.name] + ([f"{row:03d}"] if rows > 1 else []) + ([f"{k:02d}"] if num_images > 1 else [])
                self.names[(row, seed + k)] = "_".join(parts)


@dataclass
class GenerateInputs:
    """What one run generates from: embedding files, mixture files, or two ends of an interpolation."""

    embeddings: list[Path] = field(default_factory=list)
    audio: list[Path] = field(default_factory=list)
    interpolate: tuple[Path, Path] | None = None
    frames: int = 8

    def paths(self) -> list[Path]:
        return [*self.embeddings, *(self.interpolate or ()), *self.audio]


@dataclass
class GenerateJob:
    """The images of one ``macs generate`` run: inputs, output names and targets, checked at
    :meth:`plan` (before any model loads); each input's images are one output (:meth:`outputs`),
    written by :meth:`write_input` (an interpolation's frames and contact sheet: :meth:`write_frames`)."""

    inputs: list[InputSet]
    output: Path
    targets: dict[str, Path]
    single: bool
    frames: int | None = None            # an interpolation's frames (None: images per input)
    attention_maps: bool = False
    force: bool = False
    given: list[Path] = field(default_factory=list)

    @classmethod
    def plan(cls, given: GenerateInputs, output: Path, num_images: int, seed: int, stem_order: str,
             attention_maps: bool = False, force: bool = False, problems: list | None = None,
             check_outputs: bool = True) -> "GenerateJob":
        """Read the inputs and name their images. An input that cannot be read raises, or with
        ``problems`` (a list) is told there and left out, so that the others go on (the two ends
        of an interpolation, and an array that does not fit (ConfigError), always raise). ``check_outputs``: refuse outputs that exist (a caller
        with a batch runner checks them itself, input by input)."""
        from ..fsutil import plan_output

        sets: list[InputSet] = []
        told = len(problems or [])
        for path in list(given.embeddings) + list(given.interpolate or ()):
            try:
                arr, meta, rec = load_embeddings(path, stem_order)
            except MacsError as exc:   # unreadable: this input's problem; a ConfigError (it does not fit) stops the run
                if problems is None or given.interpolate is not None or isinstance(exc, ConfigError):
                    raise
                problems.append(str(exc))
                continue
            sets.append(InputSet(path.stem, arr, meta, rec, path=path))
        for path in given.audio:
            if not path.is_file():
                if problems is None:
                    raise MacsError(f"{path}: no such audio file")
                problems.append(f"{path}: no such audio file")
                continue
            record = {"file": str(path.resolve()), "sha256": file_sha256(path), "kind": "audio"}
            sets.append(InputSet(path.stem, None, {}, record, audio=path, path=path))
        frames = given.frames if given.interpolate is not None else None
        if frames is not None:
            planned = [f"frame_{i:03d}" for i in range(frames)] + ["contact_sheet"]
        else:
            for s in sets:
                s.plan(num_images, seed)
            planned = [n for s in sets for n in s.names.values()]
        single = output.suffix.lower() == ".png"
        if output.suffix.lower() in PICTURE_SUFFIXES:
            raise ConfigError(f"-o {output}: images are written as PNG: name the output OUT.png, or give a folder")
        left_out = len(problems or []) - told     # each would have made at least one image
        if single and len(planned) + left_out != 1:
            raise ConfigError(f"-o {output}: one PNG holds one image but this run writes "
                              f"{len(planned) + left_out}{'+' if left_out else ''}: pass a folder")
        if not single and output.exists() and not output.is_dir():
            raise MacsError(f"{output}: exists and is not a folder")
        if len(set(planned)) != len(planned):
            raise ConfigError("two inputs have the same file name: run them separately or rename one")
        targets = {n: output if single else output / f"{n}.png" for n in planned}
        job = cls(sets, output, targets, single, frames, attention_maps, force, given.paths())
        for _, where, parts in job.outputs() if check_outputs else ():
            clash = next((p for p, _ in parts if p.resolve() in job.input_files()), None)
            if clash is not None:
                raise MacsError(f"{clash}: is one of the inputs; choose another -o")
            plan_output(parts, force)   # nothing there, or (with --force) a previous image of ours
        return job

    def input_files(self) -> set[Path]:
        """The files this run reads (an output must not be one of them): inputs and their sidecars."""
        used = {Path(p).resolve() for p in self.given}
        return used | {p.with_suffix(".json") for p in used}

    def image_names(self, s: InputSet | None) -> list[str]:
        """The image names of one input (None: an interpolation's frames)."""
        return [n for n in self.targets if n.startswith("frame_")] if s is None else list(s.names.values())

    def outputs(self) -> list[tuple[InputSet | None, str, list]]:
        """One output per input: (the input, how messages name it, its files with their kinds, the
        first image first). An interpolation is one output: its frames and the contact sheet."""
        from ..formats import PICTURE

        if self.frames is not None:
            a, b = self.given[:2]
            parts = [p for n in self.image_names(None) for p in image_parts(self.targets[n], self.attention_maps)]
            return [(None, f"{a} -> {b}", parts + [(self.targets["contact_sheet"], PICTURE)])]
        return [(s, str(s.path), [p for n in self.image_names(s)
                                                      for p in image_parts(self.targets[n], self.attention_maps)])
                for s in self.inputs]

    def existing(self, s: InputSet | None) -> list[tuple[Path, dict]]:
        """The stdout records of an output kept as it is (``--skip-existing``)."""
        return [(self.targets[n], {"sidecar": str(self.targets[n].with_suffix(".json"))}) for n in self.image_names(s)]

    def embed_audio(self, embedder, s: InputSet, stem_order: str, top_k: int | None) -> None:
        """Separate, embed and order one mixture input (``embedder``: from :func:`audio_embedder`)."""
        stems = embedder.embed(s.audio)
        arr, rank_info = stems.ordered(stem_order, top_k)
        s.array = arr[None]
        s.record.update(embedder.describe(), **rank_info, **stems.info)

    def check_fits(self, gen, top_k: int | None, inputs: list[InputSet] | None = None) -> None:
        """Each input (default: every one read so far) fits the adapter."""
        if self.frames is not None:
            return
        for s in self.inputs if inputs is None else inputs:
            if s.array is None:
                continue          # a mixture: checked once it is embedded
            try:
                gen.prepare(s.array, top_k)
            except ConfigError as exc:
                raise ConfigError(f"{s.record.get('file', s.name)}: {exc}") from None

    def _writer(self, common: dict, force: bool, emit: Callable[..., None], advance: Callable[[], None],
                written: list[Path]) -> Callable:
        if not self.single:
            self.output.mkdir(parents=True, exist_ok=True)

        def write(item, name: str, record: dict, titles: list[str] | None = None) -> None:
            files = write_image(self.targets[name], item, {**record, **common}, titles, force)
            written.append(self.targets[name])
            emit(self.targets[name], sidecar=str(files[1]), seed=item.seed, skipped=False,
                 **({"attention": [str(f) for f in files[2:]]} if len(files) > 2 else {}))
            advance()

        return write

    def write_input(self, gen, s: InputSet, settings, common: dict, top_k: int | None = None,
                    emit: Callable[..., None] = lambda path, **record: None,
                    advance: Callable[[], None] = lambda: None, force: bool | None = None) -> list[Path]:
        """Generate and write one input's images (``emit(path, **record)`` for each, ``advance()``
        after each); returns the files written."""
        written: list[Path] = []
        write = self._writer(common, self.force if force is None else force, emit, advance, written)
        k = min(s.array.shape[1], top_k or s.array.shape[1])
        titles = labels_of(s.meta, k)

        def on_image(item) -> None:
            write(item, s.names[(item.source_index, item.seed)],
                  {"seed": item.seed, "input": {**s.record, "row": item.source_index, "stems_used": k}}, titles)

        gen.generate(s.array, settings, attention_maps=self.attention_maps, on_image=on_image)
        return written

    def write_frames(self, gen, settings, common: dict, emit: Callable[..., None] = lambda path, **record: None,
                     advance: Callable[[], None] = lambda: None, force: bool | None = None) -> list[Path]:
        """Generate and write an interpolation's frames, then its contact sheet (the last file)."""
        from .visual import contact_sheet, save_png

        written: list[Path] = []
        force = self.force if force is None else force
        write = self._writer(common, force, emit, advance, written)
        a, b = self.inputs
        frames = self.frames
        positions = [i / (frames - 1) for i in range(frames)]

        def on_frame(item) -> None:
            i = item.source_index
            write(item, f"frame_{i:03d}", {"seed": item.seed, "input": {
                "kind": "interpolation", "a": a.record, "b": b.record, "t": positions[i], "frame": i}})

        images, t = gen.interpolate(a.array, b.array, frames, settings, on_image=on_frame)
        sheet = self.targets["contact_sheet"]
        save_png(contact_sheet([im.image for im in images], [f"t={x:.2f}" for x in t]), sheet, force=force)
        written.append(sheet)
        emit(sheet, kind="contact_sheet", frames=frames, skipped=False)
        return written


def audio_embedder(source, separator: str | None, clap: str | None, device, allow_download: bool = False,
                   precision: str = "auto"):
    """The separator and CLAP that turn ``--audio`` mixtures into stem embeddings, loaded now (a
    missing model is one error of the run, not one per input). An official adapter sees what the
    official pipeline gives it: its separator (unless ``separator`` is given) and a clip shorter
    than the window padded to one window before separation (8 s stems)."""
    from .audio import AudioEmbedder

    official = source.kind == "official"
    embedder = AudioEmbedder(separator or ("official" if official else "default"), clap, device, allow_download,
                             precision=precision, window_pad=source.window_pad)
    try:
        embedder.separator
    except MacsError as exc:
        raise MacsError(f"{exc} [{OFFICIAL_SEPARATOR_HINT}]" if official and separator is None else str(exc)) from None
    embedder.clap
    return embedder


def run_record(settings, order_record: dict, gen, argv: list[str]) -> dict:
    """What every image's sidecar records of the run: settings (less the per-image seed), the stem
    order, the models, the command line."""
    import shlex

    return {"settings": {k: v for k, v in settings.to_dict().items() if k not in ("seed", "num_images")},
            "order": order_record, **gen.describe(), "command": "macs " + " ".join(shlex.quote(a) for a in argv)}


def image_parts(path: Path, attention_maps: bool) -> list:
    """The files of one image record with their kinds: the PNG, its sidecar, its attention maps."""
    from ..formats import ATTENTION_NPY, ATTENTION_PNG, IMAGE, IMAGE_SIDECAR

    parts = [(path, IMAGE), (path.with_suffix(".json"), IMAGE_SIDECAR)]
    if attention_maps:
        parts += [(path.with_name(f"{path.stem}_attention.png"), ATTENTION_PNG),
                  (path.with_name(f"{path.stem}_attention.npy"), ATTENTION_NPY)]
    return parts


def write_image(path: Path, item, record: dict, titles: list[str] | None, force: bool = False) -> list[Path]:
    """PNG + JSON sidecar (+ attention grid and maps when the item has them), written together:
    all complete under temporary names, then placed (the sidecar first); returns the files."""
    import numpy as np

    from ..formats import IMAGE_FORMAT
    from ..fsutil import OutputSet
    from .visual import attention_grid, write_png

    side = {"format": IMAGE_FORMAT, "image": path.name, **record, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    parts = image_parts(path, item.attention is not None)
    with OutputSet(force) as out:
        tmp = [None] * len(parts)
        for i in [1, 0, *range(2, len(parts))]:      # the sidecar is placed first: it makes the rest ours
            tmp[i] = out.path(*parts[i])
        tmp = dict(zip([p for p, _ in parts], tmp))
        mark = {"macs": json.dumps({"seed": item.seed, "sidecar": path.with_suffix(".json").name})}
        write_png(item.image, tmp[path], mark)
        tmp[path.with_suffix(".json")].write_text(json.dumps(side, indent=2, default=str) + "\n")
        if item.attention is not None:
            attention_grid(item.image, item.attention, titles or [], tmp[parts[2][0]])
            with open(tmp[parts[3][0]], "wb") as f:
                np.save(f, item.attention.astype(np.float32))
    return [p for p, _ in parts]


__all__ = ["GenerateInputs", "GenerateJob", "InputSet", "check_options", "image_parts", "labels_of",
           "audio_embedder", "load_embeddings", "run_record", "stem_order_for", "write_image"]
