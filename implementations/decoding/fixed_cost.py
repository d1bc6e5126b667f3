"""What a batch-1 decode pays once, whatever its cache length: the evidence behind the fixed
cost in docs/results/decoding.md.

    python -m implementations.decoding.fixed_cost [--budget-s 120] [--csv fixed.csv]

Every row is timed as the suite times it (CUDA-graph replay, L2 flushed before each) on the
batch-1 shape of issue 3 (32 query over 8 KV heads, D128, bf16) at 32K, 64K and 128K keys;
a least-squares line, time = fixed + bytes / rate, through each row's three medians splits
what the row pays once from what it streams. The rows, from nothing up to the decode:

- empty: a kernel with the decode's grid that does nothing (graph launch, the events, the
  grid's start and end);
- read (decode's grid): K and V read in the decode's chunks and tiles and summed, no math
  (the cheapest kernel of the decode's shape that reads the cache once);
- read (torch.sum): the same bytes summed by one torch reduction (the harness's read ceiling);
- split-kv / async-softmax: the suite's kernels, each with its workspace kept across calls;
  split-kv (fresh workspace): zeroing a new one every call, as before it could be kept;
- cudnn: SDPA's cuDNN backend, the best peer at 32K.
"""

from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from harness.timing import Timer, TimingPolicy
from implementations.decoding.triton_decoding import CONFIGS, choose_splits, decode_attention, workspace_size
from implementations.sweep_cli import error_note, sweep_main
from implementations.triton_support import architecture

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
LENGTHS = (32768, 65536, 131072)


@triton.jit
def _nothing_kernel(Out):
    pass


@triton.jit
def _read_kernel(K, V, Out, length, num_splits, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Sum chunk `split` of KV head `head` ([length, HEAD_DIM] rows of K and V) tile by tile."""
    head = tl.program_id(0)
    split = tl.program_id(1)
    chunk = tl.cdiv(tl.cdiv(length, num_splits), BLOCK_N) * BLOCK_N
    start = split * chunk
    end = tl.minimum(start + chunk, length)
    dims = tl.arange(0, HEAD_DIM)
    total = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for tile in range(start, end, BLOCK_N):
        tokens = tile + tl.arange(0, BLOCK_N)
        offsets = (head * length + tokens).to(tl.int64)[:, None] * HEAD_DIM + dims[None, :]
        in_range = (tokens < end)[:, None]
        total += tl.load(K + offsets, mask=in_range, other=0.0).to(tl.float32)
        total += tl.load(V + offsets, mask=in_range, other=0.0).to(tl.float32)
    tl.store(Out + head * num_splits + split, tl.sum(tl.sum(total, 1), 0))


def _rows_at(length: int, timer: Timer) -> list[tuple[str, float]]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    kv = torch.randn(2, 1, KV_HEADS, length, HEAD_DIM, device="cuda", generator=gen).to(torch.bfloat16)
    k, v = kv[0], kv[1]
    q = torch.randn(1, HEADS, 1, HEAD_DIM, device="cuda", generator=gen).to(torch.bfloat16)
    lens = torch.full((1,), length, device="cuda", dtype=torch.int32)
    config = CONFIGS[architecture()]
    sm_count = torch.cuda.get_device_properties(0).multi_processor_count
    splits = choose_splits(KV_HEADS, length, config.block_n, sm_count, config.programs_per_sm)
    sums = torch.empty(KV_HEADS * splits, device="cuda")
    total = torch.empty((), device="cuda", dtype=torch.float32)
    workspace = torch.zeros(workspace_size(1, KV_HEADS), device="cuda", dtype=torch.int32)
    grid = (KV_HEADS, splits)

    def cudnn():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    candidates = [
        ("empty", lambda: _nothing_kernel[grid](sums, num_warps=config.warps)),
        ("read (decode's grid)", lambda: _read_kernel[grid](k, v, sums, length, splits, BLOCK_N=config.block_n,
                                                            HEAD_DIM=HEAD_DIM, num_warps=config.warps,
                                                            num_stages=config.stages)),
        ("read (torch.sum)", lambda: torch.sum(kv.view(-1), dim=0, dtype=torch.float32, out=total)),
        ("split-kv", lambda: decode_attention(q, k, v, lens, workspace=workspace)),
        ("async-softmax", lambda: decode_attention(q, k, v, lens, variant="async-softmax", workspace=workspace)),
        ("split-kv (fresh workspace)", lambda: decode_attention(q, k, v, lens)),
        ("cudnn", cudnn),
    ]
    rows = []
    for name, run in candidates:
        try:
            rows.append((name, timer.time(run, graph=True).median_ms * 1e3))
        except Exception as e:  # a backend that refuses the case: reported, the others still timed
            print(f"N={length} {name}: {error_note(e)}", flush=True)
    return rows


def sweep(budget_s: float) -> list[dict]:
    timer = Timer(torch.device("cuda"), TimingPolicy(min_samples=50, min_seconds=0.1, max_seconds=budget_s / 30,
                                                     target_rel_ci=0.005))
    rows = []
    for length in LENGTHS:
        kv_bytes = 2 * KV_HEADS * length * HEAD_DIM * 2
        for name, us in _rows_at(length, timer):
            rows.append({"impl": name, "N": length, "us": us, "gbps": kv_bytes / (us * 1e-6) / 1e9})
            print(f"N={length:6} {name:28} {us:8.2f} us {rows[-1]['gbps']:6.0f} GB/s", flush=True)
    return rows


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares time_us = fixed_us + bytes / rate through (bytes, us) points: (fixed_us, GB/s)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    return mean_y - slope * mean_x, 1e-3 / slope if slope > 0 else float("inf")


def summarize(rows: list[dict]) -> None:
    print("\nfixed cost and stream rate (least squares over the lengths):")
    for name in dict.fromkeys(r["impl"] for r in rows):
        points = [(2 * KV_HEADS * r["N"] * HEAD_DIM * 2, r["us"]) for r in rows if r["impl"] == name]
        if len(points) < 2:
            continue
        fixed, rate = fit(points)
        at_32k = next((r["us"] for r in rows if r["impl"] == name and r["N"] == LENGTHS[0]), float("nan"))
        print(f"{name:28} fixed {fixed:6.2f} us  rate {rate:7.0f} GB/s  at 32K {at_32k:7.2f} us")


def main() -> int:
    return sweep_main(__doc__.splitlines()[0], 120.0, lambda args: sweep(args.budget_s), summarize)


if __name__ == "__main__":
    sys.exit(main())
