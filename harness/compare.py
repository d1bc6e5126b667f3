"""Comparing a candidate run with a baseline, case by case: the rule of `bench compare` and
`bench gate` (docs/gating.md).

A case is one (technique, impl, case, dtype, direction). For a case timed in both runs the
statistic is the ratio of medians, candidate over baseline, with its bootstrap interval
(harness/bootstrap.py). With the band [1/(1+t), 1+t] (t = the allowed slowdown, 5%):
  slower        the whole interval above 1 and the ratio above 1+t        (fails)
  faster        the whole interval below 1 and the ratio below 1/(1+t)
  same          the whole interval inside the band
  inconclusive  anything else                                             (reported)
  invalid       a change measured on unsteady clocks (a thermal or hardware slowdown, or
                SM clocks that differ by more than 2% with no power cap to explain it), or
                rows timed differently or with too few samples            (reported)
Before timing, always failing: wrong (correct in the baseline, incorrect now, or a new
case that is incorrect), broken (ran, now errors, runs out of memory, crashes or hangs),
nondeterministic (bitwise repeatable, now not). Not failing: fixed (failing before, measured
now), new (skipped before, measured now), dropped (measured in the baseline, unsupported or
unavailable now), not timed (failing or skipped in both), only in candidate, only in
baseline, and peer slower and peer nondeterministic (a peer library's row judged slower, or
repeatable before and not now: the change under test is not in it, so it tells of the GPU's
state or the peer's version; failing with --gate-peers).
Optional: more memory (peak bytes grew more than --max-memory-growth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import baseline, results
from harness.bootstrap import ratio_of_medians
from harness.errors import ResultFileError, UsageError

BROKEN = ("error", "oom", "crashed", "timeout")
SKIPPED = ("unsupported", "unavailable")
FAILING = ("wrong", "broken", "nondeterministic", "slower", "more memory")
VERDICTS = FAILING + ("invalid", "inconclusive", "unconfirmed", "peer slower", "peer nondeterministic", "faster",
                      "dropped", "fixed", "new", "same", "not timed", "only in candidate", "only in baseline")
HARDWARE_THROTTLE = frozenset({"hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake"})
ANY_THROTTLE = HARDWARE_THROTTLE | {"sw_power_cap"}
THROTTLE_POLICIES = ("hardware", "any", "ignore")
SOFTWARE = ("driver", "cuda", "torch", "triton")
KEY = ("technique", "impl", "case_id", "dtype", "direction")


@dataclass(frozen=True)
class Rule:
    max_slowdown: float = 0.05  # the band: a ratio within [1/(1+t), 1+t] is no change
    confidence: float = 0.95  # of the bootstrap interval
    max_clock_diff: float = 0.02  # SM clocks of the two rows further apart than this: unsteady
    throttle: str = "hardware"  # which throttle reasons make a row unsteady (THROTTLE_POLICIES)
    min_samples: int = 5
    max_memory_growth: float | None = None  # None: memory changes are reported, never fail
    gate_peers: bool = False  # a peer's slowdown or lost repeatability fails too (else reported as `peer ...`)

    def describe(self) -> str:
        memory = "" if self.max_memory_growth is None else f", peak memory growth at most {self.max_memory_growth:.0%}"
        peers = "" if self.gate_peers else "; a peer's slowdown or lost repeatability reported, not failed"
        return (f"ratio of medians, {self.confidence:.0%} exact bootstrap interval; slower when the interval lies "
                f"above 1 and the ratio above {1 + self.max_slowdown:.3g}; clocks within {self.max_clock_diff:.0%}; "
                f"throttling counted: {self.throttle}{memory}{peers}")


@dataclass
class Judged:
    suite: str
    key: tuple[str, str, str, str, str]
    verdict: str
    base: dict[str, Any] | None
    cand: dict[str, Any] | None
    ratio: float | None = None
    low: float | None = None
    high: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fails(self) -> bool:
        return self.verdict in FAILING

    @property
    def effect(self) -> float:
        return abs(math.log(self.ratio)) if self.ratio else 0.0

    def change(self, column: str) -> tuple[Any, Any]:
        return (self.base or {}).get(column), (self.cand or {}).get(column)


@dataclass
class Pair:
    """One suite: the baseline table, the candidate table and their cases."""

    suite: str
    base_path: Path | None
    cand_path: Path
    base_env: dict[str, Any]
    cand_env: dict[str, Any]
    cases: list[Judged] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- reading and pairing ---------------------------------------------------------------------------


def pairs(base: Path, cand: Path, rule: Rule, force: bool = False) -> list[Pair]:
    """Pair the candidate's tables with the baseline's (by suite, then device), refuse what
    cannot be compared unless forced, and judge every case."""
    base_tables, cand_tables = baseline.tables(base), baseline.tables(cand)
    if not cand_tables:
        raise UsageError(f"{cand}: no result table (*.parquet) in it")
    if not base_tables:
        raise UsageError(f"{base}: no result table (*.parquet) in it")
    explicit = Path(base).is_file() and Path(cand).is_file()
    out = []
    for table in cand_tables:
        match = base_tables[0] if explicit else _match(table, base_tables, base, force)
        if match is None:
            out.append(Pair(table.suite, None, table.path, {}, _env(table.path),
                            notes=[f"no baseline of suite {table.suite!r} under {base}: nothing gated"]))
            continue
        out.append(judge_tables(match.path, table.path, rule, force))
    if not any(p.base_path for p in out):
        raise UsageError(f"nothing to compare: no suite of {cand} has a baseline under {base} "
                         f"(baseline suites: {', '.join(sorted({t.suite for t in base_tables}))})")
    return out


def _match(table: baseline.Table, base_tables: list[baseline.Table], base: Path, force: bool):
    same_suite = [t for t in base_tables if t.suite == table.suite]
    same_device = [t for t in same_suite if t.device == table.device]
    if same_device:
        return same_device[-1]
    if not same_suite:
        return None
    if not force:
        devices = ", ".join(sorted({t.device for t in same_suite}))
        raise UsageError(f"no baseline of suite {table.suite!r} on {table.device} under {base} (it has {devices}); "
                         "timings of different GPUs are not comparable (--force compares them anyway)")
    return same_suite[-1]


def read(path: Path, force: bool = False) -> pd.DataFrame:
    """A result table; one of another schema version only when forced."""
    try:
        return results.read_table(path)
    except ResultFileError as e:
        if "schema version" not in str(e):
            raise
        if not force:
            raise ResultFileError(f"{e} (--force compares it anyway)") from None
    frame = pd.read_parquet(path)
    missing = [c for c in (*KEY, "status", "samples_ms", "median_ms") if c not in frame.columns]
    if missing:
        raise ResultFileError(f"{path}: even forced, a table needs the columns {', '.join(missing)}")
    return frame


def judge_tables(base_path: Path, cand_path: Path, rule: Rule, force: bool = False) -> Pair:
    base_frame, cand_frame = read(base_path, force), read(cand_path, force)
    base_env, cand_env = _env(base_path, base_frame), _env(cand_path, cand_frame)
    pair = Pair(cand_env.get("suite", ""), base_path, cand_path, base_env, cand_env)
    pair.notes += check_comparable(base_path, cand_path, base_env, cand_env, force)
    base_rows, cand_rows = rows_by_key(base_frame), rows_by_key(cand_frame)
    for key, row in cand_rows.items():
        pair.cases.append(judge(pair.suite, key, base_rows.get(key), row, rule))
    for key, row in base_rows.items():
        if key not in cand_rows:
            pair.cases.append(judge(pair.suite, key, row, None, rule))
    pair.cases.sort(key=order)
    return pair


def check_comparable(base_path, cand_path, base_env: dict, cand_env: dict, force: bool) -> list[str]:
    """Refuse different GPUs, suites or schema versions unless forced (then note them);
    note differences of software, tier and host."""
    notes, refusals = [], []
    for what, column in (("GPU", "gpu"), ("suite", "suite"), ("schema version", "schema_version")):
        b, c = base_env.get(column), cand_env.get(column)
        if b != c:
            text = f"the baseline's {what} is {b}, the candidate's {c}"
            (notes if force else refusals).append(text + (" (forced)" if force else ""))
    if refusals:
        raise UsageError(f"{base_path} and {cand_path} are not comparable: {'; '.join(refusals)} "
                         "(--force compares them anyway)")
    for column in (*SOFTWARE, "tier", "host_hash"):
        b, c = base_env.get(column), cand_env.get(column)
        if b != c and (b or c):
            notes.append(f"{'host' if column == 'host_hash' else column} differs: {b} -> {c}")
    return notes


def rows_by_key(frame: pd.DataFrame) -> dict[tuple, dict[str, Any]]:
    out = {}
    for record in frame.to_dict("records"):
        record = {k: _plain(v) for k, v in record.items()}
        out[tuple(str(record[k]) for k in KEY)] = record
    return out


def _env(path: Path, frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """What a table says about its run: the sidecar's environment, completed from its rows."""
    sidecar = results.read_sidecar(path)
    env = {**sidecar.get("environment", {}), "suite": sidecar.get("suite"), "tier": sidecar.get("tier"),
           "run_id": sidecar.get("run_id"), "started": sidecar.get("started")}
    if frame is not None and len(frame):
        for column in ("gpu", "suite", "tier", "run_id", "git_sha", "device", *SOFTWARE):
            if not env.get(column) and column in frame.columns:
                values = sorted({str(v) for v in frame[column].dropna() if str(v)})
                env[column] = values[0] if len(values) == 1 else ", ".join(values) or None
        versions = sorted({int(v) for v in frame["schema_version"].dropna()}) if "schema_version" in frame else []
        env["schema_version"] = versions[0] if len(versions) == 1 else tuple(versions)
    return env


