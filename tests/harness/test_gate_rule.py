"""The gate's rule on synthetic samples: no change, a 10% shift, heavy-tailed noise; unsteady
clocks; and the correctness and determinism regressions that always fail."""

from __future__ import annotations

from collections import Counter

import pytest

from harness.compare import FAILING, Rule, judge
from tests.harness.gating_tables import row, samples

RULE = Rule()


def _verdict(base_xs, cand_xs, rule=RULE, base=None, cand=None):
    b = row(xs=base_xs, **(base or {})).to_dict()
    c = row(xs=cand_xs, **(cand or {})).to_dict()
    return judge("fakesuite", ("fake", "triton", "N=64", "float32", "fwd"), b, c, rule)


def test_no_change_is_same():
    judged = _verdict(samples(seed=1), samples(seed=2))
    assert judged.verdict == "same" and not judged.fails
    assert judged.low < judged.ratio < judged.high
    assert 1 / 1.05 <= judged.low and judged.high <= 1.05


def test_a_10_percent_shift_is_slower_and_fails():
    judged = _verdict(samples(seed=1), samples(1.10, seed=2))
    assert judged.verdict == "slower" and judged.fails
    assert judged.ratio == pytest.approx(1.10, rel=1e-9)
    assert 1 < judged.low < 1.10 < judged.high


def test_a_peers_slowdown_is_reported_not_failed_unless_asked():
    # The change under test is not in a peer's code: on the H100, SDPA's FlashAttention-2 ran
    # 5.5% slower one run later with nothing changed (docs/gating.md).
    judged = _verdict(samples(seed=1), samples(1.10, seed=2), base={"role": "peer"}, cand={"role": "peer"})
    assert judged.verdict == "peer slower" and not judged.fails and judged.ratio == pytest.approx(1.10, rel=1e-9)
    strict = _verdict(samples(seed=1), samples(1.10, seed=2), Rule(gate_peers=True), cand={"role": "peer"})
    assert strict.verdict == "slower" and strict.fails
    assert _case({"role": "peer"}, {"role": "peer", "status": "incorrect"}).verdict == "wrong"


def test_a_peers_lost_repeatability_is_reported_not_failed_unless_asked():
    # cuDNN's decode rows were bitwise repeatable in one full tier and not in the next, with
    # the same torch build (docs/gating.md); flashsuite's own rows still fail.
    lost = ({"role": "peer"}, {"role": "peer", "bitwise_repeatable": False})
    judged = _case(*lost)
    assert judged.verdict == "peer nondeterministic" and not judged.fails
    assert _case(*lost, rule=Rule(gate_peers=True)).verdict == "nondeterministic"
    ours = _case({"role": "triton"}, {"role": "triton", "bitwise_repeatable": False})
    assert ours.verdict == "nondeterministic" and ours.fails


def test_a_10_percent_speed_up_is_faster_and_passes():
    judged = _verdict(samples(seed=1), samples(0.90, seed=2))
    assert judged.verdict == "faster" and not judged.fails


def test_a_3_percent_shift_is_inside_the_band():
    assert _verdict(samples(seed=1), samples(1.03, seed=2)).verdict == "same"


@pytest.mark.parametrize("shift, n, noise", [(1.04, 12, 0.05), (1.08, 8, 0.2)])
def test_few_noisy_samples_near_the_threshold_are_inconclusive(shift, n, noise):
    """4% slower, but the interval reaches past the band; 8% slower, but the interval reaches below 1."""
    judged = _verdict(samples(n=n, noise=noise, seed=1), samples(shift, n=n, noise=noise, seed=2))
    assert judged.verdict == "inconclusive" and not judged.fails


def test_the_threshold_is_a_parameter():
    base, cand = samples(seed=1), samples(1.10, seed=2)
    assert _verdict(base, cand, Rule(max_slowdown=0.15)).verdict == "same"
    assert _verdict(base, cand, Rule(max_slowdown=0.08)).verdict == "slower"


def test_heavy_tailed_noise_gives_no_false_alarm_and_still_catches_10_percent():
    """200 pairs of heavy-tailed runs (lognormal body, Pareto spikes in 1 sample of 10):
    with no change none is called slower; shifted by 10%, all are."""
    same = Counter(_verdict(samples(n=150, noise=0.03, seed=i, heavy=True),
                            samples(n=150, noise=0.03, seed=1000 + i, heavy=True)).verdict for i in range(200))
    assert same["slower"] == 0 and same["faster"] == 0
    assert same["same"] >= 190
    shifted = Counter(_verdict(samples(n=150, noise=0.03, seed=i, heavy=True),
                               samples(1.10, n=150, noise=0.03, seed=1000 + i, heavy=True)).verdict for i in range(200))
    assert shifted["slower"] == 200


def test_heavy_tails_fool_the_mean_but_not_the_median():
    """The spikes move the mean by more than the band; the medians agree."""
    import statistics

    base, cand = samples(n=150, noise=0.03, seed=5, heavy=True), samples(n=150, noise=0.03, seed=6, heavy=True)
    cand = cand[:-10] + [x * 20 for x in cand[-10:]]  # ten huge spikes
    assert statistics.mean(cand) / statistics.mean(base) > 1.2
    assert _verdict(base, cand).verdict == "same"


