"""What every technique's tests share: fresh seeds that a failure message tells how to
reproduce, the harness's rule as a verdict with its numbers, pairwise case lists, and a
stand-in for a kernel so input checks can be tested without a launch."""

from __future__ import annotations

import itertools
import os
from types import ModuleType
from typing import Callable

import torch

from harness.correctness import ErrorStats, passes
from harness.registry import Tolerance

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


def verdict(out: torch.Tensor, reference_out: torch.Tensor, truth: torch.Tensor, dtype: torch.dtype,
            tolerance: Tolerance, unit_scale: float | None = None) -> tuple[bool, str]:
    """The harness's rule for one output against the float64 truth, the reference run at
    `dtype` the yardstick: (passes, a line with the numbers for the failure message)."""
    err, ref_err = ErrorStats.between(out, truth), ErrorStats.between(reference_out, truth)
    line = (f"rel_err {err.rel_err:.3e} vs reference {ref_err.rel_err:.3e}; "
            f"max_abs_err {err.max_abs_err:.3e} vs reference {ref_err.max_abs_err:.3e} (scale {ref_err.scale:.3e})")
    return passes(err, ref_err, tolerance, dtype, unit_scale), line


def pairwise_cases(axes: dict[str, dict], cost: Callable[[dict[str, str]], float] = lambda case: 0) -> list[dict[str, str]]:
    """A covering array of strength 2 over `axes` (axis -> {value name: value}), built greedily
    and deterministically: each case is the full combination covering the most value pairs
    not yet covered, the cheapest of those by `cost`. Every pair of values of any two axes
    appears in some case (check with `uncovered_pairs`)."""
    names = list(axes)
    pairs = list(itertools.combinations(names, 2))
    uncovered = {((a, x), (b, y)) for a, b in pairs for x in axes[a] for y in axes[b]}
    candidates = [dict(zip(names, combo)) for combo in itertools.product(*(list(axes[a]) for a in names))]
    cases = []
    while uncovered:
        def score(case):
            return sum(((a, case[a]), (b, case[b])) in uncovered for a, b in pairs), -cost(case)
        best = max(candidates, key=score)
        uncovered -= {((a, best[a]), (b, best[b])) for a, b in pairs}
        cases.append(best)
    return cases


def uncovered_pairs(cases: list[dict[str, str]], axes: dict[str, dict]) -> dict[tuple[str, str], set]:
    """For each pair of axes, the value pairs no case covers (empty when the cases are pairwise)."""
    missing = {}
    for a, b in itertools.combinations(axes, 2):
        seen = {(case[a], case[b]) for case in cases}
        missing[(a, b)] = set(itertools.product(axes[a], axes[b])) - seen
    return {key: value for key, value in missing.items() if value}
