"""Shared pieces of the flat-gemm tests: seeds, the technique's own inputs, an independent
float64 truth, and the harness's tolerance rule as an assertion that says what failed and
how to reproduce it."""

from __future__ import annotations


import torch

from harness import registry
from harness.cases import Case
from implementations.flat_gemm import make_inputs, reference
from implementations.flat_gemm import triton_flat_gemm as tfg
from tests.implementations.shared import verdict

TOL = registry.technique("flat-gemm").tolerance


def make_xw(seed: int, M: int, N: int, K: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K], w [N, K] exactly as the harness makes them (the technique's make_inputs)."""
    tensors = make_inputs(Case.of(M=M, K=K, N=N), dtype, torch.device("cpu"), seed).tensors
    return tensors["x"], tensors["w"]


def truth(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """y[m, n] = sum_k x[m, k] w[n, k] in float64, written as an einsum (not reference's matmul)."""
    return torch.einsum("mk,nk->mn", x.double(), w.double())


def rule_verdict(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> tuple[bool, str]:
    """The harness rule for y = x @ w.T: (passes, a line with the numbers). The yardstick is
    the reference run at x's precision, judged against the float64 truth."""
    return verdict(y, reference.flat_gemm(x, w), truth(x, w), x.dtype, TOL)


def assert_rule(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, context: str) -> None:
    assert y.dtype == x.dtype and y.shape == (x.shape[0], w.shape[0]), f"y is {y.dtype} {tuple(y.shape)}; {context}"
    ok, line = rule_verdict(y, x, w)
    assert ok, f"y outside the tolerance rule for {context}\n  {line}"


def spy_on_kernels(monkeypatch) -> list[str]:
    """Record the dataflow of each launch of the GEMM kernel ('gemv' or 'flat'), in order."""
    launched: list[str] = []
    kernel = tfg._flat_gemm

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launched.append(kwargs["DATAFLOW"])
                return kernel[grid](*args, **kwargs)

            return launch

    monkeypatch.setattr(tfg, "_flat_gemm", Spy())
    return launched
