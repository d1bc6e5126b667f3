"""ci/gate-power.py: the gate's rule on two halves of each row's own samples, one of them slowed."""

from __future__ import annotations

import runpy
from pathlib import Path

from harness.compare import Rule
from tests.harness.gating_tables import row, samples, write

gate_power = runpy.run_path(str(Path(__file__).resolve().parents[2] / "ci" / "gate-power.py"))


def test_a_steady_row_is_same_unslowed_and_slower_slowed_by_a_tenth(tmp_path):
    table = write(tmp_path / "run.parquet", [row("triton", f"N={n}", xs=samples(1.0, n=400, noise=0.01, seed=n))
                                             for n in (16, 32, 64)] + [row("broken", "N=64", status="crashed")])
    assert gate_power["verdicts"]([table], 0.0, Rule()) == {"same": 3}
    assert gate_power["verdicts"]([table], 0.10, Rule()) == {"slower": 3}


def test_a_drift_inside_the_run_is_a_false_alarm_and_too_few_samples_are_skipped(tmp_path):
    drifting = samples(1.0, n=400, noise=0.01, seed=1)
    drifting = drifting[:200] + [x * 1.2 for x in drifting[200:]]  # the second half 20% slower
    table = write(tmp_path / "run.parquet", [row("triton", "N=16", xs=drifting),
                                             row("triton", "N=32", xs=samples(1.0, n=9, seed=2))])
    assert gate_power["verdicts"]([table], 0.0, Rule()) == {"slower": 1}
