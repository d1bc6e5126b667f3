"""The Triton flat GEMM (implementations/flat_gemm/triton_flat_gemm.py), run in Triton's
interpreter: each dataflow, with and without split-K, and the heuristic's own choice, against
the float64 truth under the harness's rule; bitwise repeatability and the split-K sum order;
strided inputs; input validation; and a check that the same assertion rejects a wrong kernel.

The interpreter's tiles: gemv BLOCK_N = 64 / BLOCK_M (BLOCK_M up to 4), BLOCK_K = 32; flat
BLOCK_M 16, 32 or 64, BLOCK_N = 32, BLOCK_K = 32 (both BLOCK_K = 16 for float32). The sizes
below are not multiples of those: N = 77, 45, 130 and K = 129, 200, 67.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import triton

from harness.correctness import bitwise_equal, poisoned_allocations
from implementations.flat_gemm import triton_flat_gemm as tfg
from implementations.flat_gemm.triton_flat_gemm import Plan, choose_dataflow, flat_gemm
from implementations.triton_support import INTERPRETER_SM_COUNT
from tests.implementations.flat_gemm._support import assert_rule, make_xw, rule_verdict, spy_on_kernels
from tests.implementations.shared import reproduce

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
ROWS = [1, 3, 8, 13, 16, 33, 64]
SHAPES = [(77, 129), (45, 200), (130, 67)]  # (N, K), taken in turn
SM = INTERPRETER_SM_COUNT


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _plans(M: int, N: int, K: int, dtype: torch.dtype) -> dict[str, Plan]:
    """The heuristic's plan, each dataflow forced with K unsplit and split three ways, and
    the flat dataflow in two balanced ranges (not a power of two: 39, 23 and 65 rows, in
    tiles of 64, 32 and 128), its dot as x @ W^T and swapped, unsplit and split."""
    plans = {"auto": choose_dataflow(M, N, K, SM, dtype)}
    for dataflow in tfg.DATAFLOWS:
        forced = choose_dataflow(M, N, K, SM, dtype, dataflow=dataflow)
        plans |= {f"{dataflow}-split1": replace(forced, split_k=1), f"{dataflow}-split3": replace(forced, split_k=3)}
    rows = triton.cdiv(N, 2)
    balanced = replace(plans["flat-split1"], block_n=triton.next_power_of_2(rows), rows_per_program=rows)
    plans |= {"balanced": balanced, "balanced-swapped": replace(balanced, swap_ab=True),
              "balanced-swapped-split3": replace(balanced, swap_ab=True, split_k=3)}
    return plans


@pytest.mark.parametrize("dtype", DTYPES, ids=_name)
@pytest.mark.parametrize("M", ROWS)
def test_every_dataflow_within_rule(seed, M, dtype):
    N, K = SHAPES[(ROWS.index(M) + DTYPES.index(dtype)) % len(SHAPES)]
    x, w = make_xw(seed, M, N, K, dtype)
    for name, plan in _plans(M, N, K, dtype).items():
        with poisoned_allocations():  # an element never written reads NaN and fails
            y = flat_gemm(x, w, plan)
        assert_rule(y, x, w, f"{_name(dtype)} M={M} N={N} K={K} {name} {plan}; {reproduce(seed)}")


@pytest.mark.parametrize("M,dataflow", [(2, "gemv"), (13, "flat")])
def test_heuristic_splits_a_long_k(seed, M, dataflow):
    """Few N tiles and a long K: the heuristic itself splits K, and the result holds."""
    N, K, dtype = 45, 600, torch.bfloat16
    plan = choose_dataflow(M, N, K, SM, dtype)
    assert plan.dataflow == dataflow and plan.split_k > 1, plan
    x, w = make_xw(seed, M, N, K, dtype)
    with poisoned_allocations():
        y = flat_gemm(x, w)
    assert_rule(y, x, w, f"M={M} N={N} K={K} {plan}; {reproduce(seed)}")


@pytest.mark.parametrize("dataflow", tfg.DATAFLOWS)
def test_more_splits_than_k_tiles_leave_empty_splits_zero(seed, dataflow):
    """K = 40 is two tiles; splits 3..8 get no K at all and must still write their zeros."""
    x, w = make_xw(seed, 5, 33, 40, torch.float16)
    plan = replace(choose_dataflow(5, 33, 40, SM, torch.float16, dataflow=dataflow), split_k=8)
    with poisoned_allocations():
        y = flat_gemm(x, w, plan)
    assert_rule(y, x, w, f"{plan}; {reproduce(seed)}")


@pytest.mark.parametrize("dataflow", tfg.DATAFLOWS)
def test_split_k_is_bitwise_repeatable_and_summed_in_order(monkeypatch, seed, dataflow):
    """Two runs give the same bits, and y is float32 partials[0] + partials[1] + partials[2],
    added in that order and rounded once."""
    M, N, K, dtype = 3, 77, 200, torch.bfloat16
    x, w = make_xw(seed, M, N, K, dtype)
    plan = replace(choose_dataflow(M, N, K, SM, dtype, dataflow=dataflow), split_k=3)
    seen = []
    original = tfg._reduce_splits
    monkeypatch.setattr(tfg, "_reduce_splits", lambda p, y: seen.append(p.clone()) or original(p, y))
    first, second = flat_gemm(x, w, plan), flat_gemm(x, w, plan)
    assert bitwise_equal([first], [second]), f"two runs differ; {reproduce(seed)}"
    assert len(seen) == 2 and torch.equal(seen[0], seen[1]), "the partials differ between runs"
    partials = seen[0]
    assert partials.shape == (3, M, N) and partials.dtype == torch.float32
    assert torch.equal(first, ((partials[0] + partials[1]) + partials[2]).to(dtype)), reproduce(seed)


def test_unsplit_plans_skip_the_reduction(monkeypatch, seed):
    monkeypatch.setattr(tfg, "_reduce_splits", lambda p, y: pytest.fail("split_k = 1 launched the reduction"))
    x, w = make_xw(seed, 3, 45, 67, torch.float16)
    for dataflow in tfg.DATAFLOWS:
        flat_gemm(x, w, replace(choose_dataflow(3, 45, 67, SM, torch.float16, dataflow=dataflow), split_k=1))


@pytest.mark.parametrize("M,launched", [(3, "gemv"), (13, "flat")])
def test_the_planned_kernel_is_the_one_launched(monkeypatch, M, launched):
    calls = spy_on_kernels(monkeypatch)
    flat_gemm(*make_xw(0, M, 45, 67, torch.float16))
    assert calls == [launched]


@pytest.mark.parametrize("dataflow", tfg.DATAFLOWS)
def test_strided_inputs_match_contiguous(seed, dataflow):
    """x column-major and w with stride 2 along K are read in place, bitwise as if contiguous."""
    M, N, K, dtype = 5, 45, 67, torch.bfloat16
    x, w = make_xw(seed, M, N, K, dtype)
    x_t = torch.empty(K, M, dtype=dtype).T.copy_(x)
    w_s = torch.empty(N, 2 * K, dtype=dtype)[:, ::2].copy_(w)
    plan = replace(choose_dataflow(M, N, K, SM, dtype, dataflow=dataflow), split_k=2)
    assert bitwise_equal([flat_gemm(x_t, w_s, plan)], [flat_gemm(x, w, plan)]), reproduce(seed)


def test_empty_sizes():
    assert torch.equal(flat_gemm(torch.ones(3, 0), torch.ones(5, 0)), torch.zeros(3, 5))
    assert flat_gemm(torch.ones(0, 4), torch.ones(5, 4)).shape == (0, 5)


# --- bad inputs ---------------------------------------------------------------------------


def _t(*shape, dtype=torch.float16):
    return torch.randn(*shape).to(dtype)


@pytest.mark.parametrize("x,w,match", [
    pytest.param(_t(8), _t(16, 8), r"expected x \[M, K\] and w \[N, K\]", id="1d-x"),
    pytest.param(_t(2, 16, 8), _t(16, 8), r"expected x \[M, K\] and w \[N, K\]", id="3d-x"),
    pytest.param(_t(2, 8), _t(1, 16, 8), r"expected x \[M, K\] and w \[N, K\]", id="3d-w"),
    pytest.param(_t(2, 8), _t(16, 9), r"must share K", id="K-differs"),
    pytest.param(_t(2, 8), _t(8, 2), r"must share K", id="w-transposed"),
    pytest.param(_t(2, 8), _t(16, 8, dtype=torch.bfloat16), r"must share a dtype", id="mixed-dtypes"),
    pytest.param(_t(2, 8, dtype=torch.float64), _t(16, 8, dtype=torch.float64), r"float64 is not supported",
                 id="float64"),
])
def test_bad_inputs_raise_value_error(x, w, match):
    with pytest.raises(ValueError, match=match):
        flat_gemm(x, w)


@pytest.mark.parametrize("fields,match", [
    (dict(dataflow="gemm"), r"dataflow must be one of"),
    (dict(block_n=48), r"powers of two"),
    (dict(block_m=8), r"at least 16"),
    (dict(split_k=0), r"must be positive"),
    (dict(rows_per_program=33), r"rows_per_program must be in 1..block_n \(32\), got 33"),
    (dict(rows_per_program=0), r"rows_per_program must be in"),
    (dict(dataflow="gemv", swap_ab=True), r"only the flat dataflow"),
])
def test_bad_plans_raise_value_error(fields, match):
    with pytest.raises(ValueError, match=match):
        Plan(**{**dict(dataflow="flat", block_m=16, block_n=32, block_k=32), **fields})


# --- the check can fail ---------------------------------------------------------------------


@pytest.mark.parametrize("dataflow", tfg.DATAFLOWS)
@pytest.mark.parametrize("dtype", DTYPES, ids=_name)
def test_rule_rejects_a_dropped_last_k_tile(seed, dtype, dataflow):
    """A kernel whose loop stops before the ragged last K tile (here: the one column past
    128 of K = 129) fails the same assertion the real kernel passes."""
    M, N, K = 3, 45, 129
    x, w = make_xw(seed, M, N, K, dtype)
    plan = choose_dataflow(M, N, K, SM, dtype, dataflow=dataflow)
    assert_rule(flat_gemm(x, w, plan), x, w, f"the real kernel; {reproduce(seed)}")
    kept = (K - 1) // plan.block_k * plan.block_k
    wrong = flat_gemm(x[:, :kept], w[:, :kept], plan)
    with pytest.raises(AssertionError, match="outside the tolerance rule"):
        assert_rule(wrong, x, w, f"last K tile dropped; {reproduce(seed)}")


def test_rule_rejects_lost_precision(seed):
    """A float32 result that went through bfloat16 fails the float32 rule."""
    x, w = make_xw(seed, 13, 77, 129, torch.float32)
    y = flat_gemm(x, w)
    assert rule_verdict(y, x, w)[0], reproduce(seed)
    ok, line = rule_verdict(y.to(torch.bfloat16).float(), x, w)
    assert not ok, f"a bfloat16-rounded result passed the float32 rule ({line}); {reproduce(seed)}"
