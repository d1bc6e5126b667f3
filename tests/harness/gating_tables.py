"""Synthetic result tables for the gating tests: rows with chosen samples, written as a
Parquet table and its sidecar the way `bench run` writes them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from harness.results import COLUMNS, SCHEMA_VERSION, Row

GPU = "NVIDIA H100 80GB HBM3"
DEVICE = "nvidia-h100-80gb-hbm3"


def samples(median_ms: float = 1.0, n: int = 200, noise: float = 0.01, seed: int = 0, heavy: bool = False) -> list[float]:
    """n positive samples around median_ms: Gaussian noise of relative sd `noise`, or with
    heavy=True a lognormal body plus Pareto-tailed spikes (about 1 sample in 10)."""
    rng = np.random.default_rng(seed)
    if heavy:
        body = rng.lognormal(0.0, noise, n)
        spikes = rng.random(n) < 0.1
        body[spikes] *= 1 + rng.pareto(1.5, spikes.sum())
        xs = body
    else:
        xs = 1 + noise * rng.standard_normal(n)
    xs = np.abs(xs) * median_ms / np.median(np.abs(xs))
    return [float(x) for x in xs]


def row(impl: str = "triton", case_id: str = "N=64", technique: str = "fake", dtype: str = "float32",
        direction: str = "fwd", xs: list[float] | None = None, **changes) -> Row:
    xs = samples() if xs is None else xs
    status = changes.pop("status", "ok")
    timed = status == "ok"
    base = Row(technique=technique, impl=impl, role="triton", case=json.dumps({"N": int(case_id.split("=")[1])})
               if case_id.startswith("N=") else "{}", case_id=case_id, dtype=dtype, direction=direction, status=status,
               median_ms=float(np.median(xs)) if timed else None, p10_ms=float(np.quantile(xs, 0.1)) if timed else None,
               p90_ms=float(np.quantile(xs, 0.9)) if timed else None, n_samples=len(xs) if timed else None,
               samples_ms=list(xs) if timed else [], timing_mode="cuda-events" if timed else "",
               is_performance_figure=timed, correct=True if timed else None, rel_err=1e-3 if timed else None,
               bitwise_repeatable=True if timed else None, peak_bytes=1 << 20 if timed else None,
               sm_clock_mhz_before=1980.0 if timed else None, sm_clock_mhz_after=1980.0 if timed else None,
               throttled=False if timed else None, suite="fakesuite", tier="quick", gpu=GPU, device=DEVICE,
               compute_capability="9.0", driver="580", cuda="13.0", torch="2.11.0", triton="3.6.0",
               git_sha="0123456789ab", git_dirty=False, impl_code_hash="c0de")
    if status == "incorrect":
        base = replace(base, correct=False, reason="out: rel_err 0.1 against the reference's own 0.001")
    return replace(base, **changes)


def write(path: Path, rows: list[Row], sidecar: bool = True, **env) -> Path:
    """Write rows as a result table (and its sidecar) at path; env overrides the sidecar's environment."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([r.to_dict() for r in rows], columns=list(COLUMNS)).to_parquet(path, index=False)
    if sidecar:
        first = rows[0]
        environment = {"device": first.device, "gpu": first.gpu, "compute_capability": first.compute_capability,
                       "driver": first.driver, "cuda": first.cuda, "torch": first.torch, "triton": first.triton,
                       "git_sha": first.git_sha, "git_dirty": False, "host_hash": "abc", "python": "3.11.0",
                       "platform": "Linux", "interpreter": False} | env
        path.with_suffix(".json").write_text(json.dumps({
            "run_id": path.stem, "suite": first.suite, "tier": first.tier,
            "selection": {"impls": [], "dtypes": [], "base_seed": 1}, "environment": environment,
            "ceilings": {}, "started": "20261125T140725Z", "schema_version": SCHEMA_VERSION, "rows": len(rows),
        }))
    return path
