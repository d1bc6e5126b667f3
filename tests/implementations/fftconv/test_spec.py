"""The fftconv technique as the harness sees it (implementations/fftconv/__init__.py): its
registration, make_inputs, the work counts, the case checks, the features a case requires, the
Triton implementation's refusals, the suites, and the registered builders run end to end."""

from __future__ import annotations

import math

import pytest
import torch

from harness import registry, suites
from harness.cases import Case
from harness.needs import CUDA, TRITON
from implementations import fftconv
from tests.implementations.fftconv._support import TOL, Conv, assert_rule
from tests.implementations.shared import reproduce, verdict

CPU = torch.device("cpu")
BASE = dict(B=2, C=3, N=64, K=64, gated=False)


def case(**overrides) -> Case:
    return Case.from_mapping({**BASE, **overrides})


@pytest.fixture(scope="module")
def impls() -> dict[str, registry.Implementation]:
    registry.load_all()
    return {impl.name: impl for impl in registry.implementations("fftconv")}


def test_the_technique_is_registered(impls):
    tech = registry.technique("fftconv")
    assert tech.parameters == ("B", "C", "N", "K", "gated")
    assert tech.directions == ("fwd", "fwd+bwd") and tech.outputs == ("out",)
    assert (tech.tolerance.multiple, tech.tolerance.floor) == (2.0, 1e-5)
    assert tech.summary


def test_implementations(impls):
    assert [impl.name for impl in registry.implementations("fftconv")] == ["reference", "triton", "conv1d", "torch-fft"]
    assert registry.reference("fftconv").name == "reference"
    ref, triton = impls["reference"], impls["triton"]
    assert ref.dtypes == {torch.float64, torch.float32, torch.float16, torch.bfloat16}
    assert triton.role == "triton" and triton.summary and TRITON in triton.needs
    assert triton.dtypes == {torch.bfloat16, torch.float16, torch.float32}
    assert all(impl.features == {"gated", "backward"} for impl in impls.values())
    assert all(CUDA in impls[name].needs for name in ("conv1d", "torch-fft"))


# --- make_inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_make_inputs_shapes_and_determinism(seed, gated, dtype):
    tech = registry.technique("fftconv")
    c = case(B=2, C=5, N=40, K=9, gated=gated)
    first = tech.make_inputs(c, dtype, CPU, seed)
    again = tech.make_inputs(c, dtype, CPU, seed).tensors
    other = tech.make_inputs(c, dtype, CPU, seed + 1).tensors
    tensors = first.tensors
    names = ("u", "k", "v", "w") if gated else ("u", "k")
    assert tuple(tensors) == names and first.differentiable == names
    assert tensors["u"].shape == (2, 5, 40) and tensors["k"].shape == (5, 9)
    assert all(tensors[n].shape == (2, 5, 40) for n in names[2:])
    assert all(t.dtype == dtype and t.device.type == "cpu" for t in tensors.values())
    assert all(torch.equal(tensors[n], again[n]) for n in names), f"not deterministic; {reproduce(seed)}"
    assert all(not torch.equal(tensors[n], other[n]) for n in names), "the seed made no difference"


def test_make_inputs_u_and_k_do_not_depend_on_gating(seed):
    tech = registry.technique("fftconv")
    plain = tech.make_inputs(case(gated=False), torch.float32, CPU, seed).tensors
    gated = tech.make_inputs(case(gated=True), torch.float32, CPU, seed).tensors
    assert torch.equal(plain["u"], gated["u"]) and torch.equal(plain["k"], gated["k"])


def test_make_inputs_scales(seed):
    """u, v, w unit variance; k with standard deviation 1/sqrt(K), so outputs are O(1)."""
    c = case(B=4, C=16, N=1024, K=256, gated=True)
    tensors = registry.technique("fftconv").make_inputs(c, torch.float32, CPU, seed).tensors
    stds = {name: t.std().item() for name, t in tensors.items()}
    assert all(abs(stds[n] - 1.0) < 0.02 for n in ("u", "v", "w")), stds
    assert abs(stds["k"] - 1 / 16) < 0.05 / 16, stds


