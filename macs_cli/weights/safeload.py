"""The one way macs reads a PyTorch checkpoint it did not write as safetensors:
``torch.load(weights_only=True)``, never a full unpickle, with a one-line reason of our own when
it fails (torch's own message is a page long and suggests ``weights_only=False``, which must
never be done with a downloaded file)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import ModelError


def load_failure(exc: BaseException) -> str:
    """A short reason for a failed ``torch.load(weights_only=True)``."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", text)
    if found:
        return (f"cannot load checkpoint safely: refused, it holds a pickled Python object ({found.group(1)}) "
                "that could run code when loaded; macs reads only tensors from checkpoint files")
    if isinstance(exc, EOFError) or re.search(r"Unsupported operand|invalid load key|zip archive|"
                                              r"central directory|magic number|PytorchStreamReader",
                                              text):
        return "cannot load checkpoint safely: not a PyTorch checkpoint (corrupt, truncated or another kind of file)"
    if "Weights only load failed" in text:
        return ("cannot load checkpoint safely: refused, it holds pickled Python objects beyond tensors, "
                "which could run code when loaded; macs reads only tensors from checkpoint files")
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    return f"cannot load checkpoint safely ({first[:200]})"


def torch_load_safely(path: str | Path, mmap: bool = True) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (memory-mapped where the file allows);
    any failure is one :class:`ModelError` line naming the file."""
    import torch

    from ..fsutil import require_regular_file

    path = Path(path)
    try:
        require_regular_file(path, "checkpoint")
    except Exception as exc:
        raise ModelError(str(exc)) from None
    if mmap:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            pass  # not a zip-format checkpoint (mmap needs one), or unreadable: retry plainly
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        err = ModelError(f"{path}: {load_failure(exc)}")
        err.reason = load_failure(exc)   # for callers that name the file themselves
        raise err from None
