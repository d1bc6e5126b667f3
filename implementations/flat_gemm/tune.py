"""Sweep the flat GEMM's plans on this GPU: the evidence behind CONFIGS, GEMV_MAX_M and the
split-K rule in triton_flat_gemm.py.

    python -m implementations.flat_gemm.tune [--budget-s 150] [--csv sweep.csv]
        [--weights 4096x14336,...] [--rows 1,16] [--block-n 32,64] [--warps 4,8] [--stages 3,4] [--splits 1,2]
        [--balanced 1,2]

--balanced P adds the flat plans that cut N into P equal row ranges an SM (the tile the
next power of two of a range), each with the dot as x @ W^T and swapped (W @ x^T).

Every plan is replayed from a CUDA graph with the harness's timer (L2 flushed), as the suite
times it, checked against cuBLAS first, and ranked beside cuBLAS (torch.matmul) and the plan
the heuristic picks.
"""

from __future__ import annotations

import itertools
import math
import sys
import time

import torch
import triton

from harness.timing import Timer, TimingPolicy
from implementations.flat_gemm.triton_flat_gemm import Plan, choose_dataflow, flat_gemm
from implementations.triton_support import sm_count
from implementations.sweep_cli import error_note, sweep_main

WEIGHTS = [(4096, 4096), (4096, 14336), (14336, 4096)]  # (K, N) of a Llama-3-8B layer
ROWS = [1, 4, 16, 64]
BLOCK_N = (32, 64, 128)
BLOCK_K = (64, 128, 256)
SPLITS = (1, 2, 4, 8)


def _plans(m: int, n: int, sms: int, block_n: tuple[int, ...], warps: tuple[int, ...], stages: tuple[int, ...],
           splits: tuple[int, ...], balanced: tuple[int, ...] = ()) -> list[Plan]:
    plans = []
    block_m = max(16, triton.next_power_of_2(m))
    for block_n, block_k, stage_count, warp_count, split in itertools.product(block_n, BLOCK_K, stages, warps, splits):
        if m <= 4:
            gemv_m = triton.next_power_of_2(m)
            plans.append(Plan("gemv", gemv_m, max(1, block_n // gemv_m), block_k, split, warp_count, stage_count))
        plans.append(Plan("flat", block_m, block_n, block_k, split, warp_count, stage_count))
    for per_sm, block_k, stage_count, warp_count, swap in itertools.product(balanced, BLOCK_K, stages, warps, (False, True)):
        rows = triton.cdiv(n, per_sm * sms)
        plans.append(Plan("flat", block_m, max(16, triton.next_power_of_2(rows)), block_k, 1, warp_count, stage_count, rows, swap))
    return plans


def sweep(budget_s: float, weights: list[tuple[int, int]] = WEIGHTS, rows_of_x: list[int] = ROWS,
          block_n: tuple[int, ...] = BLOCK_N, warps: tuple[int, ...] = (4,), stages: tuple[int, ...] = (3, 4),
          splits: tuple[int, ...] = SPLITS, balanced: tuple[int, ...] = ()) -> list[dict]:
    timer = Timer(torch.device("cuda"), TimingPolicy(min_samples=20, min_seconds=0.02, max_seconds=0.2,
                                                     target_rel_ci=0.01))
    deadline = time.monotonic() + budget_s
    rows = []
    for (k, n), m in itertools.product(weights, rows_of_x):
        gen = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(m, k, device="cuda", generator=gen).to(torch.bfloat16)
        w = (torch.randn(n, k, device="cuda", generator=gen) / math.sqrt(k)).to(torch.bfloat16)
        truth = torch.matmul(x.double(), w.double().T)
        weight_bytes = n * k * 2
        chosen = choose_dataflow(m, n, k, sm_count(x.device), x.dtype)
        plans = _plans(m, n, sm_count(x.device), block_n, warps, stages, splits, balanced)
        candidates = [("cublas", None), (f"heuristic {chosen}", chosen)] + [(str(p), p) for p in plans]
        for name, plan in candidates:
            if time.monotonic() > deadline:
                return rows
            row = {"K": k, "N": n, "M": m, "impl": name, "us": math.nan, "gbps": math.nan, "note": ""}
            run = (lambda: torch.matmul(x, w.T)) if plan is None else (lambda p=plan: flat_gemm(x, w, p))
            try:
                err = ((run().double() - truth).norm() / truth.norm()).item()
                if not err < 1e-2:
                    row["note"] = f"rel err {err:.2e}"
                us = timer.time(run, graph=True).median_ms * 1e3
                row["us"], row["gbps"] = us, weight_bytes / us / 1e3
            except Exception as e:  # out of resources, a compiler refusal: recorded, not fatal
                row["note"] = error_note(e)
            rows.append(row)
    return rows


def summarize(rows: list[dict]) -> None:
    print("fastest per shape (us, GB/s of W):")
    for key, group in itertools.groupby(rows, key=lambda r: (r["K"], r["N"], r["M"])):
        group = list(group)
        ranked = sorted((r for r in group if not math.isnan(r["us"]) and not r["note"]), key=lambda r: r["us"])
        fixed = [r for r in group if r["impl"] == "cublas" or r["impl"].startswith("heuristic")]
        print(key, [(r["impl"], round(r["us"], 1), round(r["gbps"])) for r in fixed + ranked[:4]])


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def _add_arguments(parser) -> None:
    parser.add_argument("--weights", type=lambda t: [tuple(map(int, kn.split("x"))) for kn in t.split(",")],
                        default=WEIGHTS, help="K x N of W, comma-separated (default: a Llama-3-8B layer's three)")
    parser.add_argument("--rows", type=_ints, default=ROWS, help="M values, comma-separated")
    parser.add_argument("--block-n", type=_ints, default=list(BLOCK_N), help="BLOCK_N values, comma-separated")
    parser.add_argument("--warps", type=_ints, default=[4], help="warps per program, comma-separated")
    parser.add_argument("--stages", type=_ints, default=[3, 4], help="pipeline stages, comma-separated")
    parser.add_argument("--splits", type=_ints, default=list(SPLITS), help="K splits, comma-separated")
    parser.add_argument("--balanced", type=_ints, default=[], help="also N in equal ranges, this many an SM (comma-separated)")


def main() -> int:
    return sweep_main(__doc__.splitlines()[0], 150.0,
                      lambda args: sweep(args.budget_s, args.weights, args.rows, tuple(args.block_n),
                                         tuple(args.warps), tuple(args.stages), tuple(args.splits),
                                         tuple(args.balanced)),
                      summarize, add_arguments=_add_arguments)


if __name__ == "__main__":
    sys.exit(main())
