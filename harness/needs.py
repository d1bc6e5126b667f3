"""What an implementation needs to run: a CUDA GPU, a Triton backend, a package, an architecture.

Each need is checked lazily and answers None (met) or the reason it is not met, so
`bench list` can show every implementation with why it is unavailable.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Need:
    name: str
    check: Callable[[], str | None]


def interpreting() -> bool:
    """True when Triton kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _cuda() -> str | None:
    import torch

    if torch.cuda.is_available():
        return None
    return "needs a CUDA GPU; none is visible"


def _triton() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "needs the triton package, which is not installed"
    if interpreting():
        return None
    return _cuda() and "needs a CUDA GPU or Triton's interpreter (TRITON_INTERPRET=1); neither is on"


CUDA = Need("cuda", _cuda)
TRITON = Need("triton", _triton)


def package(module: str, pip_name: str | None = None) -> Need:
    """The Python module `module` must import (only its presence is checked, cheaply)."""

    def check() -> str | None:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        return None if found else f"needs the {pip_name or module} package, which is not importable"

    return Need(f"package:{module}", check)


def capability(major: int, minor: int = 0) -> Need:
    """A CUDA GPU of at least this compute capability."""

    def check() -> str | None:
        import torch

        if not torch.cuda.is_available():
            return f"needs a CUDA GPU of compute capability {major}.{minor} or newer; none is visible"
        have = torch.cuda.get_device_capability()
        if have < (major, minor):
            return f"needs compute capability {major}.{minor} or newer; this GPU has {have[0]}.{have[1]}"
        return None

    return Need(f"sm>={major}{minor}", check)
