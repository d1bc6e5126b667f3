"""`bench export`: a result table in pytest-benchmark's JSON format, so that
`pytest-benchmark compare`, `pytest --benchmark-compare` and the tools that read its files
work on flashsuite's runs.

Each timed row (status ok, with samples) becomes one benchmark: its raw samples in seconds
as `stats.data` (one call per round, `iterations` 1), the statistics pytest-benchmark
derives from them, `group` = the unit (technique, case, dtype, direction) so that the
implementations of one unit are ranked together, `name` = technique[impl-case-dtype-direction],
`params` = the implementation, dtype, direction and every case parameter, and flashsuite's
own columns (throughput, memory, correctness, clocks) in `extra_info`. Rows that were not
timed are left out, as pytest-benchmark leaves out benchmarks that errored. The run's
environment becomes `machine_info`, its git revision `commit_info`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness import results
from harness.compare import rows_by_key
from harness.errors import UsageError

FORMATS = ("pytest-benchmark",)
FORMAT_VERSION = "5.1.0"  # the pytest-benchmark file layout this writes
EXTRA = ("median_ms", "p10_ms", "p90_ms", "ci_rel", "tflops", "gbps", "frac_of_peak", "peak_bytes", "rel_err",
         "max_abs_err", "correct", "bitwise_repeatable", "precision_gap", "timing_mode", "stop_reason",
         "is_performance_figure", "sm_clock_mhz_before", "sm_clock_mhz_after", "throttled", "throttle_reasons",
         "role", "impl_code_hash", "suite", "run_id")


def pytest_benchmark(table: Path) -> dict[str, Any]:
    _pytest_benchmark_stats()  # refuse before reading when the package is missing
    frame = results.read_table(table)
    sidecar = results.read_sidecar(table)
    env = sidecar.get("environment", {})
    benchmarks = []
    for row in rows_by_key(frame).values():
        samples = [float(s) / 1e3 for s in (row.get("samples_ms") or []) if _finite(s)]
        if row.get("status") != "ok" or not samples:
            continue
        benchmarks.append(_benchmark(row, samples))
    return {
        "machine_info": {
            "node": env.get("host_hash", ""), "processor": env.get("gpu", ""), "machine": env.get("device", ""),
            "python_compiler": "", "python_implementation": "CPython",
            "python_implementation_version": env.get("python", ""), "python_version": env.get("python", ""),
            "python_build": [], "release": "", "system": env.get("platform", ""), "cpu": {},
            "gpu": env.get("gpu", ""), "compute_capability": env.get("compute_capability", ""),
            "driver": env.get("driver", ""), "cuda": env.get("cuda", ""), "torch": env.get("torch", ""),
            "triton": env.get("triton", ""),
        },
        "commit_info": {"id": env.get("git_sha", ""), "time": sidecar.get("started", ""),
                        "author_time": sidecar.get("started", ""), "dirty": bool(env.get("git_dirty", False)),
                        "project": "flashsuite", "branch": ""},
        "benchmarks": benchmarks,
        "datetime": _iso(sidecar.get("started", "")),
        "version": FORMAT_VERSION,
    }


def write(table: Path, output: Path | None) -> str:
    text = json.dumps(pytest_benchmark(table), indent=2) + "\n"
    if output is not None:
        Path(output).write_text(text)
    return text


def _benchmark(row: dict[str, Any], samples: list[float]) -> dict[str, Any]:
    case = json.loads(row.get("case") or "{}")
    param = f"{row['impl']}-{row['case_id']}-{row['dtype']}-{row['direction']}"
    group = f"{row['technique']} {row['case_id']} {row['dtype']} {row['direction']}"
    return {
        "group": group,
        "name": f"{row['technique']}[{param}]",
        "fullname": f"{row.get('suite') or 'flashsuite'}::{row['technique']}[{param}]",
        "params": {"impl": row["impl"], "dtype": row["dtype"], "direction": row["direction"], **case},
        "param": param,
        "extra_info": {k: row.get(k) for k in EXTRA if row.get(k) is not None},
        "options": {"disable_gc": False, "timer": row.get("timing_mode") or "", "min_rounds": len(samples),
                    "max_time": 0.0, "min_time": 0.0, "warmup": True},
        "stats": {**sample_stats(samples), "data": samples, "iterations": 1},
    }


def sample_stats(data: list[float]) -> dict[str, Any]:
    """The statistics pytest-benchmark stores beside the samples, computed by pytest-benchmark
    itself so that they follow the installed version's definitions (5.3.1 changed hd15iqr)."""
    stats = _pytest_benchmark_stats()()
    for value in data:
        stats.update(value)
    return stats.as_dict()


def _pytest_benchmark_stats() -> type:
    try:
        from pytest_benchmark.stats import Stats
    except ImportError:
        raise UsageError("bench export needs the pytest-benchmark package; accepted: "
                         "pip install 'flashsuite[export]'") from None
    return Stats


def _iso(started: str) -> str:
    """'20261125T140725Z' -> '2026-11-25T14:07:25+00:00'."""
    if len(started) == 16 and started[8] == "T" and started.endswith("Z"):
        return f"{started[:4]}-{started[4:6]}-{started[6:8]}T{started[9:11]}:{started[11:13]}:{started[13:15]}+00:00"
    return started


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
