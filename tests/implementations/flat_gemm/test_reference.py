"""The plain-PyTorch reference (implementations/flat_gemm/reference.py): it is the truth
every kernel is judged by, so it is checked against an independent float64 computation
(an einsum, and for a tiny case the sums written out), at every precision it is run at."""

from __future__ import annotations

import pytest
import torch

from implementations.flat_gemm import reference
from tests.implementations.flat_gemm._support import make_xw, truth
from tests.implementations.shared import reproduce

F64 = dict(rtol=1e-12, atol=1e-12)
SHAPES = [(1, 77, 129), (3, 5, 1), (13, 64, 33), (64, 130, 67)]  # (M, N, K)


@pytest.mark.parametrize("M,N,K", SHAPES, ids=lambda v: str(v))
def test_matches_independent_float64(seed, M, N, K):
    x, w = make_xw(seed, M, N, K, torch.float64)
    y = reference.flat_gemm(x, w)
    assert y.dtype == torch.float64 and y.shape == (M, N)
    torch.testing.assert_close(y, truth(x, w), **F64, msg=lambda m: f"{m}\n{reproduce(seed)}")


def test_sums_written_out(seed):
    """y[m, n] = sum over k of x[m, k] * w[n, k]: w is read as [N, K] (nn.Linear), not [K, N]."""
    x, w = make_xw(seed, 2, 3, 5, torch.float64)
    y = reference.flat_gemm(x, w)
    for m in range(2):
        for n in range(3):
            want = sum(x[m, k].item() * w[n, k].item() for k in range(5))
            assert abs(y[m, n].item() - want) <= 1e-12, f"y[{m}, {n}]; {reproduce(seed)}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_keeps_dtype_and_is_close(seed, dtype):
    x, w = make_xw(seed, 13, 77, 129, dtype)
    y = reference.flat_gemm(x, w)
    assert y.dtype == dtype and y.shape == (13, 77)
    want = truth(x, w)
    rel = ((y.double() - want).norm() / want.norm()).item()
    tol = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    assert rel < tol, f"relative error {rel:.3e} at {dtype}; {reproduce(seed)}"


def test_strided_views_give_the_same_values(seed):
    x, w = make_xw(seed, 5, 9, 12, torch.float64)
    x_view = torch.empty(12, 5, dtype=torch.float64).T.copy_(x)  # column-major x
    w_view = torch.empty(9, 24, dtype=torch.float64)[:, ::2].copy_(w)  # stride 2 along K
    assert not x_view.is_contiguous() and not w_view.is_contiguous()
    torch.testing.assert_close(reference.flat_gemm(x_view, w_view), truth(x, w), **F64)


@pytest.mark.parametrize("x,w,match", [
    pytest.param(torch.zeros(4), torch.zeros(3, 4), r"expected x \[M, K\]", id="1d-x"),
    pytest.param(torch.zeros(2, 4), torch.zeros(3, 5), r"expected x \[M, K\]", id="K-differs"),
    pytest.param(torch.zeros(2, 4), torch.zeros(3, 4, dtype=torch.float64), r"share a dtype", id="mixed-dtypes"),
])
def test_bad_inputs_raise_value_error(x, w, match):
    with pytest.raises(ValueError, match=match):
        reference.flat_gemm(x, w)
