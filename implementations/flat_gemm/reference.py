"""Reference decode-time projection: y = x @ w.T in plain PyTorch, at whatever precision its
inputs have (float64 for the truth).

Shapes: x [M, K] (M decode rows: one per sequence of the batch), w [N, K] (nn.Linear's
weight layout), y [M, N] in x's dtype.
"""

from __future__ import annotations

import torch


def flat_gemm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [M, K] @ w[N, K].T -> [M, N]; any floating dtype, float64 included."""
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"expected x [M, K] and w [N, K], got {tuple(x.shape)} and {tuple(w.shape)}")
    if x.dtype != w.dtype:
        raise ValueError(f"x and w must share a dtype, got {x.dtype} and {w.dtype}")
    return torch.matmul(x, w.T)
