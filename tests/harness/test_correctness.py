from __future__ import annotations

import math

import pytest
import torch
import torch.utils.deterministic as deterministic

from harness.correctness import ErrorStats, bitwise_equal, compare_outputs, passes, poisoned_allocations
from harness.registry import Tolerance

# -- ErrorStats --------------------------------------------------------------------------------


def test_error_stats_between_known_tensors():
    ref = torch.tensor([3.0, -4.0, 0.0])
    out = torch.tensor([3.0, -4.0, 0.5])
    stats = ErrorStats.between(out, ref)
    assert stats.rel_err == pytest.approx(0.5 / 5.0)
    assert stats.max_abs_err == pytest.approx(0.5)
    assert stats.scale == pytest.approx(4.0)


def test_error_stats_are_computed_in_float64_from_low_precision_inputs():
    ref = torch.tensor([1.0, 2.0], dtype=torch.float64)
    out = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    out[1] = 2.015625  # the next bfloat16 above 2
    stats = ErrorStats.between(out, ref)
    assert stats.max_abs_err == 0.015625
    assert stats.rel_err == pytest.approx(0.015625 / math.sqrt(5))


def test_error_stats_against_an_all_zero_reference_is_the_absolute_norm():
    stats = ErrorStats.between(torch.tensor([3.0, 4.0]), torch.zeros(2))
    assert stats.rel_err == pytest.approx(5.0)
    assert stats.scale == 0.0


def test_error_stats_refuse_a_shape_mismatch():
    with pytest.raises(ValueError, match=r"output has shape \(2, 3\), the reference \(3, 2\)"):
        ErrorStats.between(torch.zeros(2, 3), torch.zeros(3, 2))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_output_gives_nan_errors_that_never_pass(bad):
    ref = torch.ones(4)
    out = ref.clone()
    out[2] = bad
    stats = ErrorStats.between(out, ref)
    assert math.isnan(stats.rel_err) and math.isnan(stats.max_abs_err)
    assert stats.scale == 1.0
    generous = Tolerance(multiple=1e9, floor=1e9)
    assert not passes(stats, ErrorStats(1.0, 1.0, 1.0), generous, torch.float32)


def test_worst_takes_the_larger_of_each_metric_and_nan_wins():
    a, b = ErrorStats(1e-3, 5.0, 2.0), ErrorStats(2e-3, 1.0, 3.0)
    assert a.worst(b) == ErrorStats(2e-3, 5.0, 3.0)
    worst = a.worst(ErrorStats(math.nan, math.nan, 1.0))
    assert math.isnan(worst.rel_err) and math.isnan(worst.max_abs_err)


def test_compare_outputs_names_the_output_with_the_wrong_shape_and_counts_outputs():
    ref = (torch.ones(3), torch.ones(2))
    stats = compare_outputs(["out", "lse"], (torch.ones(3), torch.full((2,), 1.5)), ref)
    assert stats["out"].max_abs_err == 0.0 and stats["lse"].max_abs_err == 0.5
    with pytest.raises(ValueError, match=r"^lse: output has shape \(3,\)"):
        compare_outputs(["out", "lse"], (torch.ones(3), torch.ones(3)), ref)
    with pytest.raises(ValueError, match="implementation returned 1 outputs, the reference 2"):
        compare_outputs(["out", "lse"], (torch.ones(3),), ref)


# -- the pass rule -----------------------------------------------------------------------------


def test_relative_error_may_be_the_multiple_of_the_references_plus_the_floor():
    tol = Tolerance(multiple=2.0, floor=1e-5)
    ref_err = ErrorStats(rel_err=1e-3, max_abs_err=0.0, scale=1.0)
    limit = 2.0 * 1e-3 + 1e-5
    assert passes(ErrorStats(limit, 0.0, 1.0), ref_err, tol, torch.float32)
    assert not passes(ErrorStats(limit * 1.001, 0.0, 1.0), ref_err, tol, torch.float32)
    assert not passes(ErrorStats(limit * 1.001, 0.0, 1.0), ref_err, Tolerance(multiple=2.0, floor=0.0), torch.float32)
    assert passes(ErrorStats(limit * 1.4, 0.0, 1.0), ref_err, Tolerance(multiple=3.0, floor=1e-5), torch.float32)


def test_an_identically_zero_truth_is_judged_by_max_abs_against_the_calls_largest_output():
    tol = Tolerance(multiple=2.0, floor=1e-5)
    zero_truth = ErrorStats(rel_err=0.0, max_abs_err=0.0, scale=0.0)
    limit = (1e-5 + torch.finfo(torch.float32).eps) * 3.0
    assert passes(ErrorStats(1.0, limit * 0.99, 0.0), zero_truth, tol, torch.float32, unit_scale=3.0)
    assert not passes(ErrorStats(1.0, limit * 1.01, 0.0), zero_truth, tol, torch.float32, unit_scale=3.0)
    assert not passes(ErrorStats(1.0, 1e-30, 0.0), zero_truth, tol, torch.float32)  # no scale given: exact only
    assert passes(ErrorStats(0.0, 0.0, 0.0), zero_truth, tol, torch.float32)


def test_relative_floor_alone_is_allowed_when_the_reference_is_exact():
    tol = Tolerance(multiple=2.0, floor=1e-5)
    exact = ErrorStats(0.0, 0.0, 1.0)
    assert passes(ErrorStats(1e-5, 0.0, 1.0), exact, tol, torch.float32)
    assert not passes(ErrorStats(2e-5, 0.0, 1.0), exact, tol, torch.float32)