# -- unsteady clocks --------------------------------------------------------------------------------


def test_a_thermal_slowdown_makes_a_slowdown_invalid():
    judged = _verdict(samples(seed=1), samples(1.10, seed=2),
                      cand={"throttled": True, "throttle_reasons": "hw_thermal,sw_thermal"})
    assert judged.verdict == "invalid" and not judged.fails
    assert "throttled: candidate hw_thermal,sw_thermal" in judged.notes[0]


def test_the_software_power_cap_is_part_of_a_kernels_speed_unless_asked():
    cap = {"throttled": True, "throttle_reasons": "sw_power_cap", "sm_clock_mhz_after": 1700.0}
    assert _verdict(samples(seed=1), samples(1.10, seed=2), cand=cap).verdict == "slower"
    strict = _verdict(samples(seed=1), samples(1.10, seed=2), Rule(throttle="any"), cand=cap)
    assert strict.verdict == "invalid" and "sw_power_cap" in strict.notes[0]


def test_clocks_that_differ_by_more_than_2_percent_make_a_change_invalid():
    locked = {"sm_clock_mhz_before": 1755.0, "sm_clock_mhz_after": 1755.0}
    judged = _verdict(samples(seed=1), samples(1.10, seed=2), cand=locked)
    assert judged.verdict == "invalid" and judged.notes == ["SM clock 1980 MHz in the baseline, 1755 MHz now"]
    assert _verdict(samples(seed=1), samples(0.9, seed=2), cand=locked).verdict == "invalid"
    near = {"sm_clock_mhz_before": 1960.0, "sm_clock_mhz_after": 1960.0}
    assert _verdict(samples(seed=1), samples(1.10, seed=2), cand=near).verdict == "slower"
    assert _verdict(samples(seed=1), samples(1.10, seed=2), Rule(throttle="ignore"), cand=locked).verdict == "slower"


def test_no_change_on_unsteady_clocks_stays_same_with_a_note():
    judged = _verdict(samples(seed=1), samples(seed=2), cand={"sm_clock_mhz_before": 1700.0})
    assert judged.verdict == "same" and judged.notes


def test_rows_timed_differently_or_with_too_few_samples_are_invalid():
    graph = _verdict(samples(seed=1), samples(1.10, seed=2), cand={"timing_mode": "cuda-graph"})
    assert graph.verdict == "invalid" and "timed as cuda-events in the baseline, cuda-graph now" in graph.notes
    few = _verdict(samples(n=4, seed=1), samples(1.5, n=4, seed=2))
    assert few.verdict == "invalid" and few.notes == ["too few samples (4 and 4; at least 5)"]


# -- correctness, determinism, memory -------------------------------------------------------------------


def _case(base: dict | None, cand: dict | None, rule=RULE):
    b = row(**base).to_dict() if base is not None else None
    c = row(**cand).to_dict() if cand is not None else None
    return judge("fakesuite", ("fake", "triton", "N=64", "float32", "fwd"), b, c, rule)


@pytest.mark.parametrize("base, cand, verdict", [
    ({}, {"status": "incorrect"}, "wrong"),
    (None, {"status": "incorrect"}, "wrong"),
    ({"status": "unsupported"}, {"status": "incorrect"}, "wrong"),
    ({}, {"status": "crashed", "reason": "the worker process was killed by SIGSEGV"}, "broken"),
    ({}, {"status": "timeout"}, "broken"),
    ({}, {"bitwise_repeatable": False}, "nondeterministic"),
    ({}, {"bitwise_repeatable": False, "xs": samples(0.5)}, "nondeterministic"),
    ({}, {"status": "incorrect", "xs": samples(0.5)}, "wrong"),
])
def test_correctness_and_determinism_regressions_always_fail(base, cand, verdict):
    judged = _case(base, cand)
    assert judged.verdict == verdict and judged.fails


@pytest.mark.parametrize("base, cand, verdict", [
    ({"status": "incorrect"}, {}, "fixed"),
    ({"status": "unsupported"}, {}, "new"),
    ({}, {"status": "unsupported", "reason": "head dim 96 is not supported"}, "dropped"),
    ({"status": "incorrect"}, {"status": "incorrect"}, "not timed"),
    ({"status": "error"}, {"status": "incorrect"}, "not timed"),
    ({"status": "unavailable"}, {"status": "unavailable"}, "not timed"),
    (None, {}, "only in candidate"),
    ({}, None, "only in baseline"),
    ({"bitwise_repeatable": False}, {}, "same"),
])
def test_other_changes_pass(base, cand, verdict):
    judged = _case(base, cand)
    assert judged.verdict == verdict and not judged.fails


def test_memory_growth_is_reported_and_fails_only_when_asked():
    base, cand = {}, {"peak_bytes": int(1.3 * (1 << 20))}
    assert _case(base, cand).verdict == "same"
    grown = _case(base, cand, Rule(max_memory_growth=0.10))
    assert grown.verdict == "more memory" and grown.fails
    assert _case(base, cand, Rule(max_memory_growth=0.50)).verdict == "same"


def test_failing_verdicts_are_the_documented_ones():
    assert FAILING == ("wrong", "broken", "nondeterministic", "slower", "more memory")
