"""`bench gate --confirm`: measure the flagged cases again, and only those.

For each suite with `slower` cases, a suite file is written that holds just those cases
(one group per case: its technique, case, dtype and direction, the original group's
seeds, checks and timing, every other implementation excluded) and `bench run` measures
it with the checkout's code, here, into a table of its own. The re-measurement must be of
the code the candidate was measured at and on the same GPU: a different git revision, a
changed implementation folder or another GPU is refused unless forced.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable

from harness import compare, registry, results, suites
from harness.compare import Pair
from harness.errors import UsageError
from harness.gate import Outcome


def flagged(outcome: Outcome) -> list[tuple[Pair, list]]:
    out = []
    for pair in outcome.pairs:
        cases = [c for c in pair.cases if c.verdict == "slower"]
        if cases:
            out.append((pair, cases))
    return out


def remeasure(outcome: Outcome, results_dir: Path | None = None, isolate: bool = True, force: bool = False,
              on_row: Callable = lambda row, done, total: None) -> tuple[dict[tuple, dict[str, Any]], list[Path]]:
    """Fresh rows for every `slower` case, (suite, key) -> row, and the tables written."""
    from harness.runner import Runner, RunOptions, use_interpreter_without_gpu

    todo = flagged(outcome)
    if not todo:
        return {}, []
    use_interpreter_without_gpu()
    registry.load_all()
    for pair, cases in todo:
        check_same_code_and_gpu(pair, cases, force)
    results_dir = Path(results_dir) if results_dir else Path(tempfile.mkdtemp(prefix="flashsuite-confirm-"))
    fresh, tables = {}, []
    for pair, cases in todo:
        with tempfile.TemporaryDirectory(prefix="flashsuite-confirm-suite-") as folder:
            suite_file = write_suite(pair, cases, Path(folder))
            table = Runner(RunOptions(suite=str(suite_file), tier="quick", results_dir=results_dir, isolate=isolate),
                           on_row=on_row).run()
        tables.append(table)
        for key, row in compare.rows_by_key(results.read_table(table)).items():
            fresh[(pair.suite, key)] = row
    return fresh, tables


def check_same_code_and_gpu(pair: Pair, cases: list, force: bool) -> None:
    import torch

    from harness.environment import capture, git_revision
    from harness.measure import impl_code_hash

    if force:
        return
    sha, _ = git_revision()
    then = pair.cand_env.get("git_sha")
    if then and sha != then:
        raise UsageError(f"--confirm measures the checkout's code (git {sha}), but {pair.cand_path} was measured at "
                         f"git {then}; run it from that revision (--force re-measures anyway)")
    impls = {(i.technique, i.name): i for t in registry.technique_names() for i in registry.implementations(t)}
    for judged in cases:
        technique, name = judged.key[0], judged.key[1]
        impl = impls.get((technique, name))
        if impl is None:
            raise UsageError(f"--confirm cannot re-measure {technique}/{name}: no such implementation in this checkout")
        recorded = (judged.cand or {}).get("impl_code_hash")
        if recorded and impl_code_hash(impl) != recorded:
            raise UsageError(f"--confirm: the code of {technique}/{name} changed since {pair.cand_path} was measured "
                             f"(code hash {recorded}, now {impl_code_hash(impl)}); --force re-measures anyway")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    here, there = capture(device).gpu, pair.cand_env.get("gpu")
    if there and here != there:
        raise UsageError(f"--confirm re-measures on this machine's {here}, but {pair.cand_path} was measured on "
                         f"{there} (--force re-measures anyway)")


def write_suite(pair: Pair, cases: list, folder: Path) -> Path:
    """A suite file of just these cases, named as the candidate's suite."""
    sidecar = results.read_sidecar(pair.cand_path)
    selection = sidecar.get("selection", {})
    tier = sidecar.get("tier") or pair.cand_env.get("tier") or "quick"
    original = suites.load(selection.get("suite_file") or pair.suite, tier)
    units = {(u.technique, u.case.id, registry.dtype_name(u.dtype), u.direction): u for u in original.units}
    wanted: dict[tuple, set[str]] = {}
    for judged in cases:
        technique, impl, case_id, dtype, direction = judged.key
        unit_key = (technique, case_id, dtype, direction)
        if unit_key not in units:
            raise UsageError(f"--confirm: {original.path} has no case {technique} {case_id} {dtype} {direction} "
                             f"in tier {tier} any more; the flagged case cannot be re-measured")
        wanted.setdefault(unit_key, set()).add(impl)
    lines = [f"description = {_toml('re-measurement of flagged cases of ' + original.name)}",
             f"requires = {_toml(original.requires)}", ""]
    for unit_key, impls in wanted.items():
        unit = units[unit_key]
        others = sorted({i.name for i in registry.implementations(unit.technique)} - impls)
        lines += ["[[group]]", f"technique = {_toml(unit.technique)}", 'tiers = ["quick"]',
                  f"dtypes = {_toml([registry.dtype_name(unit.dtype)])}", f"directions = {_toml([unit.direction])}",
                  f"seeds = {unit.seeds}", f"checks = {_toml(list(unit.checks))}", f"timing = {_toml(unit.timing)}",
                  f"exclude = {_toml(others)}", "[group.grid]"]
        lines += [f"{name} = {_toml([value])}" for name, value in unit.case.params]
        lines.append("")
    path = folder / f"{original.name}.toml"
    path.write_text("\n".join(lines))
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise UsageError(f"--confirm cannot write the case value {value!r} into a suite file")
