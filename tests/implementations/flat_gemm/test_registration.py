"""The flat-gemm technique as the harness sees it: the spec (inputs, work counts, case
checks), its implementations and peers, every builder's closure under the harness's rule,
and a suite of it planned and listed by `bench`."""

from __future__ import annotations

import math

import pytest
import torch
from rich.console import Console

from harness import cli, registry, runner, suites
from harness.cases import Case
from harness.errors import UsageError
from tests.implementations.flat_gemm._support import assert_rule, make_xw, spy_on_kernels, truth
from tests.implementations.shared import reproduce

TRITON_IMPLS = ("triton", "triton-flat", "triton-gemv")
PEERS = ("cublas", "cublas-linear")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what is reported on a machine without CUDA")
SUITE = """requires = "any"
[[group]]
technique = "flat-gemm"
dtypes = ["bfloat16", "float32"]
directions = [{directions}]
[group.grid]
M = [1, 13]
K = [129]
N = [77]
"""


@pytest.fixture(scope="module")
def impls() -> dict[str, registry.Implementation]:
    registry.load_all()
    return {impl.name: impl for impl in registry.implementations("flat-gemm")}


def test_the_technique_is_registered_forward_only():
    registry.load_all()
    tech = registry.technique("flat-gemm")
    assert "flat-gemm" in registry.technique_names()
    assert tech.parameters == ("M", "K", "N") and tech.directions == ("fwd",) and tech.outputs == ("y",)
    assert (tech.tolerance.multiple, tech.tolerance.floor) == (2.0, 1e-5)


def test_implementations_reference_first_then_triton_then_peers(impls):
    names = [impl.name for impl in registry.implementations("flat-gemm")]
    assert names == ["reference", *TRITON_IMPLS, *PEERS]
    assert [impls[n].role for n in names] == ["reference"] + ["triton"] * 3 + ["peer"] * 2
    assert torch.float64 in impls["reference"].dtypes
    for name in (*TRITON_IMPLS, *PEERS):
        assert impls[name].dtypes == {torch.bfloat16, torch.float16, torch.float32}, name
        assert impls[name].summary, f"{name} has no summary"


def test_work_counts():
    tech = registry.technique("flat-gemm")
    case = Case.of(M=3, K=129, N=77)
    assert tech.flops(case, "fwd") == 2 * 3 * 77 * 129
    assert tech.min_bytes(case, torch.bfloat16, "fwd") == (3 * 129 + 77 * 129 + 3 * 77) * 2
    assert tech.min_bytes(case, torch.float32, "fwd") == (3 * 129 + 77 * 129 + 3 * 77) * 4


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8"])
def test_validate_case_wants_positive_integers(bad):
    tech = registry.technique("flat-gemm")
    assert tech.validate_case(Case.of(M=1, K=2, N=3)) is None
    for name in ("M", "K", "N"):
        case = Case.from_mapping({**dict(M=1, K=2, N=3), name: bad})
        assert tech.validate_case(case) == f"{name} must be a positive integer, got {bad!r}"


def test_make_inputs_is_seeded_cast_from_float32_and_scaled(seed):
    tech = registry.technique("flat-gemm")
    case, cpu = Case.of(M=64, K=1024, N=512), torch.device("cpu")
    f32 = tech.make_inputs(case, torch.float32, cpu, seed).tensors
    again = tech.make_inputs(case, torch.float32, cpu, seed).tensors
    bf16 = tech.make_inputs(case, torch.bfloat16, cpu, seed).tensors
    assert set(f32) == {"x", "w"} and f32["x"].shape == (64, 1024) and f32["w"].shape == (512, 1024)
    assert all(torch.equal(f32[n], again[n]) and torch.equal(bf16[n], f32[n].to(torch.bfloat16)) for n in f32)
    assert abs(f32["w"].std().item() * math.sqrt(1024) - 1) < 0.05, reproduce(seed)
    assert 0.8 < truth(f32["x"], f32["w"]).std().item() < 1.2, "y should be O(1)"
    assert tech.make_inputs(case, torch.float32, cpu, seed).differentiable == ()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("name", ("reference", *TRITON_IMPLS))
def test_each_builder_runs_its_dataflow_within_rule(monkeypatch, impls, seed, name, dtype):
    """Through the harness's interface (build, then call the closure), with the dataflow the
    name promises (M = 3 is the heuristic's gemv; triton-flat must not take it)."""
    case = Case.of(M=3, K=129, N=77)
    assert impls[name].why_not(registry.technique("flat-gemm"), case, dtype, "fwd") is None
    launched = spy_on_kernels(monkeypatch)
    x, w = make_xw(seed, 3, 77, 129, dtype)
    closure = impls[name].build(case, x=x, w=w)
    assert callable(closure)
    assert_rule(closure(), x, w, f"{name} at {dtype}; {reproduce(seed)}")
    want = {"reference": [], "triton": ["gemv"], "triton-flat": ["flat"], "triton-gemv": ["gemv"]}[name]
    assert launched == want


@pytest.mark.parametrize("name", PEERS)
def test_peers_compute_x_times_w_transposed(impls, seed, name):
    """The peers' closures are right where they can be called (float64 on the CPU), and they
    report that they need CUDA where there is none."""
    x, w = make_xw(seed, 3, 77, 129, torch.float64)
    torch.testing.assert_close(impls[name].build(Case.of(M=3, K=129, N=77), x=x, w=w)(), truth(x, w))
    if not torch.cuda.is_available():
        assert "CUDA" in (impls[name].missing_needs() or ""), name


def test_bench_plans_a_suite_of_it(tmp_path):
    registry.load_all()
    path = tmp_path / "fg.toml"
    path.write_text(SUITE.format(directions='"fwd"'))
    planned = runner.plan(suites.load(str(path), "quick"))
    assert [p.unit.case.id for p in planned] == ["M=1,K=129,N=77"] * 2 + ["M=13,K=129,N=77"] * 2
    assert all(p.impls == ("reference", *TRITON_IMPLS, *PEERS) for p in planned)
    only = runner.plan(suites.load(str(path), "quick"), impls=["triton-gemv"], dtypes=["fp32"])
    assert [(p.unit.dtype, p.impls) for p in only] == [(torch.float32, ("triton-gemv",))] * 2


def test_bench_refuses_a_backward_suite(tmp_path):
    path = tmp_path / "fg.toml"
    path.write_text(SUITE.format(directions='"fwd", "fwd+bwd"'))
    with pytest.raises(UsageError, match=r"direction 'fwd\+bwd' not offered by flat-gemm \(accepted: fwd\)"):
        suites.load(str(path), "quick")


@NO_CUDA
def test_bench_list_shows_it(monkeypatch, capsys):
    monkeypatch.setattr(cli, "console", Console(width=400, color_system=None))
    assert cli.main(["list"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " flat-gemm " in f" {line} "]
    assert len(lines) == 6
    assert all("yes" in line for line in lines if any(f" {n} " in line for n in ("reference", *TRITON_IMPLS)))
    assert all("needs a CUDA GPU" in line for line in lines if any(f" {n} " in line for n in PEERS))
