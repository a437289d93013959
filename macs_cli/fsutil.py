"""Atomic file placement: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import MacsError, OutputExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: Path, directory: bool) -> None:
    """Give a temporary file/folder the mode a plain open()/mkdir() would have given it (mkstemp and
    mkdtemp create them owner-only, which would make every output private on a shared disk)."""
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix,
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        publish_mode(tmp_path, directory=False)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(target: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target``.

    An existing ``target`` is an error unless ``force``; it is only removed once the new
    content is complete, so a failure leaves whatever the user had untouched.
    """
    target = Path(target)
    if target.exists() and not force:
        raise OutputExistsError(f"{target}: already exists (use --force to overwrite)")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise MacsError(f"{parent}: cannot write output ({exc.strerror or exc})") from None
    try:
        yield tmp
        publish_mode(tmp, directory=True)
        if target.exists():
            old = parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_writable_dir(path: Path) -> None:
    """Raise a one-line MacsError unless ``path`` is a writable folder or could be created as one.
    Nothing is created: a run that fails before writing leaves no empty output folder behind."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise MacsError(f"{path}: output path exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise MacsError(f"{path}: output folder is not writable")
        return
    base = next((p for p in path.absolute().parents if p.exists()), None)
    if base is None or not base.is_dir():
        raise MacsError(f"{path}: cannot create output folder ({base} is not a folder)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise MacsError(f"{path}: cannot create output folder ({base} is not writable)")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (OSError if it cannot be read)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
