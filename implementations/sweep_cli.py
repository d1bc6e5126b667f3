"""The command line every technique's tuning sweep (`python -m implementations.<name>.tune`)
shares: --budget-s and --csv, a check for a GPU, the sweep, its rows written as CSV, then
the sweep's own summary. Not a technique: it registers nothing."""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Callable

import torch

Rows = list[dict]


def sweep_main(description: str, default_budget_s: float, sweep: Callable[[argparse.Namespace], Rows],
               summarize: Callable[[Rows], None],
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--budget-s", type=float, default=default_budget_s, help="stop the sweep after this long")
    parser.add_argument("--csv", default=None, help="also write every row to this CSV file")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: the sweep needs a CUDA GPU", file=sys.stderr)
        return 2
    rows = sweep(args)
    if args.csv and rows:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    summarize(rows)
    return 0