# -- judging one case --------------------------------------------------------------------------------


def judge(suite: str, key: tuple, base: dict | None, cand: dict | None, rule: Rule) -> Judged:
    judged = Judged(suite, key, "same", base, cand)
    if cand is None:
        judged.verdict = "only in baseline"
        return judged
    cs = cand["status"]
    bs = base["status"] if base is not None else None
    if cs == "ok" and bs == "ok":
        _judge_timing(judged, rule)
        if judged.verdict == "slower" and cand.get("role") == "peer" and not rule.gate_peers:
            judged.verdict = "peer slower"  # code the change did not touch: the GPU's drift, or the peer's upgrade
        if _bool(base.get("bitwise_repeatable")) is True and _bool(cand.get("bitwise_repeatable")) is False:
            # a peer's kernels choose their reduction orders themselves: cuDNN's decode rows have
            # flipped between two runs of one torch build (docs/gating.md)
            peer = cand.get("role") == "peer" and not rule.gate_peers
            judged.verdict = "peer nondeterministic" if peer else "nondeterministic"
        elif not judged.fails and rule.max_memory_growth is not None:
            memory = memory_ratio(base, cand)
            if memory is not None and memory > 1 + rule.max_memory_growth:
                judged.verdict = "more memory"
        return judged
    failing_before = bs in (*BROKEN, "incorrect")
    if cs == "incorrect" and not failing_before:
        judged.verdict = "wrong"
    elif cs in BROKEN and not failing_before:
        judged.verdict = "broken"
    elif base is None:
        judged.verdict = "only in candidate"
    elif cs != "ok" and bs != "ok":
        judged.verdict = "not timed"
    elif bs == "ok":
        judged.verdict = "dropped"
    else:
        judged.verdict = "fixed" if failing_before else "new"
    if cs != "ok" and cand.get("reason") and (cs != bs or judged.fails):
        judged.notes.append(f"{cs}: {cand['reason']}")
    return judged


