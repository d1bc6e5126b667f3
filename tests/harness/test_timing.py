from __future__ import annotations

import math
import time

import pytest
import torch

from harness.timing import (LAUNCH_COVER, MAX_COVER_S, MIN_COVER_S, Timer, Timing, TimingPolicy, cover_cycles,
                            median_ci_rel_halfwidth)

CPU = torch.device("cpu")


# -- the median's confidence interval ----------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 5])
def test_ci_is_infinite_below_six_samples(n):
    assert median_ci_rel_halfwidth([1.0] * n) == math.inf


def test_ci_of_constant_samples_is_zero():
    assert median_ci_rel_halfwidth([2.5] * 6) == 0.0
    assert median_ci_rel_halfwidth([2.5] * 500) == 0.0


def test_ci_on_known_samples_uses_the_order_statistics_around_the_median():
    # n = 10: n/2 -+ 0.98 sqrt(10) = 1.90, 8.10 -> sorted indices 1 and 8 -> (9 - 2) / (2 * 5.5)
    assert median_ci_rel_halfwidth(list(range(10, 0, -1))) == pytest.approx(7 / 11)
    # n = 6: the interval spans every sample -> (6 - 1) / (2 * 3.5)
    assert median_ci_rel_halfwidth([1, 2, 3, 4, 5, 6]) == pytest.approx(5 / 7)
    # n = 100: indices floor(50 - 9.8) = 40 and ceil(59.8) - 1 = 59
    xs = [float(i) for i in range(100)]
    assert median_ci_rel_halfwidth(xs) == pytest.approx((59 - 40) / (2 * 49.5))


def test_ci_narrows_as_samples_accumulate_and_ignores_outliers():
    spread = [1.0 + 0.01 * (i % 7) for i in range(1000)]
    with_outliers = spread[:-10] + [1000.0] * 10
    assert median_ci_rel_halfwidth(spread) < median_ci_rel_halfwidth(spread[:20])
    assert median_ci_rel_halfwidth(with_outliers) < 0.01


def test_ci_of_a_zero_median_is_infinite():
    assert median_ci_rel_halfwidth([0.0] * 10) == math.inf


# -- quantiles ---------------------------------------------------------------------------------


def test_timing_quantiles_interpolate_between_sorted_samples():
    timing = Timing(samples_ms=(4.0, 1.0, 3.0, 2.0), mode="wall-clock", stop_reason="sample cap")
    assert timing.median_ms == 2.5
    assert timing.p10_ms == pytest.approx(1.3)
    assert timing.p90_ms == pytest.approx(3.7)
    eleven = Timing(tuple(float(i) for i in range(11, 0, -1)), "cuda-events", "converged")
    assert (eleven.p10_ms, eleven.median_ms, eleven.p90_ms) == (2.0, 6.0, 10.0)
    assert eleven.is_performance_figure


def test_timing_of_one_sample_has_that_sample_for_every_quantile():
    timing = Timing((7.0,), "wall-clock", "time budget")
    assert (timing.p10_ms, timing.median_ms, timing.p90_ms) == (7.0, 7.0, 7.0)
    assert timing.ci_rel == math.inf
    assert not timing.is_performance_figure


# -- the timer on the CPU ----------------------------------------------------------------------


def test_cpu_timer_defaults_to_the_interpreter_policy_and_wall_clock():
    timer = Timer(CPU)
    assert not timer.on_gpu
    assert timer.policy == TimingPolicy.interpreter()
    calls = []
    timing = timer.time(lambda: calls.append(1))
    assert timing.mode == "wall-clock" and not timing.is_performance_figure
    # fewer than 6 samples never converge: the interpreter policy stops at its cap of 5
    assert timing.stop_reason == "sample cap" and len(timing.samples_ms) == 5
    assert len(calls) == 5 + TimingPolicy.interpreter().warmup_calls


