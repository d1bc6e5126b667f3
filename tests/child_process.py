"""Child processes for the tests that compile Triton kernels for a GPU (`bench kernels`, the
sweeps' --offline): the test process runs kernels in Triton's interpreter (tests/conftest.py),
whose kernels cannot be compiled, so these run in a fresh Python without TRITON_INTERPRET."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_compiling(*argv: str, **env: str) -> subprocess.CompletedProcess:
    """`python *argv` in the repository root, without TRITON_INTERPRET, with `env` added."""
    child = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    child.update(env, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=child, cwd=ROOT, timeout=600)
