"""Summaries of a result table: the rich table at the end of a run, `bench show`, and the
markdown tables in docs/. A summary reads the table; it never re-runs anything."""

from __future__ import annotations

import math

import pandas as pd
from rich.table import Table

SUMMARY_COLUMNS = ("technique", "case", "dtype", "dir", "impl", "status", "median ms", "p10-p90 ms", "TFLOP/s", "GB/s",
                   "of peak", "peak MiB", "rel err", "repeat", "triton speed-up")


NOT_HERE = ("unavailable",)


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per row that ran or was refused, formatted; rows of implementations that
    are unavailable on this machine are left out (see `unavailable`). `triton speed-up` is
    this row's median over the Triton implementation's median in the same unit (only
    between correct rows timed on a GPU)."""
    lines = []
    frame = frame[~frame["status"].isin(NOT_HERE)]
    for _, group in frame.groupby(["technique", "case_id", "dtype", "direction"], sort=False):
        triton_ok = group[(group.role == "triton") & (group.status == "ok")]
        triton_ms = triton_ok.median_ms.min() if len(triton_ok) else math.nan
        for _, row in group.iterrows():
            row = row.to_dict()  # plain dict: a Series would answer row.dtype with its own dtype
            timed = row["status"] == "ok" and _num(row["median_ms"])
            perf = bool(row["is_performance_figure"])
            lines.append({
                "technique": row["technique"],
                "case": row["case_id"],
                "dtype": row["dtype"],
                "dir": row["direction"],
                "impl": row["impl"],
                "status": row["status"] if row["status"] == "ok" else f"{row['status']}: {row['reason']}",
                "median ms": f"{row['median_ms']:.3f}" + ("" if perf else " (interp.)") if timed else "",
                "p10-p90 ms": f"{row['p10_ms']:.3f}-{row['p90_ms']:.3f}" if timed else "",
                "TFLOP/s": f"{row['tflops']:.1f}" if _num(row["tflops"]) else "",
                "GB/s": f"{row['gbps']:.0f}" if _num(row["gbps"]) else "",
                "of peak": f"{row['frac_of_peak']:.0%}" if _num(row["frac_of_peak"]) else "",
                "peak MiB": f"{row['peak_bytes'] / 2**20:.0f}" if _num(row["peak_bytes"]) else "",
                "rel err": f"{row['rel_err']:.2e}" if _num(row["rel_err"]) else "",
                "repeat": {True: "bitwise", False: "differs"}.get(_bool(row["bitwise_repeatable"]), ""),
                "triton speed-up": f"{row['median_ms'] / triton_ms:.2f}x"
                if timed and perf and row["role"] != "triton" and not math.isnan(triton_ms) else "",
            })
    return pd.DataFrame(lines, columns=list(SUMMARY_COLUMNS))


def unavailable(frame: pd.DataFrame) -> list[str]:
    """'impl: reason' for each implementation that could not run on this machine."""
    rows = frame[frame["status"].isin(NOT_HERE)].drop_duplicates("impl")
    return [f"{r['impl']}: {r['reason']}" for _, r in rows.iterrows()]


def rich_table(summary: pd.DataFrame, title: str = "") -> Table:
    table = Table(title=title, show_lines=False)
    for column in summary.columns:
        table.add_column(column, overflow="fold", max_width=60 if column == "status" else None)
    for _, line in summary.iterrows():
        style = None if line.status == "ok" else ("dim" if line.status.startswith(("unavailable", "unsupported")) else "red")
        table.add_row(*[str(v) for v in line], style=style)
    return table


def markdown(summary: pd.DataFrame) -> str:
    header = "| " + " | ".join(summary.columns) + " |"
    rule = "|" + "|".join(" --- " for _ in summary.columns) + "|"
    body = ["| " + " | ".join(str(v).replace("|", "/") for v in line) + " |" for _, line in summary.iterrows()]
    return "\n".join([header, rule, *body]) + "\n"


def _num(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _bool(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else bool(value)
