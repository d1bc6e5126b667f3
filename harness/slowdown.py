"""TEST ONLY: make chosen implementations slower on purpose, to check that the gate catches it.

    FLASHSUITE_TEST_SLOWDOWN="attention/triton=0.10"            # 10% more time per timed call
    FLASHSUITE_TEST_SLOWDOWN="attention/triton=10%,decoding/*=0.05"

Each entry is TECHNIQUE/IMPL=FRACTION (a fraction like 0.10 or a percentage like 10%; `*`
matches any implementation of the technique). For a matching row, the measurer first times
the closure as it would anyway (the same timer, L2 flush and timing mode), then wraps it so
that every call also does FRACTION of that time in extra work on the same stream: on a GPU a
spin kernel (`torch.cuda._sleep`, its cycles per millisecond calibrated just before), on the
CPU a busy wait. The row's `reason` then says what was injected. Correctness and determinism
checks are untouched: only the timed closure is wrapped.

Unset (or empty), it changes nothing: `apply` returns the closure it was given. Never set it
for a measurement you keep: the rows it touches are not the implementation's speed.
"""

from __future__ import annotations

import fnmatch
import os
import time
from typing import Callable

import torch

from harness.errors import UsageError

VARIABLE = "FLASHSUITE_TEST_SLOWDOWN"


def parse(text: str) -> list[tuple[str, str, float]]:
    """(technique, impl pattern, fraction) for each entry of the variable's value."""
    out = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        target, sep, value = entry.partition("=")
        technique, slash, impl = target.strip().partition("/")
        fraction = _fraction(value.strip())
        if not sep or not slash or not technique or not impl or fraction is None:
            raise UsageError(f"{VARIABLE}: {entry!r} is not TECHNIQUE/IMPL=FRACTION "
                             "(e.g. attention/triton=0.10 or attention/triton=10%; FRACTION above 0, at most 10)")
        out.append((technique, impl.strip(), fraction))
    return out


def fraction_for(technique: str, impl: str, environ=os.environ) -> float:
    """The extra fraction of work asked for this implementation (0.0: none)."""
    text = environ.get(VARIABLE, "")
    if not text.strip():
        return 0.0
    for tech, pattern, fraction in parse(text):
        if tech == technique and fnmatch.fnmatchcase(impl, pattern):
            return fraction
    return 0.0


def apply(technique: str, impl: str, step: Callable[[], object], setup: Callable[[], None], timer,
          graph: bool = False) -> tuple[Callable[[], object], str]:
    """The closure to time and a note for the row: (step, "") unless the variable asks for a
    slowdown of this implementation."""
    fraction = fraction_for(technique, impl)
    if not fraction:
        return step, ""
    base_ms = timer.time(step, setup, graph=graph).median_ms
    extra_ms = fraction * base_ms
    if timer.on_gpu:
        cycles = max(1, round(extra_ms * _gpu_cycles_per_ms(timer.device)))

        def slowed() -> object:
            out = step()
            torch.cuda._sleep(cycles)
            return out
    else:
        slowed = spinning(step, extra_ms)
    return slowed, (f"TEST ONLY: {fraction:.0%} extra work injected by {VARIABLE} "
                    f"({extra_ms:.4g} ms per call over a measured {base_ms:.4g} ms)")


def spinning(step: Callable[[], object], extra_ms: float) -> Callable[[], object]:
    """step, then a busy wait of extra_ms on the host (the CPU's stand-in for a spin kernel)."""
    extra_s = extra_ms / 1e3

    def slowed() -> object:
        out = step()
        until = time.perf_counter() + extra_s
        while time.perf_counter() < until:
            pass
        return out

    return slowed


def _gpu_cycles_per_ms(device: torch.device) -> float:
    """How many cycles of torch.cuda._sleep take a millisecond on this GPU, now."""
    cycles = 2_000_000
    torch.cuda._sleep(cycles)  # warm
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    rates = []
    for _ in range(5):
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        torch.cuda.synchronize(device)
        rates.append(cycles / start.elapsed_time(end))
    return sorted(rates)[len(rates) // 2]


def _fraction(text: str) -> float | None:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return None
    return value if 0 < value <= 10 else None
