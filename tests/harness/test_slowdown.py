"""The test-only slowdown switch (FLASHSUITE_TEST_SLOWDOWN): nothing when unset, extra work of
the asked fraction when set, and rows that say so."""

from __future__ import annotations

import time

import pytest
import torch

from harness import slowdown
from harness.errors import UsageError
from harness.timing import Timer, TimingPolicy


def test_unset_changes_nothing(monkeypatch):
    monkeypatch.delenv(slowdown.VARIABLE, raising=False)
    step = lambda: None  # noqa: E731
    assert slowdown.apply("attention", "triton", step, lambda: None, timer=None) == (step, "")
    monkeypatch.setenv(slowdown.VARIABLE, "  ")
    assert slowdown.apply("attention", "triton", step, lambda: None, timer=None) == (step, "")


def test_other_implementations_are_untouched(monkeypatch):
    monkeypatch.setenv(slowdown.VARIABLE, "attention/triton=0.1")
    step = lambda: None  # noqa: E731
    assert slowdown.apply("attention", "sdpa", step, lambda: None, timer=None) == (step, "")
    assert slowdown.apply("decoding", "triton", step, lambda: None, timer=None) == (step, "")


@pytest.mark.parametrize("text, expected", [
    ("attention/triton=0.10", [("attention", "triton", 0.10)]),
    ("attention/triton=10%, decoding/*=0.5", [("attention", "triton", 0.10), ("decoding", "*", 0.5)]),
])
def test_parse(text, expected):
    assert slowdown.parse(text) == expected


def test_a_wildcard_matches_every_implementation(monkeypatch):
    monkeypatch.setenv(slowdown.VARIABLE, "decoding/flash*=5%")
    assert slowdown.fraction_for("decoding", "flashdecoding") == pytest.approx(0.05)
    assert slowdown.fraction_for("decoding", "sdpa") == 0.0


@pytest.mark.parametrize("text", ["attention=0.1", "attention/triton", "attention/triton=fast", "attention/triton=0",
                                  "/triton=0.1", "attention/triton=20"])
def test_a_malformed_value_is_refused(text):
    with pytest.raises(UsageError, match="is not TECHNIQUE/IMPL=FRACTION"):
        slowdown.parse(text)


def test_the_busy_wait_adds_at_least_the_extra_time():
    slowed = slowdown.spinning(lambda: "out", extra_ms=3.0)
    started = time.perf_counter()
    assert slowed() == "out"
    assert time.perf_counter() - started >= 3e-3


def test_apply_calibrates_on_the_closure_and_adds_the_fraction(monkeypatch):
    """On the CPU: a 2 ms closure, 50% asked: every call of the wrapped closure lasts at
    least 1.5 times the calibrated time's extra (a busy wait cannot end early)."""
    monkeypatch.setenv(slowdown.VARIABLE, "fake/good=50%")
    timer = Timer(torch.device("cpu"), TimingPolicy(min_samples=5, max_samples=5, min_seconds=0, max_seconds=1,
                                                    warmup_calls=1, warmup_seconds=0, batch=1))

    def step():
        until = time.perf_counter() + 2e-3
        while time.perf_counter() < until:
            pass

    slowed, note = slowdown.apply("fake", "good", step, lambda: None, timer)
    assert slowed is not step
    assert note.startswith("TEST ONLY: 50% extra work injected by FLASHSUITE_TEST_SLOWDOWN (")
    extra_ms = float(note.split("(")[1].split(" ms")[0])
    assert 0.99 <= extra_ms <= 5.0  # half of a measured 2 ms (plus whatever a busy host added)
    started = time.perf_counter()
    slowed()
    assert (time.perf_counter() - started) * 1e3 >= 2.0 + extra_ms


def test_a_slowed_run_says_so_in_its_rows(fake, monkeypatch, tmp_path, suite_dir):
    """End to end in this process: only the named implementation's row carries the note,
    and it is correct and timed as usual."""
    from harness.results import read_table
    from harness.runner import Runner, RunOptions
    from tests.harness.helpers import fake_suite

    monkeypatch.setenv(slowdown.VARIABLE, "fake/good=0.5")
    suite_dir("slowed", fake_suite())
    table = Runner(RunOptions(suite="slowed", impls=("reference", "good"), results_dir=tmp_path / "results",
                              isolate=False)).run()
    rows = read_table(table).set_index("impl")
    assert rows.status["good"] == "ok" and rows.status["reference"] == "ok"
    assert "TEST ONLY: 50% extra work injected" in rows.reason["good"]
    assert "TEST ONLY" not in rows.reason["reference"]


def test_a_malformed_variable_fails_the_rows_loudly(fake, monkeypatch, tmp_path, suite_dir):
    from harness.results import read_table
    from harness.runner import Runner, RunOptions
    from tests.harness.helpers import fake_suite

    monkeypatch.setenv(slowdown.VARIABLE, "fake-good=0.5")
    suite_dir("slowed", fake_suite())
    table = Runner(RunOptions(suite="slowed", impls=("good",), results_dir=tmp_path / "results", isolate=False)).run()
    good = read_table(table).iloc[0]
    assert good.status == "error" and "FLASHSUITE_TEST_SLOWDOWN: 'fake-good=0.5' is not" in good.reason
