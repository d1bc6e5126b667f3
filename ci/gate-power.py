"""How often `bench gate`'s rule calls a slowdown of a given size, on the noise of real GPU
samples (docs/gating.md, "What the gate detects and what it misses").

Each timed row of the given tables is split into two pseudo-runs: its samples in time order,
the first half as the baseline and the second half, every sample times (1 + s), as the
candidate. harness.compare.judge, with the default rule, gives each pair its verdict. With
s = 0 this is a within-run A/A: its false alarms are a lower bound on a run-to-run A/A's,
which also sees the GPU's state change between runs. Halves have half the samples, so a
whole run's intervals are narrower and its power higher than here.

    PYTHONPATH=. python ci/gate-power.py results/attention/*/*.parquet [--slowdowns 0,0.03,0.05,0.1]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

from harness import results
from harness.compare import Rule, judge, rows_by_key

VERDICTS = ("same", "inconclusive", "slower", "faster", "invalid")


def verdicts(tables: list[Path], slowdown: float, rule: Rule) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for table in tables:
        for key, row in rows_by_key(results.read_table(table)).items():
            samples = np.asarray(list(row.get("samples_ms") or []), dtype=np.float64)
            if row.get("status") != "ok" or len(samples) < 2 * rule.min_samples:
                continue
            half = len(samples) // 2
            base = {**row, "samples_ms": samples[:half].tolist()}
            cand = {**row, "samples_ms": (samples[half:2 * half] * (1 + slowdown)).tolist()}
            counts[judge(row.get("suite") or "", key, base, cand, rule).verdict] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", type=Path, help="result tables (.parquet) with raw samples")
    parser.add_argument("--slowdowns", default="0,0.02,0.05,0.1,0.2", help="comma-separated fractions")
    args = parser.parse_args()
    rule = Rule()
    print(f"rule: {rule.describe()}")
    print("| injected slowdown | cases | " + " | ".join(VERDICTS) + " |")
    print("|---|---|" + "---|" * len(VERDICTS))
    for slowdown in (float(s) for s in args.slowdowns.split(",")):
        counts = verdicts(args.tables, slowdown, rule)
        total = sum(counts.values())
        cells = " | ".join(f"{counts[v]} ({counts[v] / total:.0%})" if total else "0" for v in VERDICTS)
        print(f"| {slowdown:.0%} | {total} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