def _judge_timing(judged: Judged, rule: Rule) -> None:
    base, cand = judged.base, judged.cand
    xs, ys = _samples(base), _samples(cand)
    if len(xs) == 0 or len(ys) == 0:
        judged.verdict = "invalid"
        judged.notes.append("no samples")
        return
    ci = ratio_of_medians(xs, ys, rule.confidence)
    judged.ratio, judged.low, judged.high = ci.ratio, ci.low, ci.high
    upper, lower = 1 + rule.max_slowdown, 1 / (1 + rule.max_slowdown)
    if ci.low > 1 and ci.ratio > upper:
        judged.verdict = "slower"
    elif ci.high < 1 and ci.ratio < lower:
        judged.verdict = "faster"
    elif ci.low >= lower and ci.high <= upper:
        judged.verdict = "same"
    else:
        judged.verdict = "inconclusive"
    problem = _not_comparable(base, cand, len(xs), len(ys), rule)
    unsteady = unsteady_clocks(base, cand, rule)
    if problem:
        judged.verdict = "invalid"
        judged.notes.append(problem)
    elif unsteady:
        if judged.verdict in ("slower", "faster"):
            judged.verdict = "invalid"
        judged.notes.append(unsteady)


def _not_comparable(base: dict, cand: dict, nb: int, nc: int, rule: Rule) -> str | None:
    if (base.get("timing_mode") or "") != (cand.get("timing_mode") or ""):
        return f"timed as {base.get('timing_mode')} in the baseline, {cand.get('timing_mode')} now"
    if min(nb, nc) < rule.min_samples:
        return f"too few samples ({nb} and {nc}; at least {rule.min_samples})"
    return None


