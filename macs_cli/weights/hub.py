"""Where weights come from: one resolver for hub ids, the Hugging Face cache and local paths, and
one "not here: this is how to get it" message, shared by every loader (separator, CLAP, Stable
Diffusion, the adapter, the evaluation networks).

Nothing here touches the network unless ``allow_download`` is true.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelError


def looks_like_path(text: str | os.PathLike) -> bool:
    """A filesystem path (absolute, ``./``, ``../``, ``~`` or an existing entry), not a hub id
    such as ``org/name``."""
    text = str(text)
    return Path(text).expanduser().is_absolute() or text.startswith((".", "~")) or Path(text).exists()


def fetch_command(repo: str, files: str = "") -> str:
    """The shell command that puts ``files`` of ``repo`` into the Hugging Face cache."""
    return f"hf download {repo} {files}".strip()


def not_cached_message(what: str, repo: str, files: str = "", flag: str = "") -> str:
    """One line: ``what`` is not in the Hugging Face cache, and the ways to get it."""
    instead = f", or pass {flag}" if flag else ""
    return (f"{what} is not in the Hugging Face cache: run once with --allow-download, or "
            f"`{fetch_command(repo, files)}`{instead}")


def cached_file(repo: str, filename: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """``filename`` of ``repo`` if the Hugging Face cache holds it, else None (never the network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, filename, cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception:   # an invalid repo id, an unreadable cache
        return None
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def hub_file(repo: str, filename: str, what: str, flag: str = "", allow_download: bool = False,
             cache_dir: str | os.PathLike | None = None) -> Path:
    """``filename`` of ``repo`` from the cache, or (only with ``allow_download``) the hub; a
    :class:`ModelError` with :func:`not_cached_message` when it cannot be had."""
    found = cached_file(repo, filename, cache_dir)
    if found is not None:
        return found
    reason = "not cached"
    if allow_download:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(repo, filename, cache_dir=None if cache_dir is None else str(cache_dir)))
        except Exception as exc:   # offline, no permission, no such file
            reason = type(exc).__name__
    raise ModelError(f"{not_cached_message(what, repo, filename, flag)} ({reason})")


def hub_repo_cached(repo: str, marker: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cached snapshot folder of ``repo`` (found through its ``marker`` file), or None."""
    found = cached_file(repo, marker, cache_dir)
    return None if found is None else found.parent


def first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


__all__ = ["looks_like_path", "fetch_command", "not_cached_message", "cached_file", "hub_file",
           "hub_repo_cached", "first_line"]
