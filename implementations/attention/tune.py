"""Sweep the attention kernels' tilings on this GPU: the evidence behind the candidate lists
in triton_forward.py and triton_backward.py (the autotuner then picks among those).

    python -m implementations.attention.tune [--budget-s 240] [--csv sweep.csv]

Each tiling is timed with the harness's timer (CUDA events, L2 flushed) and checked
against the first tiling that ran, so a tiling cannot win by being wrong.
"""

from __future__ import annotations

import itertools
import math
import sys
import time

import torch

from harness.timing import Timer, TimingPolicy
from implementations.attention import triton_backward, triton_forward
from implementations.attention.triton_common import tiling as make_tiling
from implementations.sweep_cli import error_note, sweep_main

SHAPES = [  # B, H, N, D, causal
    (4, 16, 4096, 128, False),
    (4, 16, 4096, 128, True),
    (8, 16, 2048, 64, False),
    (8, 16, 2048, 64, True),
]
# (block_m, block_n, warps, stages)
FORWARD_SPACE = [(128, 64, 8, s) for s in (2, 3, 4)] + [(128, 128, 8, s) for s in (2, 3)] + \
    [(128, 64, 4, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 64, 4, 4), (64, 128, 4, 2), (128, 128, 16, 2)]
DKDV_SPACE = [(bm, bn, w, s) for bm, bn in ((64, 128), (32, 128), (64, 64), (32, 64), (16, 128))
              for w in (4, 8) for s in (2, 3) if not (bn == 64 and w == 8)]
DQ_SPACE = [(bm, bn, w, s) for bm, bn in ((128, 64), (128, 32), (64, 64), (64, 32), (128, 128))
            for w in (4, 8) for s in (2, 3) if not (bm == 64 and w == 8)]


def sweep(budget_s: float, head_dims: set[int] | None = None) -> list[dict]:
    timer = Timer(torch.device("cuda"), TimingPolicy(min_samples=10, min_seconds=0.05, max_seconds=0.5,
                                                     target_rel_ci=0.01))
    deadline = time.monotonic() + budget_s
    rows = []
    for batch, heads, n_ctx, head_dim, causal in SHAPES:
        if head_dims and head_dim not in head_dims:
            continue
        gen = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (torch.randn(batch, heads, n_ctx, head_dim, device="cuda", generator=gen).to(torch.bfloat16)
                       for _ in range(4))
        scale = 1 / math.sqrt(head_dim)
        pairs = n_ctx * (n_ctx + 1) // 2 if causal else n_ctx * n_ctx
        matmul_flops = 2.0 * batch * heads * pairs * head_dim  # one N x N x D product
        out, lse = triton_forward.forward(q, k, v, causal, scale)
        delta = triton_backward.row_dot(out, do)
        kernels = {
            "forward": (FORWARD_SPACE, 2, lambda c: triton_forward.forward(q, k, v, causal, scale, c)[0]),
            "dkdv": (DKDV_SPACE, 4, lambda c: triton_backward.dkdv(q, k, v, do, lse, delta, causal, scale, c)),
            "dq": (DQ_SPACE, 3, lambda c: triton_backward.dq(q, k, v, do, lse, delta, causal, scale, c)),
        }
        for name, (space, matmuls, run) in kernels.items():
            baseline = None
            for tiling in space:
                if time.monotonic() > deadline:
                    return rows
                row = {"kernel": name, "B": batch, "H": heads, "N": n_ctx, "D": head_dim, "causal": causal,
                       "tiling": "x".join(map(str, tiling)), "ms": math.nan, "tflops": math.nan, "note": ""}
                try:
                    config = make_tiling(*tiling)
                    result = _flat(run(config))
                    if baseline is None:
                        baseline = result
                    diff = ((result.float() - baseline.float()).norm() / baseline.float().norm()).item()
                    if not diff < 2e-2:
                        row["note"] = f"differs from the first tiling by {diff:.2e}"
                    ms = timer.time(lambda: run(config)).median_ms
                    row["ms"], row["tflops"] = ms, matmuls * matmul_flops / (ms * 1e-3) / 1e12
                except Exception as e:  # out of shared memory, a compiler refusal: recorded, not fatal
                    row["note"] = error_note(e)
                rows.append(row)
                print(f"{name:8} B{batch} H{heads} N{n_ctx} D{head_dim} causal={causal!s:5} {row['tiling']:14} "
                      f"{row['ms']:8.3f} ms {row['tflops']:7.1f} TFLOP/s {row['note']}", flush=True)
    return rows


def _flat(result) -> torch.Tensor:
    parts = result if isinstance(result, tuple) else (result,)
    return torch.cat([p.flatten().float() for p in parts])


def summarize(rows: list[dict]) -> None:
    print("\nbest tilings:")
    keyed = sorted(rows, key=lambda r: (r["kernel"], r["N"], r["D"], r["causal"]))
    for key, group in itertools.groupby(keyed, key=lambda r: (r["kernel"], r["N"], r["D"], r["causal"])):
        ranked = sorted((r for r in group if not math.isnan(r["ms"]) and not r["note"]), key=lambda r: r["ms"])
        print(key, [(r["tiling"], round(r["tflops"])) for r in ranked[:4]])

def add_arguments(parser) -> None:
    parser.add_argument("--head-dim", type=int, action="append", help="only shapes of this head dim")

def main() -> int:
    return sweep_main(__doc__.splitlines()[0], 240.0, lambda args: sweep(args.budget_s, set(args.head_dim or [])), summarize, add_arguments)


if __name__ == "__main__":
    sys.exit(main())
