"""A fake technique for the harness tests: `out = 2 * x + 1` on a vector of length N, with one
implementation per way an implementation can behave (correct, wrong, crashing, ...).

Loaded as a plugin: FLASHSUITE_PLUGINS=tests.fake_technique (child worker processes inherit
the variable and import it the same way).

Misbehaviour that would hurt a whole run is tied to one case value:
  - "crashes" kills its process only at N == CRASH_N, and never answers at N == HANG_N;
  - "oom" raises torch.OutOfMemoryError only at N == OOM_N.
"""

from __future__ import annotations

import os
import signal
import time

import torch

from harness.cases import Case
from harness.errors import Unsupported
from harness.needs import CUDA
from harness.registry import Direction, Inputs, Technique, implementation, register_technique

NAME = "fake"
CRASH_N = 13
HANG_N = 7
OOM_N = 64
BIG_N = 4096  # from here on a case requires the feature "big"
NARROW_MAX_N = 4  # "narrow" supports only N <= this

ALL_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
LOW = (torch.float32, torch.bfloat16)


def make_inputs(case: Case, dtype: torch.dtype, device: torch.device, seed: int) -> Inputs:
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(case["N"], generator=generator, device=device, dtype=torch.float32).to(dtype)
    return Inputs({"x": x}, differentiable=("x",))


def flops(case: Case, direction: Direction) -> float:
    return 2.0 * case["N"] if direction == "fwd" else 3.0 * case["N"]


def min_bytes(case: Case, dtype: torch.dtype, direction: Direction) -> float:
    size = torch.finfo(dtype).bits // 8
    return (2 if direction == "fwd" else 4) * case["N"] * size


def required_features(case: Case) -> frozenset[str]:
    return frozenset({"big"}) if case["N"] >= BIG_N else frozenset()


def validate_case(case: Case) -> str | None:
    n = case["N"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return f"N must be a positive integer, got {n!r}"
    return None


TECHNIQUE = register_technique(Technique(
    name=NAME,
    summary="2x + 1, for testing the harness",
    parameters=("N",),
    make_inputs=make_inputs,
    flops=flops,
    min_bytes=min_bytes,
    required_features=required_features,
    validate_case=validate_case,
))


def _f(x: torch.Tensor) -> torch.Tensor:
    return x * 2 + 1


@implementation(NAME, "reference", role="reference", dtypes=ALL_DTYPES, features=("backward", "big"))
def build_reference(case: Case, x):
    """Plain PyTorch."""
    return lambda: _f(x)


@implementation(NAME, "good", role="triton", dtypes=(torch.float32, torch.float16, torch.bfloat16),
                features=("backward", "big"))
def build_good(case: Case, x):
    """Correct."""
    return lambda: _f(x)


@implementation(NAME, "unwritten", role="triton", dtypes=LOW)
def build_unwritten(case: Case, x):
    """Allocates its output uninitialized and never writes element 0."""

    def call():
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        out[1:] = _f(x[1:])
        return out

    return call


@implementation(NAME, "wrong", role="peer", dtypes=(torch.float32,))
def build_wrong(case: Case, x):
    """Off by 1% on the element of largest magnitude."""

    def call():
        out = _f(x)
        i = out.abs().argmax()
        out[i] = out[i] * 1.01
        return out

    return call


@implementation(NAME, "raises", role="peer", dtypes=LOW)
def build_raises(case: Case, x):
    """Raises in its closure."""

    def call():
        raise RuntimeError("fake failure in the closure")

    return call


@implementation(NAME, "oom", role="peer", dtypes=LOW)
def build_oom(case: Case, x):
    """Runs out of memory at N == OOM_N."""

    def call():
        if case["N"] == OOM_N:
            raise torch.OutOfMemoryError("fake: CUDA out of memory. Tried to allocate 1 PiB")
        return _f(x)

    return call


@implementation(NAME, "crashes", role="peer", dtypes=LOW)
def build_crashes(case: Case, x):
    """Kills its process (SIGSEGV) at N == CRASH_N; at N == HANG_N sleeps past any unit timeout."""

    def call():
        if case["N"] == CRASH_N:
            os.kill(os.getpid(), signal.SIGSEGV)
        if case["N"] == HANG_N:
            time.sleep(3600)
        return _f(x)

    return call


@implementation(NAME, "refuses", role="peer", dtypes=LOW)
def build_refuses(case: Case, x):
    """Raises Unsupported from its builder."""
    raise Unsupported(f"fake refuses N={case['N']}")


@implementation(NAME, "needs_gpu", role="peer", dtypes=LOW, needs=(CUDA,))
def build_needs_gpu(case: Case, x):
    """Needs a CUDA GPU."""
    return lambda: _f(x)


_calls_on: dict[int, int] = {}  # calls of `nondeterministic` per input values


@implementation(NAME, "nondeterministic", role="peer", dtypes=(torch.float32,))
def build_nondeterministic(case: Case, x):
    """Correct within tolerance, but every fourth call on the same input values perturbs the
    result (1e-6 relative), as atomics that reorder only sometimes: two calls may agree,
    REPEAT_CALLS (5) in a row cannot."""

    def call():
        values = hash(x.detach().cpu().numpy().tobytes())
        _calls_on[values] = _calls_on.get(values, 0) + 1
        out = _f(x)
        return out + out * 1e-6 if _calls_on[values] % 4 == 0 else out

    return call


@implementation(NAME, "narrow", role="peer", dtypes=LOW,
                unsupported=lambda case, dtype: None if case["N"] <= NARROW_MAX_N else f"N={case['N']} is above {NARROW_MAX_N}")
def build_narrow(case: Case, x):
    """Supports only tiny N."""
    return lambda: _f(x)
