"""Suites: TOML files that list cases by tier, so sweeps live in data, not code.

    description = "..."
    requires = "cuda"            # "cuda": GPU-sized shapes; "any": runs in the interpreter too
    seeds = 3                    # fresh seeds per case for the correctness check
    checks = ["repeat", "fp32"]  # bitwise run-to-run repeat; FP32-vs-low-precision gap
    timing = "cuda-graph"        # "events" (default): each call launched from Python and timed
                                 # by CUDA events; "cuda-graph": captured once, replayed (fwd only)

    [[group]]                    # one grid of cases; a suite has any number
    technique = "attention"
    tiers = ["quick", "full"]    # the tiers this group belongs to
    dtypes = ["bfloat16"]
    directions = ["fwd", "fwd+bwd"]
    exclude = ["sdpa-math"]      # implementations to leave out of this group (optional)
    [group.grid]                 # the cartesian product of these lists, one key per parameter
    B = [4]
    N = [4096, 8192]
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path

import torch

from harness import registry
from harness.cases import Case
from harness.errors import UsageError
from harness.registry import DIRECTIONS, Direction

TIERS = ("quick", "full")
CHECKS = ("repeat", "fp32")
TIMINGS = ("events", "cuda-graph")
SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"


@dataclass(frozen=True)
class Unit:
    """One technique at one case, dtype and direction: the unit a worker measures, with
    every implementation that takes part."""

    technique: str
    case: Case
    dtype: torch.dtype
    direction: Direction
    seeds: int
    checks: tuple[str, ...]
    exclude: tuple[str, ...] = ()  # implementations this group leaves out
    timing: str = "events"  # or "cuda-graph": see harness/timing.py


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    description: str
    requires: str
    units: tuple[Unit, ...]

    @property
    def techniques(self) -> list[str]:
        return sorted({u.technique for u in self.units})


def available() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def load(name_or_path: str, tier: str) -> Suite:
    """Load a suite by name (suites/<name>.toml) or path; registry must be loaded first."""
    if tier not in TIERS:
        raise UsageError(f"unknown tier {tier!r} (accepted: {', '.join(TIERS)})")
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = SUITES_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise UsageError(f"unknown suite {name_or_path!r} (available: {', '.join(available())}; or a path to a .toml file)")
    elif not path.exists():
        raise UsageError(f"suite file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"suite file {path} is not valid TOML: {e}") from None
    where = f"suite {path.stem}"
    requires = data.get("requires", "any")
    if requires not in ("cuda", "any"):
        raise UsageError(f"{where}: requires must be 'cuda' or 'any', got {requires!r}")
    seeds = _positive_int(data.get("seeds", 3), f"{where}: seeds")
    checks = _checks(data.get("checks", list(CHECKS)), where)
    timing = _timing(data.get("timing", "events"), where)
    groups = data.get("group", [])
    if not groups:
        raise UsageError(f"{where}: no [[group]] of cases")
    units = []
    for index, group in enumerate(groups, 1):
        units += _expand(group, f"{where}, group {index}", tier, seeds, checks, timing)
    if not units:
        raise UsageError(f"{where} has no cases in tier {tier!r}")
    return Suite(path.stem, path, data.get("description", ""), requires, tuple(units))


def _expand(group: dict, where: str, tier: str, seeds: int, checks: tuple[str, ...], timing: str) -> list[Unit]:
    name = group.get("technique")
    try:
        tech = registry.technique(name)
    except KeyError as e:
        raise UsageError(f"{where}: {e.args[0]}") from None
    tiers = group.get("tiers", list(TIERS))
    if not set(tiers) <= set(TIERS):
        raise UsageError(f"{where}: tiers must be among {', '.join(TIERS)}, got {tiers}")
    if tier not in tiers:
        return []
    try:
        dtypes = [registry.parse_dtype(d) for d in group.get("dtypes", ["bfloat16"])]
    except ValueError as e:
        raise UsageError(f"{where}: {e}") from None
    directions = group.get("directions", ["fwd"])
    for direction in directions:
        if direction not in DIRECTIONS or direction not in tech.directions:
            raise UsageError(f"{where}: direction {direction!r} not offered by {name} (accepted: {', '.join(tech.directions)})")
    exclude = tuple(group.get("exclude", ()))
    known = {impl.name for impl in registry.implementations(name)}
    unknown = [impl for impl in exclude if impl not in known]
    if unknown:
        raise UsageError(f"{where}: exclude names unknown implementation {unknown[0]!r} (available: {', '.join(sorted(known))})")
    grid = group.get("grid", {})
    missing = [p for p in tech.parameters if p not in grid]
    extra = [p for p in grid if p not in tech.parameters]
    if missing or extra:
        raise UsageError(f"{where}: grid must set exactly {name}'s parameters {', '.join(tech.parameters)}"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; unknown {', '.join(extra)}" if extra else ""))
    lists = [grid[p] if isinstance(grid[p], list) else [grid[p]] for p in tech.parameters]
    units = []
    group_seeds = _positive_int(group.get("seeds", seeds), f"{where}: seeds")
    group_checks = _checks(group.get("checks", checks), where)
    group_timing = _timing(group.get("timing", timing), where)
    if group_timing == "cuda-graph" and "fwd+bwd" in directions:
        raise UsageError(f"{where}: timing 'cuda-graph' times forward passes only; drop it or the fwd+bwd direction")
    for values in itertools.product(*lists):
        case = Case(tuple(zip(tech.parameters, values)))
        problem = tech.validate_case(case)
        if problem:
            raise UsageError(f"{where}: case {case.id}: {problem}")
        for dtype in dtypes:
            for direction in directions:
                units.append(Unit(name, case, dtype, direction, group_seeds, group_checks, exclude, group_timing))
    return units


def _checks(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise UsageError(f"{where}: checks must be a list (accepted: {', '.join(CHECKS)}), got {value!r}")
    unknown = sorted(set(value) - set(CHECKS))
    if unknown:
        raise UsageError(f"{where}: unknown checks {unknown} (accepted: {', '.join(CHECKS)})")
    return tuple(value)


def _timing(value: object, where: str) -> str:
    if value not in TIMINGS:
        raise UsageError(f"{where}: unknown timing {value!r} (accepted: {', '.join(TIMINGS)})")
    return value


def _positive_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{what} must be a positive integer, got {value!r}")
    return value