def test_make_inputs_low_precision_are_the_float32_draws_rounded(seed):
    tech = registry.technique("fftconv")
    low = tech.make_inputs(case(gated=True), torch.bfloat16, CPU, seed).tensors
    high = tech.make_inputs(case(gated=True), torch.float32, CPU, seed).tensors
    assert all(torch.equal(low[n], high[n].to(torch.bfloat16)) for n in low)


# --- work counts --------------------------------------------------------------------------------


def test_flops_by_hand():
    # per sequence, L = 2N = 128: two real FFTs 2 * 2.5 * 128 * 7 = 4480, the product 6 * 65 = 390
    assert fftconv.flops(case(), "fwd") == 2 * 3 * (4480 + 390)
    # gated: the two gate multiplies, 2N = 128 more per sequence; K does not matter
    assert fftconv.flops(case(gated=True, K=5), "fwd") == 2 * 3 * (4480 + 390 + 128)
    L = 16384
    assert fftconv.flops(case(B=16, C=768, N=8192, K=8192), "fwd") == 16 * 768 * (5 * L * 14 + 6 * (L // 2 + 1))
    # the backward: the input's gradient and the filter's, each counted as one more convolution
    assert fftconv.flops(case(gated=True), "fwd+bwd") == 3 * fftconv.flops(case(gated=True), "fwd")


@pytest.mark.parametrize("dtype,size", [(torch.bfloat16, 2), (torch.float16, 2), (torch.float32, 4), (torch.float64, 8)])
def test_min_bytes_by_hand(dtype, size):
    # B=2, C=3, N=64: u and y 2 * 2 * 3 * 64 = 768 elements, k 3 * 64 = 192; gated, v and w 768 more
    assert fftconv.min_bytes(case(), dtype, "fwd") == (768 + 192) * size
    assert fftconv.min_bytes(case(gated=True, K=8), dtype, "fwd") == (2 * 768 + 24) * size
    # fwd+bwd: the inputs (u, k) read again, y's gradient read, one gradient written per input
    assert fftconv.min_bytes(case(), dtype, "fwd+bwd") == (768 + 192 + 2 * (384 + 192) + 384) * size
    assert fftconv.min_bytes(case(gated=True, K=8), dtype, "fwd+bwd") == (2 * 768 + 24 + 2 * (3 * 384 + 24) + 384) * size


# --- case checks and features -------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [dict(), dict(B=1, C=1, N=1, K=1), dict(N=8192, K=1), dict(gated=True),
                                       dict(B=16, C=768, N=65536, K=65536)])
def test_validate_case_accepts_good_cases(overrides):
    assert fftconv.validate_case(case(**overrides)) is None


@pytest.mark.parametrize("overrides,message", [
    (dict(B=0), "B must be a positive integer, got 0"),
    (dict(C=2.0), "C must be a positive integer, got 2.0"),
    (dict(N=True), "N must be a positive integer, got True"),
    (dict(K="8"), "K must be a positive integer, got '8'"),
    (dict(K=65), "the filter must not be longer than the sequence: K=65 > N=64"),
    (dict(gated=1), "gated must be true or false, got 1"),
], ids=["B=0", "C-float", "N-bool", "K-str", "K>N", "gated-int"])
def test_validate_case_refusals(overrides, message):
    assert fftconv.validate_case(case(**overrides)) == message


def test_required_features():
    assert fftconv.required_features(case()) == frozenset()
    assert fftconv.required_features(case(gated=True)) == {"gated"}


def test_triton_refusals(impls):
    tech = registry.technique("fftconv")
    triton = impls["triton"]
    assert triton.why_not(tech, case(N=1 << 20, K=1), torch.bfloat16, "fwd") is None
    reason = triton.why_not(tech, case(N=(1 << 20) + 1, K=1), torch.bfloat16, "fwd")
    assert reason.startswith("N=1048577 is longer than the Monarch kernels' 1048576") and "\n" not in reason
    assert triton.why_not(tech, case(), torch.float64, "fwd") == \
        "triton does not support dtype float64 (accepted: bfloat16, float16, float32)"


