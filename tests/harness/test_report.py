"""The summary of a result table: formatted columns, throughput as TFLOP/s and as GB/s, and
the Triton speed-up computed between correct rows of one unit."""

from __future__ import annotations

import pandas as pd

from harness.report import SUMMARY_COLUMNS, summarize
from harness.results import Row


def _row(impl: str, role: str, median_ms: float, gbps: float) -> dict:
    row = Row(technique="decoding", impl=impl, role=role, case="{}", case_id="N=8", dtype="bfloat16",
              direction="fwd", status="ok", median_ms=median_ms, p10_ms=median_ms, p90_ms=median_ms,
              gbps=gbps, tflops=0.5, frac_of_peak=gbps / 3000, is_performance_figure=True)
    return row.to_dict()


def test_summary_shows_gbps_and_the_speed_up_over_triton():
    frame = pd.DataFrame([_row("triton", "triton", 0.050, 2700.0), _row("peer", "peer", 0.060, 2250.0)])
    summary = summarize(frame)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    peer = summary[summary.impl == "peer"].iloc[0]
    assert peer["GB/s"] == "2250" and peer["of peak"] == "75%" and peer["triton speed-up"] == "1.20x"
    assert summary[summary.impl == "triton"].iloc[0]["triton speed-up"] == ""
