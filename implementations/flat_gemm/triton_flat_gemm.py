"""FlashDecoding++'s flat GEMM in Triton: y = x @ w.T for decode-time projections.

At decode time M (one row per sequence) is 1..64 while W [N, K] is a whole weight matrix.
A GEMM library pads M to its 64- or 128-row tile, so most tensor-core work multiplies
zeros, and the op is bound by reading W once anyway. FlashDecoding++ pads M only to 8
(Triton's tl.dot needs 16 rows, so 16, 32 or 64 here), double-buffers W, and picks a
dataflow per shape and hardware (`choose_dataflow`):

  gemv   the smallest M, no tensor cores: each program owns BLOCK_N rows of W and reduces
         them over K with a broadcast multiply and a float32 sum, for every row of x.
  flat   tl.dot tiles BLOCK_M x BLOCK_N x BLOCK_K, float32 accumulation.

Either splits K across programs when the M x N tiles alone are too few to fill the SMs:
each split writes float32 partials [SPLIT_K, M, N] and a second kernel sums them in a
fixed order, so results are bitwise repeatable (no atomics). When the tiles outnumber the
SMs instead (a wide N), Hopper's plan cuts N into equal row ranges, a whole number of them
an SM (a range need not be a power of two: its tile's spare rows are masked), and puts W's
rows on the MMA's 64-row side (W @ x^T) rather than x's few rows padded to 16. Plain pointer
loads with masks handle any M, N, K and any strides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import triton
import triton.language as tl

from implementations.triton_support import architecture, dot_precision, sm_count

Dataflow = Literal["gemv", "flat"]
DATAFLOWS: tuple[Dataflow, ...] = ("gemv", "flat")
DTYPES = (torch.bfloat16, torch.float16, torch.float32)

GEMV_MAX_M = 4  # the gemv dataflow's most rows a program (more rows loop over M blocks)
# The heuristic's gemv threshold per architecture: up to 4 rows a 16-row dot tile is >= 75%
# padding, the paper's case for CUDA cores. On an H100 the sweep (`python -m
# implementations.flat_gemm.tune`) found the opposite: at M = 1 and 4 on 4096x4096 the flat
# dataflow took 16.6 and 16.5 us, the best gemv 37 and 89 us. Hopper never picks gemv.
GEMV_UP_TO_M = {"sm90": 0, "sm100": 0}
GEMV_UP_TO_M_DEFAULT = GEMV_MAX_M
MIN_K_TILES_PER_SPLIT = 4  # each split keeps a few K tiles, so its loads still pipeline
MAX_SPLIT_K = 8  # bounds the partials' traffic (SPLIT_K x M x N float32, written and read)
BALANCED_MAX_ROWS = 64  # a balanced range's most rows of W (its tile: the next power of two)
BALANCED_MAX_M = 32  # past 32 rows of x, two 4-stage 64 x 128 pipelines overflow an SM's 228 KB


@dataclass(frozen=True)
class Tiles:
    block_n: int  # gemv: for M = 1, divided by BLOCK_M so the product tile keeps its size
    block_k: int  # for 2-byte elements; 4-byte ones take half, reading the same bytes a step
    warps: int
    stages: int  # >= 2 double-buffers W: the next tile loads while this one is multiplied
    balanced: bool = False  # flat, tiles outnumbering the SMs: N in equal ranges, a whole number an SM


# Tiles per architecture. Hopper's flat tiling won the H100 sweep (32 x 256 x 4 stages, no
# split: 16.5-16.8 us at M 1-64 on 4096x4096 against cuBLAS's 16.9-18.2). On a wide N
# (4096x14336, M 1-16) its 448 tiles lost to cuBLAS (45.0-45.6 us against 43.6-44.3 in one full
# tier); 264 balanced ranges of 55 rows, swapped, took 43.4-44.3 against 43.8-45.3 in three
# (docs/results/decoding.md; the tune command in `choose_dataflow`). The
# other entries are untuned starting points. The interpreter's are small: NumPy runs every
# program one after another.
CONFIGS: dict[str, dict[Dataflow, Tiles]] = {
    "interpreter": {"gemv": Tiles(64, 32, 4, 1), "flat": Tiles(32, 32, 4, 1)},
    "sm90": {"gemv": Tiles(64, 128, 4, 4), "flat": Tiles(32, 256, 4, 4, balanced=True)},
    "sm100": {"gemv": Tiles(64, 128, 4, 4), "flat": Tiles(32, 256, 4, 4, balanced=True)},
    "sm80": {"gemv": Tiles(64, 128, 4, 3), "flat": Tiles(64, 64, 4, 4)},
    "sm8x": {"gemv": Tiles(32, 128, 4, 2), "flat": Tiles(32, 64, 4, 3)},
    "other": {"gemv": Tiles(32, 64, 4, 2), "flat": Tiles(32, 64, 4, 2)},
}


@dataclass(frozen=True)
class Plan:
    """How one call runs: the dataflow, its tile, the K splits, warps and pipeline stages;
    each program's rows of W (None: the tile's BLOCK_N) and whether the dot runs W @ x^T."""

    dataflow: Dataflow
    block_m: int
    block_n: int
    block_k: int
    split_k: int = 1
    warps: int = 4
    stages: int = 1
    rows_per_program: int | None = None
    swap_ab: bool = False

    def __post_init__(self) -> None:
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of {DATAFLOWS}, got {self.dataflow!r}")
        blocks = (self.block_m, self.block_n, self.block_k)
        if any(b < 1 or b & (b - 1) for b in blocks):
            raise ValueError(f"block sizes must be powers of two, got {blocks}")
        if self.dataflow == "flat" and min(blocks) < 16:
            raise ValueError(f"the flat dataflow's tl.dot needs blocks of at least 16, got {blocks}")
        if self.split_k < 1 or self.warps < 1 or self.stages < 1:
            raise ValueError(f"split_k, warps and stages must be positive, got {self}")
        if self.rows_per_program is not None and not 1 <= self.rows_per_program <= self.block_n:
            raise ValueError(f"rows_per_program must be in 1..block_n ({self.block_n}), got {self.rows_per_program}")
        if self.swap_ab and self.dataflow != "flat":
            raise ValueError("swap_ab swaps tl.dot's operands: only the flat dataflow has a dot")

    @property
    def rows(self) -> int:
        """Rows of W (of y's columns) each program owns."""
        return self.rows_per_program or self.block_n


def choose_dataflow(M: int, N: int, K: int, sm_count: int, dtype: torch.dtype, *,
                    arch: str | None = None, dataflow: Dataflow | None = None) -> Plan:
    """The plan for y[M, N] = x[M, K] @ w[N, K].T; pure given `arch` (None: this machine's).

    M, arch      the dataflow (gemv when M <= GEMV_UP_TO_M for the arch, unless `dataflow`
                 forces one) and
                 BLOCK_M: gemv takes M's power of two up to GEMV_MAX_M (more rows loop over
                 M blocks); flat the smallest dot tile covering M, 16, 32 or 64.
    arch         BLOCK_N, BLOCK_K, warps and stages (CONFIGS); gemv divides BLOCK_N by BLOCK_M
                 so its BLOCK_M x BLOCK_N x BLOCK_K product stays one size in registers.
    dtype        BLOCK_K: 4-byte elements halve it, so a K step reads the same bytes of W.
    N, K         tiles never exceed N's or K's power of two (at least 16).
    N, sm_count  BLOCK_K halves when the tiles outnumber the SMs: a smaller pipeline lets
                 twice the programs share an SM (H100, 4096 x 14336 at M = 1: 50 us with
                 256-wide K steps, 44.6 with 128, cuBLAS 44.1). And where the arch's flat
                 tiles say `balanced` (Hopper) and M <= BALANCED_MAX_M, N is cut into equal
                 row ranges, as few as keep each within BALANCED_MAX_ROWS in a whole number
                 of ranges an SM, so no SM gets a range more than another; a tile of 64 rows
                 swaps the dot's operands so W's rows fill the MMA's 64-row side. H100,
                 `python -m implementations.flat_gemm.tune --weights 4096x14336,4096x12288,
                 4096x6144 --rows 1,16,32 --block-n 32 --warps 4 --stages 4 --splits 1
                 --balanced 1,2`: 4096 x 14336 (264 ranges of 55 rows) 43.8-44.4 us against
                 cuBLAS's 43.9-45.8 and 45.7 for 32-row tiles; 4096 x 6144 (132 of 47) 21.7
                 at M = 1, where two ranges an SM (24 rows) took 22.3 and cuBLAS 23.4.
    N, sm_count  split-K: when the M x N tiles are fewer than half the SMs, K is split to fill
                 them, at most MAX_SPLIT_K ways and only while each split keeps
                 MIN_K_TILES_PER_SPLIT tiles of K.
    """
    arch = architecture() if arch is None else arch
    dataflow = dataflow or ("gemv" if M <= GEMV_UP_TO_M.get(arch, GEMV_UP_TO_M_DEFAULT) else "flat")
    tiles = CONFIGS[arch][dataflow]
    block_k = tiles.block_k if dtype.itemsize <= 2 else max(16, tiles.block_k // 2)
    block_k = min(block_k, max(16, triton.next_power_of_2(K)))
    if dataflow == "gemv":
        block_m = min(triton.next_power_of_2(M), GEMV_MAX_M)
        block_n = max(1, tiles.block_n // block_m)
    else:
        block_m = min(max(16, triton.next_power_of_2(M)), 64)
        block_n = tiles.block_n
    block_n = min(block_n, max(16, triton.next_power_of_2(N)))
    programs = triton.cdiv(M, block_m) * triton.cdiv(N, block_n)
    rows_per_program, swap_ab = None, False
    if programs > sm_count:
        block_k = max(16, block_k // 2)
        if dataflow == "flat" and tiles.balanced and block_m <= BALANCED_MAX_M:
            ranges = sm_count * triton.cdiv(N, sm_count * BALANCED_MAX_ROWS)
            rows_per_program = triton.cdiv(N, ranges)
            block_n = max(16, triton.next_power_of_2(rows_per_program))
            swap_ab = block_n >= 64
    split_k = 1
    if programs < sm_count // 2:
        k_tiles = triton.cdiv(K, block_k)
        split_k = max(1, min(triton.cdiv(sm_count, programs), k_tiles // MIN_K_TILES_PER_SPLIT, MAX_SPLIT_K))
    return Plan(dataflow, block_m, block_n, block_k, split_k, tiles.warps, tiles.stages, rows_per_program, swap_ab)


@triton.jit
def _store_tile(OUT, acc, offs_m, offs_n, in_m, in_n, split, stride_os, stride_om, stride_on):
    """A tile of y (no split) or of the split's float32 partials, rows and columns outside
    the program's dropped."""
    ptrs = OUT + split * stride_os + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(ptrs, acc.to(OUT.dtype.element_ty), mask=in_m[:, None] & in_n[None, :])


@triton.jit
def _flat_gemm(X, W, OUT, M, N, K, ROWS_PER_PROGRAM, K_PER_SPLIT, stride_xm, stride_xk, stride_wn, stride_wk,
               stride_os, stride_om, stride_on,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
               DATAFLOW: tl.constexpr, BALANCED: tl.constexpr, SWAP_AB: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """y[BLOCK_M rows, the program's ROWS_PER_PROGRAM columns] (or split `split`'s partial),
    in a BLOCK_M x BLOCK_N float32 accumulator (BLOCK_N x BLOCK_M when SWAP_AB). Both
    dataflows read each of the program's rows of W once for all BLOCK_M rows of x; "flat"
    multiplies on tensor cores (M padded to 16, 32 or 64), "gemv" on CUDA cores."""
    pid_n, pid_m, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    lanes_n = tl.arange(0, BLOCK_N)
    if BALANCED:  # a range of ROWS_PER_PROGRAM rows, not a power of two: the tile's spare rows masked
        offs_n = pid_n * ROWS_PER_PROGRAM + lanes_n
        in_n = (lanes_n < ROWS_PER_PROGRAM) & (offs_n < N)
    else:  # the compiler knows each tile starts at a multiple of BLOCK_N (H100, gemv at M = 2: 81 us, 140 without)
        offs_n = pid_n * BLOCK_N + lanes_n
        in_n = offs_n < N
    in_m = offs_m < M
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = X + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = W + offs_n.to(tl.int64)[:, None] * stride_wn + offs_k[None, :] * stride_wk
    if SWAP_AB:
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    k_start = split * K_PER_SPLIT
    for k in range(k_start, tl.minimum(k_start + K_PER_SPLIT, K), BLOCK_K):
        in_k = (k + offs_k) < K  # the ragged last tile reads zeros
        x = tl.load(x_ptrs + k * stride_xk, mask=in_m[:, None] & in_k[None, :], other=0.0)
        w = tl.load(w_ptrs + k * stride_wk, mask=in_n[:, None] & in_k[None, :], other=0.0)
        if DATAFLOW == "flat":
            if SWAP_AB:  # y^T = W x^T: W's rows on the MMA's 64-row side, x's few rows on its narrow one
                acc = tl.dot(w, x.T, acc, input_precision=DOT_PRECISION)
            else:
                acc = tl.dot(x, w.T, acc, input_precision=DOT_PRECISION)
        else:
            acc += tl.sum(x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
    if SWAP_AB:
        _store_tile(OUT, acc.T, offs_m, offs_n, in_m, in_n, split, stride_os, stride_om, stride_on)
    else:
        _store_tile(OUT, acc, offs_m, offs_n, in_m, in_n, split, stride_os, stride_om, stride_on)


@triton.jit
def _sum_splits(P, Y, MN, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    """y = partials[0] + partials[1] + ... in that order, in float32, then rounded once."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < MN
    acc = tl.load(P + offs, mask=mask, other=0.0)
    for s in range(1, SPLIT_K):
        acc += tl.load(P + s * MN + offs, mask=mask, other=0.0)
    tl.store(Y + offs, acc.to(Y.dtype.element_ty), mask=mask)


def flat_gemm(x: torch.Tensor, w: torch.Tensor, plan: Plan | None = None) -> torch.Tensor:
    """y = x @ w.T in x's dtype: x [M, K], w [N, K] (nn.Linear's weight), any strides.
    bfloat16, float16 or float32 (run as true float32). `plan` forces a dataflow and tiling;
    by default `choose_dataflow` picks one for the shape and this GPU."""
    _check_inputs(x, w)
    (M, K), N = x.shape, w.shape[0]
    if M == 0 or N == 0 or K == 0:
        return torch.zeros((M, N), dtype=x.dtype, device=x.device)
    plan = choose_dataflow(M, N, K, sm_count(x.device), x.dtype) if plan is None else plan
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    split = plan.split_k > 1
    out = torch.empty((plan.split_k, M, N), dtype=torch.float32, device=x.device) if split else y
    k_per_split = triton.cdiv(triton.cdiv(K, plan.block_k), plan.split_k) * plan.block_k  # whole tiles a split
    grid = (triton.cdiv(N, plan.rows), triton.cdiv(M, plan.block_m), plan.split_k)
    _flat_gemm[grid](x, w, out, M, N, K, plan.rows, k_per_split, x.stride(0), x.stride(1), w.stride(0), w.stride(1),
                     out.stride(0) if split else 0, out.stride(-2), out.stride(-1),
                     BLOCK_M=plan.block_m, BLOCK_N=plan.block_n, BLOCK_K=plan.block_k, DATAFLOW=plan.dataflow,
                     BALANCED=plan.rows_per_program is not None, SWAP_AB=plan.swap_ab,
                     DOT_PRECISION=dot_precision(x.dtype), num_warps=plan.warps,
                     num_stages=plan.stages)
    if split:
        _reduce_splits(out, y)
    return y


def _reduce_splits(partials: torch.Tensor, y: torch.Tensor, block: int = 1024) -> None:
    """Sum the contiguous [SPLIT_K, M, N] float32 partials into the contiguous y."""
    mn = y.numel()
    _sum_splits[(triton.cdiv(mn, block),)](partials, y, mn, SPLIT_K=partials.shape[0], BLOCK=block)


def _check_inputs(x: torch.Tensor, w: torch.Tensor) -> None:
    if x.dim() != 2 or w.dim() != 2:
        raise ValueError(f"expected x [M, K] and w [N, K], got {tuple(x.shape)} and {tuple(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x [M, K] and w [N, K] must share K, got {tuple(x.shape)} and {tuple(w.shape)}")
    if x.dtype != w.dtype:
        raise ValueError(f"x and w must share a dtype, got {x.dtype} and {w.dtype}")
    if x.dtype not in DTYPES:
        raise ValueError(f"dtype {x.dtype} is not supported (accepted: bfloat16, float16, float32)")
    if x.device != w.device:
        raise ValueError(f"x and w must be on one device, got {x.device} and {w.device}")
