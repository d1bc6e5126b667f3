"""A technique with Triton kernels for the `bench kernels` tests (tests/harness/test_offline_compile.py):
y = 2x + 1 on a [R, C] matrix, by an autotuned kernel over row blocks ("triton") and by one
program holding the whole matrix in one warp ("triton-one-warp"), which spills registers
once R x C passes a warp's 255 registers a thread.

Loaded as a plugin (FLASHSUITE_PLUGINS=tests.triton_plugin) in a process without
TRITON_INTERPRET, so its kernels are compiled, never run, on a machine without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from harness.cases import Case
from harness.needs import TRITON
from harness.registry import Inputs, Technique, implementation, register_technique

NAME = "affine"
DTYPES = (torch.float32,)


def make_inputs(case: Case, dtype: torch.dtype, device: torch.device, seed: int) -> Inputs:
    generator = torch.Generator(device=device).manual_seed(seed)
    return Inputs({"x": torch.randn(case["R"], case["C"], generator=generator, device=device).to(dtype)})


register_technique(Technique(
    name=NAME, summary="2x + 1 on a matrix, for testing bench kernels", parameters=("R", "C"),
    make_inputs=make_inputs, flops=lambda case, direction: 2.0 * case["R"] * case["C"],
    min_bytes=lambda case, dtype, direction: 8.0 * case["R"] * case["C"], directions=("fwd",)))


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """A hook that reads the arguments, as real ones do: C above 128 drops the 4-warp config."""
    return [c for c in configs if c.num_warps == 8] if {**named_args, **kwargs}["C"] > 128 else configs


@triton.autotune(configs=[triton.Config({"BLOCK_R": 1}, num_warps=4), triton.Config({"BLOCK_R": 2}, num_warps=8)],
                 key=["C"], prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _affine_rows(X, Y, C: tl.constexpr, BLOCK_R: tl.constexpr):
    offsets = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R))[:, None] * C + tl.arange(0, C)[None, :]
    tl.store(Y + offsets, tl.load(X + offsets) * 2 + 1)


@triton.jit
def _affine_whole(X, Y, R: tl.constexpr, C: tl.constexpr):
    offsets = tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :]
    x = tl.load(X + offsets)
    # 2x + 1 = 2 (x - m) + (2m + 1) with m the row's maximum: the whole matrix is live at once.
    peak = tl.max(x, axis=1)[:, None]
    tl.store(Y + offsets, (x - peak) * 2 + (peak * 2 + 1))


@implementation(NAME, "reference", role="reference", dtypes=DTYPES)
def build_reference(case: Case, x):
    """Plain PyTorch."""
    return lambda: x * 2 + 1


@implementation(NAME, "triton", role="triton", dtypes=DTYPES, needs=(TRITON,))
def build_triton(case: Case, x):
    """Autotuned over row blocks."""
    y = torch.empty_like(x)

    def run() -> torch.Tensor:
        _affine_rows[lambda meta: (case["R"] // meta["BLOCK_R"],)](x, y, C=case["C"])
        return y

    return run


@implementation(NAME, "triton-one-warp", role="triton", dtypes=DTYPES, needs=(TRITON,))
def build_one_warp(case: Case, x):
    """The whole matrix in one warp."""
    y = torch.empty_like(x)

    def run() -> torch.Tensor:
        _affine_whole[(1,)](x, y, R=case["R"], C=case["C"], num_warps=1)
        return y

    return run

