"""What every technique's tests share: fresh seeds that a failure message tells how to
reproduce, and a stand-in for a kernel so input checks can be tested without a launch."""

from __future__ import annotations

import os
from types import ModuleType

SEED_ENV = "FLASHSUITE_TEST_SEED"


def fresh_seed() -> int:
    """A new seed every run, unless FLASHSUITE_TEST_SEED pins one (to reproduce a failure)."""
    pinned = os.environ.get(SEED_ENV)
    return int(pinned) if pinned else int.from_bytes(os.urandom(4), "little")


def reproduce(seed: int) -> str:
    return f"seed={seed} (rerun with {SEED_ENV}={seed})"


def stub_kernel(monkeypatch, module: ModuleType, name: str) -> list:
    """Replace the Triton kernel `module.name` by a stub that launches nothing; returns the
    list of the grids it was launched with, so an input that would read out of bounds is
    refused (or not) without running."""
    launches: list = []

    class Stub:
        def __getitem__(self, grid):
            launches.append(grid)
            return lambda *args, **kwargs: None

    monkeypatch.setattr(module, name, Stub())
    return launches