def test_max_abs_error_allows_multiple_plus_floor_times_scale_plus_one_ulp_of_the_dtype():
    tol = Tolerance(multiple=2.0, floor=1e-5)
    scale = 8.0
    ref_err = ErrorStats(rel_err=0.0, max_abs_err=0.01, scale=scale)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        limit = 2.0 * 0.01 + 1e-5 * scale + torch.finfo(dtype).eps * scale
        assert passes(ErrorStats(0.0, limit * (1 - 1e-9), scale), ref_err, tol, dtype), dtype
        assert not passes(ErrorStats(0.0, limit * 1.001, scale), ref_err, tol, dtype), dtype


def test_the_ulp_term_follows_the_output_dtype():
    tol = Tolerance(multiple=2.0, floor=1e-5)
    exact = ErrorStats(0.0, 0.0, 1.0)
    one_bf16_ulp = ErrorStats(0.0, torch.finfo(torch.bfloat16).eps, 1.0)
    assert passes(one_bf16_ulp, exact, tol, torch.bfloat16)
    assert not passes(one_bf16_ulp, exact, tol, torch.float16)
    assert not passes(one_bf16_ulp, exact, tol, torch.float32)


def test_both_metrics_must_pass():
    tol = Tolerance()
    ref_err = ErrorStats(1e-3, 1e-3, 1.0)
    assert not passes(ErrorStats(1e-3, 1.0, 1.0), ref_err, tol, torch.float32)
    assert not passes(ErrorStats(1.0, 1e-3, 1.0), ref_err, tol, torch.float32)
    assert passes(ErrorStats(1e-3, 1e-3, 1.0), ref_err, tol, torch.float32)


# -- bitwise equality --------------------------------------------------------------------------


def test_bitwise_equal_for_identical_tensors_and_sequences():
    a = torch.randn(5, 3)
    assert bitwise_equal([a, a + 1], [a.clone(), a + 1])
    assert not bitwise_equal([a], [a, a])
    assert not bitwise_equal([a], [a.reshape(3, 5)])


def test_bitwise_equal_sees_a_one_ulp_difference():
    a = torch.ones(4)
    b = a.clone()
    b[3] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    assert not bitwise_equal([a], [b])


def test_bitwise_equal_treats_same_nans_as_equal_and_signed_zeros_as_different():
    a = torch.tensor([1.0, math.nan, 2.0])
    assert bitwise_equal([a], [a.clone()])
    assert not bitwise_equal([a], [torch.tensor([1.0, 0.0, 2.0])])
    assert not bitwise_equal([torch.tensor([0.0])], [torch.tensor([-0.0])])


def test_bitwise_equal_requires_the_same_dtype():
    a = torch.tensor([1.0, 2.0])
    assert not bitwise_equal([a], [a.double()])
    assert not bitwise_equal([a.half()], [a.bfloat16()])
    # the same bits under another dtype are not the same result
    assert not bitwise_equal([a.half()], [a.half().view(torch.int16)])
    assert not bitwise_equal([a], [a.view(torch.int32)])
    assert bitwise_equal([a.bfloat16()], [a.bfloat16()])


def test_bitwise_equal_compares_non_contiguous_views_by_value():
    a = torch.arange(12.0).reshape(3, 4)
    assert bitwise_equal([a.t()], [a.t().contiguous()])


# -- poisoned allocations ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_poisoned_allocations_fill_new_floating_tensors_with_nan(dtype):
    with poisoned_allocations():
        fresh = [torch.empty(64, dtype=dtype), torch.empty_like(torch.zeros(8, dtype=dtype)),
                 torch.empty((4, 4), dtype=dtype).new_empty(16)]
    for t in fresh:
        assert torch.isnan(t).all(), t


def test_poisoned_allocations_catch_an_unwritten_output_element():
    x = torch.randn(32)
    with poisoned_allocations():
        out = torch.empty(32)
        out[1:] = x[1:] * 2 + 1
    assert torch.isnan(out[0]) and torch.isfinite(out[1:]).all()
    stats = ErrorStats.between(out, x * 2 + 1)
    assert not passes(stats, ErrorStats(0.0, 0.0, 1.0), Tolerance(), torch.float32)


@pytest.mark.parametrize("on, warn_only, fill", [(False, False, False), (True, False, False), (True, True, True),
                                                 (False, False, True)])
def test_poisoned_allocations_restore_the_deterministic_settings(on, warn_only, fill):
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              deterministic.fill_uninitialized_memory)
    try:
        torch.use_deterministic_algorithms(on, warn_only=warn_only)
        deterministic.fill_uninitialized_memory = fill
        with poisoned_allocations():
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()
            assert deterministic.fill_uninitialized_memory
        assert torch.are_deterministic_algorithms_enabled() == on
        assert torch.is_deterministic_algorithms_warn_only_enabled() == warn_only
        assert deterministic.fill_uninitialized_memory == fill
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        deterministic.fill_uninitialized_memory = before[2]


def test_poisoned_allocations_restore_the_settings_when_the_block_raises():
    before = (torch.are_deterministic_algorithms_enabled(), deterministic.fill_uninitialized_memory)
    with pytest.raises(RuntimeError, match="inside"):
        with poisoned_allocations():
            raise RuntimeError("inside")
    assert (torch.are_deterministic_algorithms_enabled(), deterministic.fill_uninitialized_memory) == before