def test_cpu_timer_stops_at_its_time_budget():
    policy = TimingPolicy(min_samples=3, max_samples=60, min_seconds=0.0, max_seconds=0.2,
                          target_rel_ci=-1.0, warmup_calls=1, warmup_seconds=0.0, batch=1)
    started = time.perf_counter()
    timing = Timer(CPU, policy).time(lambda: time.sleep(0.01))
    elapsed = time.perf_counter() - started
    assert timing.stop_reason == "time budget"
    assert elapsed < 0.2 + 0.5
    assert 3 <= len(timing.samples_ms) <= 21
    assert all(s >= 10.0 for s in timing.samples_ms)
    assert timing.median_ms == pytest.approx(10.0, abs=15.0)


def test_cpu_timer_takes_at_least_min_samples_even_past_the_budget():
    policy = TimingPolicy(min_samples=4, max_samples=100, min_seconds=0.0, max_seconds=0.0,
                          target_rel_ci=-1.0, warmup_calls=0, warmup_seconds=0.0, batch=1)
    timing = Timer(CPU, policy).time(lambda: time.sleep(0.002))
    assert len(timing.samples_ms) == 4 and timing.stop_reason == "time budget"


def test_cpu_timer_stops_when_the_ci_is_narrow_enough_after_min_samples_and_min_seconds():
    policy = TimingPolicy(min_samples=6, max_samples=100, min_seconds=0.05, max_seconds=2.0,
                          target_rel_ci=math.inf, warmup_calls=0, warmup_seconds=0.0, batch=2)
    started = time.perf_counter()
    timing = Timer(CPU, policy).time(lambda: time.sleep(0.005))
    assert timing.stop_reason == "converged"
    assert 6 <= len(timing.samples_ms) <= 12 and len(timing.samples_ms) % 2 == 0
    assert 0.05 <= time.perf_counter() - started < 1.0


def test_cpu_timer_runs_setup_before_each_sample_outside_the_timing():
    policy = TimingPolicy(min_samples=3, max_samples=4, min_seconds=0.0, max_seconds=10.0,
                          target_rel_ci=-1.0, warmup_calls=2, warmup_seconds=0.0, batch=1)
    order = []

    def setup():
        order.append("setup")
        time.sleep(0.02)

    timing = Timer(CPU, policy).time(lambda: order.append("call"), setup)
    assert timing.stop_reason == "sample cap" and len(timing.samples_ms) == 4
    assert order == ["setup", "call"] * (2 + 4)
    assert max(timing.samples_ms) < 20.0


def test_a_cuda_graph_request_off_the_gpu_is_timed_by_the_wall_clock_and_says_nothing_went_wrong():
    timer = Timer(CPU, TimingPolicy(min_samples=3, max_samples=3, min_seconds=0.0, warmup_calls=1, warmup_seconds=0.0))
    timing = timer.time(lambda: None, graph=True)
    assert timing.mode == "wall-clock" and not timing.is_performance_figure and timing.note == ""


def test_cuda_graph_figures_are_performance_figures():
    assert Timing((1.0,), "cuda-graph", "converged").is_performance_figure


def test_launch_cover_outlasts_the_launch_within_bounds():
    """The spin before each GPU sample lasts LAUNCH_COVER times the slowest launch seen, never
    less than MIN_COVER_S (a fast launch can still be preempted) nor more than MAX_COVER_S (a
    call that synchronizes inside would otherwise double every sample)."""
    rate = 1.8e9  # cycles a second
    assert cover_cycles(40e-6, rate) == int(LAUNCH_COVER * 40e-6 * rate)
    assert cover_cycles(1e-6, rate) == int(MIN_COVER_S * rate)
    assert cover_cycles(0.5, rate) == int(MAX_COVER_S * rate)
    assert cover_cycles(40e-6, rate) > 40e-6 * rate  # outlasts the launch it covers


def test_no_cover_on_the_cpu():
    timer = Timer(CPU)
    assert timer._launch_cover_cycles(lambda: None, lambda: None) == 0