def unsteady_clocks(base: dict, cand: dict, rule: Rule) -> str | None:
    """Why the two rows' clocks make a change unjudgeable, or None. A thermal or hardware
    slowdown always counts (with throttle='hardware'); the software power cap counts only
    with throttle='any': it is how an H100 runs tensor-core work, and a kernel that draws
    more power being clocked lower is part of its speed. Clocks that differ by more than
    max_clock_diff count unless the power cap (or an idle reading) explains them."""
    if rule.throttle == "ignore":
        return None
    counted = HARDWARE_THROTTLE if rule.throttle == "hardware" else ANY_THROTTLE
    reasons = {}
    for side, row in (("baseline", base), ("candidate", cand)):
        found = _reasons(row) & counted
        if found:
            reasons[side] = ",".join(sorted(found))
    if reasons:
        return "throttled: " + "; ".join(f"{side} {why}" for side, why in reasons.items())
    explained = {"gpu_idle"} | ({"sw_power_cap"} if rule.throttle == "hardware" else set())
    if (_reasons(base) | _reasons(cand)) & explained:
        return None
    cb, cc = clock(base), clock(cand)
    if cb and cc and abs(cc / cb - 1) > rule.max_clock_diff:
        return f"SM clock {cb:.0f} MHz in the baseline, {cc:.0f} MHz now"
    return None


def clock(row: dict) -> float | None:
    values = [v for v in (row.get("sm_clock_mhz_before"), row.get("sm_clock_mhz_after")) if _number(v)]
    return sum(values) / len(values) if values else None


def memory_ratio(base: dict | None, cand: dict | None) -> float | None:
    if not base or not cand:
        return None
    b, c = base.get("peak_bytes"), cand.get("peak_bytes")
    return c / b if _number(b) and _number(c) and b > 0 else None


def order(judged: Judged) -> tuple:
    """Failures first, then by the size of the change; cases not timed in both, then cases
    of only one run, last."""
    tier = 0 if judged.fails else 2 if judged.verdict == "not timed" else 3 if judged.verdict.startswith("only") else 1
    return (tier, -judged.effect, judged.key)


def _samples(row: dict) -> np.ndarray:
    values = row.get("samples_ms")
    if values is None:
        return np.array([])
    xs = np.asarray(list(values), dtype=np.float64)
    return xs[np.isfinite(xs) & (xs > 0)]


def _reasons(row: dict) -> set[str]:
    return {r.strip() for r in str(row.get("throttle_reasons") or "").split(",") if r.strip()}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)
