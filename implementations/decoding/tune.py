"""Sweep the decoding kernel's launch shapes on this GPU: the evidence behind CONFIGS in
triton_decoding.py.

    python -m implementations.decoding.tune [--budget-s 180] [--csv sweep.csv]

Each (tile, warps, stages, programs per SM) is replayed from a CUDA graph with the harness's
timer (L2 flushed), as the suite times it, and checked against the reference, so a launch
shape cannot win by being wrong.
GB/s counts the KV cache read once, as the suite's table does; SDPA's flash and cuDNN
backends are timed on the same inputs where they take the case.
"""

from __future__ import annotations

import itertools
import math
import sys
import time

import torch
import torch.nn.functional as F

from harness.timing import Timer, TimingPolicy
from implementations.decoding import reference
from implementations.decoding.triton_decoding import DecodeConfig, decode_attention, workspace_size
from implementations.sweep_cli import error_note, sweep_main

SHAPES = [  # B, H, H_KV, N, page
    (1, 32, 8, 32768, 0),
    (1, 32, 8, 131072, 0),
    (16, 32, 8, 8192, 0),
    (16, 32, 8, 8192, 16),
]
HEAD_DIM = 128
SPACE = [DecodeConfig(block_n, warps, stages, per_sm)
         for block_n, warps, stages, per_sm in itertools.product((32, 64), (2, 4), (3, 4), (2, 4))]


def _inputs(batch: int, heads: int, kv_heads: int, n_ctx: int, page: int):
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(batch, heads, 1, HEAD_DIM, device="cuda", generator=gen).to(torch.bfloat16)
    if page:
        pages = batch * n_ctx // page
        k, v = (torch.randn(pages, page, kv_heads, HEAD_DIM, device="cuda", generator=gen).to(torch.bfloat16)
                for _ in range(2))
        table = torch.randperm(pages, device="cuda").view(batch, -1).int()
    else:
        k, v = (torch.randn(batch, kv_heads, n_ctx, HEAD_DIM, device="cuda", generator=gen).to(torch.bfloat16)
                for _ in range(2))
        table = None
    lens = torch.full((batch,), n_ctx, device="cuda", dtype=torch.int32)
    return q, k, v, lens, table


def sweep(budget_s: float) -> list[dict]:
    timer = Timer(torch.device("cuda"), TimingPolicy(min_samples=20, min_seconds=0.05, max_seconds=0.3,
                                                     target_rel_ci=0.01))
    deadline = time.monotonic() + budget_s
    rows = []
    for batch, heads, kv_heads, n_ctx, page in SHAPES:
        q, k, v, lens, table = _inputs(batch, heads, kv_heads, n_ctx, page)
        kv_bytes = 2 * batch * kv_heads * n_ctx * HEAD_DIM * 2
        workspace = torch.zeros(workspace_size(batch, kv_heads), device="cuda", dtype=torch.int32)  # kept, as the suite's
        truth = reference.decode_attention(q.double(), k.double(), v.double(), lens, table).float()
        shape = f"B{batch} H{heads}/{kv_heads} N{n_ctx} page{page}"
        candidates = [(f"triton {c.block_n}x{c.warps}w{c.stages}s {c.programs_per_sm}/SM", c) for c in SPACE]
        if not page:
            candidates = [("sdpa-flash", "FLASH_ATTENTION"), ("sdpa-cudnn", "CUDNN_ATTENTION")] + candidates
        for name, what in candidates:
            if time.monotonic() > deadline:
                return rows
            row = {"shape": shape, "impl": name, "ms": math.nan, "gbps": math.nan, "note": ""}
            try:
                if isinstance(what, DecodeConfig):
                    run = lambda c=what: decode_attention(q, k, v, lens, table, config=c, workspace=workspace)  # noqa: E731
                else:
                    from torch.nn.attention import SDPBackend, sdpa_kernel

                    def run(backend=what):
                        with sdpa_kernel(getattr(SDPBackend, backend)):
                            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                err = ((run().float() - truth).norm() / truth.norm()).item()
                if not err < 2e-2:
                    row["note"] = f"rel err {err:.2e}"
                ms = timer.time(run, graph=True).median_ms
                row["ms"], row["gbps"] = ms, kv_bytes / (ms * 1e-3) / 1e9
            except Exception as e:  # out of resources, a refusal: recorded, not fatal
                row["note"] = error_note(e)
            rows.append(row)
            print(f"{shape:28} {name:32} {row['ms']:8.4f} ms {row['gbps']:7.0f} GB/s {row['note']}", flush=True)
    return rows


def summarize(rows: list[dict]) -> None:
    print("\nfastest per shape:")
    for shape, group in itertools.groupby(rows, key=lambda r: r["shape"]):
        ranked = sorted((r for r in group if not math.isnan(r["ms"]) and not r["note"]), key=lambda r: r["ms"])
        print(shape, [(r["impl"], round(r["gbps"])) for r in ranked[:6]])

def main() -> int:
    return sweep_main(__doc__.splitlines()[0], 180.0, lambda args: sweep(args.budget_s), summarize)


if __name__ == "__main__":
    sys.exit(main())