# --- the suites -----------------------------------------------------------------------------------


def test_suites_load(impls):
    quick, full = suites.load("fftconv", "quick"), suites.load("fftconv", "full")
    assert quick.requires == "cuda" and quick.units and len(full.units) > len(quick.units)
    headline = [u for u in quick.units if u.case.as_dict() == dict(B=16, C=768, N=8192, K=8192, gated=u.case["gated"])]
    assert {(u.dtype, u.case["gated"]) for u in headline} == \
        {(d, g) for d in (torch.bfloat16, torch.float32) for g in (False, True)}
    lengths = {u.case["N"] for u in full.units if u.case["B"] * u.case["C"] >= 4096}
    assert {1 << e for e in range(10, 17)} <= lengths
    tech = registry.technique("fftconv")
    for unit in full.units:  # every case the Triton kernel can run
        assert impls["triton"].why_not(tech, unit.case, unit.dtype, unit.direction) is None, unit.case.id
    smoke = [u for u in suites.load("smoke", "quick").units if u.technique == "fftconv"]
    assert {u.case["K"] for u in smoke} == {7, 300} and {u.case["gated"] for u in smoke} == {False, True}
    assert all(u.case["B"] * u.case["C"] * u.case["N"] <= 1024 for u in smoke), \
        "smoke cases must run in the interpreter in seconds"


# --- the registered builders, end to end -------------------------------------------------------------


@pytest.mark.parametrize("name", ["reference", "triton"])
@pytest.mark.parametrize("gated", [False, True])
def test_builders_within_rule(impls, seed, name, gated):
    """The harness's path: make_inputs, the builder, the closure; within the rule."""
    tech = registry.technique("fftconv")
    c = case(B=2, C=3, N=300, K=300, gated=gated)
    tensors = tech.make_inputs(c, torch.bfloat16, CPU, seed).tensors
    with torch.no_grad():
        out = impls[name].build(c, **tensors)()
    assert_rule(out, Conv(**tensors), f"{name} on {c.id}; {reproduce(seed)}")


@pytest.mark.parametrize("name", ["reference", "triton"])
def test_builders_differentiate_within_rule(impls, seed, name):
    """fwd+bwd through the builders (inputs that require grad): u's gradient within the rule
    against the float64 reference's (backward.py's own tests cover every input)."""
    tech = registry.technique("fftconv")
    c = case(B=2, C=3, N=300, K=100, gated=True)
    tensors = tech.make_inputs(c, torch.bfloat16, CPU, seed).tensors
    grads = {}
    for dtype, impl in ((torch.bfloat16, impls[name]), (torch.float64, impls["reference"])):
        leaves = {n: t.detach().to(dtype).requires_grad_() for n, t in tensors.items()}
        impl.build(c, **leaves)().backward(torch.ones(2, 3, 300, dtype=dtype))
        grads[dtype] = leaves["u"].grad
    leaves = {n: t.detach().requires_grad_() for n, t in tensors.items()}
    impls["reference"].build(c, **leaves)().backward(torch.ones(2, 3, 300, dtype=torch.bfloat16))
    ok, line = verdict(grads[torch.bfloat16], leaves["u"].grad, grads[torch.float64], torch.bfloat16, TOL)
    assert ok, f"{name} grad u on {c.id}; {reproduce(seed)}\n  {line}"


def test_triton_builder_prepares_outside_the_call(impls, seed, monkeypatch):
    """The filter's spectrum is computed in the builder: the closure runs no FFT."""
    tech = registry.technique("fftconv")
    c = case(N=200, K=50, gated=True)
    tensors = tech.make_inputs(c, torch.float32, CPU, seed).tensors
    call = impls["triton"].build(c, **tensors)
    monkeypatch.setattr(torch.fft, "fft", lambda *a, **k: pytest.fail("an FFT inside the timed call"))
    assert math.isfinite(call().abs().max().item())
