"""Flat GEMM for decode-time projections (FlashDecoding++): y = x @ w.T with few rows.

Case parameters: M decode rows (one per sequence in the batch, 1..64), K input features,
N output features. Inputs x [M, K] and w [N, K] (nn.Linear's weight layout); y [M, N].
"""

from __future__ import annotations

import math

import torch

from harness.cases import Case
from harness.needs import TRITON
from harness.registry import Direction, Inputs, Technique, Tolerance, implementation, register_technique
from implementations.flat_gemm import reference
from implementations.flat_gemm.triton_flat_gemm import DTYPES as TRITON_DTYPES
from implementations.flat_gemm.triton_flat_gemm import Dataflow, choose_dataflow, flat_gemm
from implementations.triton_support import sm_count

PARAMETERS = ("M", "K", "N")


def make_inputs(case: Case, dtype: torch.dtype, device: torch.device, seed: int) -> Inputs:
    """x ~ N(0, 1) and w ~ N(0, 1/K), drawn in float32 and cast, so y is O(1) at any K."""
    generator = torch.Generator(device=device).manual_seed(seed)
    M, K, N = case["M"], case["K"], case["N"]
    x = torch.randn((M, K), generator=generator, device=device, dtype=torch.float32)
    w = torch.randn((N, K), generator=generator, device=device, dtype=torch.float32) / math.sqrt(K)
    return Inputs({"x": x.to(dtype), "w": w.to(dtype)})


def flops(case: Case, direction: Direction) -> float:
    """A multiply and an add per (row, output feature, input feature)."""
    return 2.0 * case["M"] * case["N"] * case["K"]


def min_bytes(case: Case, dtype: torch.dtype, direction: Direction) -> float:
    """Read x and w once, write y once; at decode sizes w's N x K dominates."""
    M, K, N = case["M"], case["K"], case["N"]
    return float((M * K + N * K + M * N) * dtype.itemsize)


def validate_case(case: Case) -> str | None:
    for name in PARAMETERS:
        value = case[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"{name} must be a positive integer, got {value!r}"
    return None


register_technique(Technique(
    name="flat-gemm",
    summary="y = x @ w.T at decode sizes (M = 1..64 rows), FlashDecoding++'s flat GEMM",
    parameters=PARAMETERS,
    make_inputs=make_inputs,
    flops=flops,
    min_bytes=min_bytes,
    validate_case=validate_case,
    tolerance=Tolerance(multiple=2.0, floor=1e-5),
    directions=("fwd",),
    outputs=("y",),
))


@implementation("flat-gemm", "reference", role="reference",
                dtypes=(torch.float64, torch.float32, torch.float16, torch.bfloat16))
def build_reference(case: Case, x, w):
    """Plain PyTorch: x @ w.T."""
    return lambda: reference.flat_gemm(x, w)


def _planned(case: Case, x: torch.Tensor, w: torch.Tensor, dataflow: Dataflow | None):
    """Plan once, in the builder (outside the timed region), with `dataflow` forced or not."""
    plan = choose_dataflow(case["M"], case["N"], case["K"], sm_count(x.device), x.dtype, dataflow=dataflow)
    return lambda: flat_gemm(x, w, plan)


@implementation("flat-gemm", "triton", role="triton", dtypes=TRITON_DTYPES, needs=(TRITON,))
def build_triton(case: Case, x, w):
    """flashsuite's flat GEMM (Triton): gemv or flat tiles, and split-K, chosen per shape."""
    return _planned(case, x, w, None)


@implementation("flat-gemm", "triton-flat", role="triton", dtypes=TRITON_DTYPES, needs=(TRITON,))
def build_triton_flat(case: Case, x, w):
    """The same kernels with the tensor-core flat dataflow forced (M padded to 16, 32 or 64)."""
    return _planned(case, x, w, "flat")


@implementation("flat-gemm", "triton-gemv", role="triton", dtypes=TRITON_DTYPES, needs=(TRITON,))
def build_triton_gemv(case: Case, x, w):
    """The same kernels with the CUDA-core gemv dataflow forced (up to 4 rows of x a program)."""
    return _planned(case, x, w, "gemv")


from implementations.flat_gemm import peers  # noqa: E402,F401  (registers the peer libraries)
