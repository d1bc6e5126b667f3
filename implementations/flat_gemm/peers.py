"""The projection a user would otherwise call, registered beside flashsuite's kernels:
torch.matmul on w's transpose and F.linear (nn.Linear's forward), both cuBLAS on a GPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.cases import Case
from harness.needs import CUDA
from harness.registry import implementation

ALL = (torch.bfloat16, torch.float16, torch.float32)


@implementation("flat-gemm", "cublas", role="peer", dtypes=ALL, needs=(CUDA,))
def build_cublas(case: Case, x, w):
    """torch.matmul(x, w.T): cuBLAS's GEMM on a transposed view of w (no copy)."""
    return lambda: torch.matmul(x, w.T)


@implementation("flat-gemm", "cublas-linear", role="peer", dtypes=ALL, needs=(CUDA,))
def build_cublas_linear(case: Case, x, w):
    """torch.nn.functional.linear(x, w), as nn.Linear without bias calls it (cuBLASLt)."""
    return lambda: F.linear(x, w)
