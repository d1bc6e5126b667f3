"""The rnn technique as the harness sees it (implementations/rnn/__init__.py): its
registration, make_inputs, the work counts, the case checks, the features a case requires,
the Triton implementation's refusals, and the registered builders run end to end."""

from __future__ import annotations

import math

import pytest
import torch

from harness import registry
from harness.cases import Case
from harness.needs import CUDA, TRITON
from implementations import rnn
from tests.implementations.rnn._support import Rnn, assert_grads_rule, assert_rule, gradients, upstream
from tests.implementations.shared import reproduce

# NumPy's overflow warnings from the interpreter (saturated sigmoids) are expected.
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

CPU = torch.device("cpu")
BASE = dict(cell="lstm", B=2, T=3, H=4, D=16)


def case(**overrides) -> Case:
    return Case.from_mapping({**BASE, **overrides})


@pytest.fixture(scope="module")
def impls() -> dict[str, registry.Implementation]:
    registry.load_all()
    return {impl.name: impl for impl in registry.implementations("rnn")}


def test_the_technique_is_registered():
    registry.load_all()
    tech = registry.technique("rnn")
    assert tech.parameters == ("cell", "B", "T", "H", "D")
    assert tech.directions == ("fwd", "fwd+bwd") and tech.outputs == ("out",)
    assert (tech.tolerance.multiple, tech.tolerance.floor) == (2.0, 1e-5)
    assert tech.summary


def test_implementations(impls):
    names = [impl.name for impl in registry.implementations("rnn")]
    assert names[:4] == ["reference", "triton", "triton-split", "cudnn"]  # triton-split: test_triton_split.py
    assert set(names[4:]) == {"flashrnn-triton", "flashrnn-cuda-fused", "flashrnn-cuda"}  # see test_flashrnn.py
    assert registry.reference("rnn").name == "reference"
    ref, triton, cudnn = impls["reference"], impls["triton"], impls["cudnn"]
    assert ref.role == "reference" and ref.dtypes == {torch.float64, torch.float32, torch.float16, torch.bfloat16}
    assert ref.features == {"lstm", "gru", "slstm", "multi-head", "backward"}
    assert triton.role == "triton" and triton.summary and TRITON in triton.needs
    assert triton.dtypes == {torch.bfloat16, torch.float16, torch.float32}
    assert {"lstm", "gru", "slstm", "multi-head"} <= triton.features
    assert cudnn.role == "peer" and CUDA in cudnn.needs and cudnn.summary
    assert cudnn.features == {"lstm", "gru"}
    assert cudnn.dtypes == {torch.bfloat16, torch.float16, torch.float32, torch.float64}


# --- make_inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("cell,gates", [("lstm", 4), ("gru", 3), ("slstm", 4)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_make_inputs_shapes_and_determinism(seed, cell, gates, dtype):
    tech = registry.technique("rnn")
    c = case(cell=cell, B=3, T=5, H=2, D=16)
    first = tech.make_inputs(c, dtype, CPU, seed)
    again = tech.make_inputs(c, dtype, CPU, seed).tensors
    other = tech.make_inputs(c, dtype, CPU, seed + 1).tensors
    tensors = first.tensors
    assert set(tensors) == {"Wx", "R", "b"} and first.differentiable == ("Wx", "R", "b")
    assert tensors["Wx"].shape == (3, 5, gates, 2, 16)
    assert tensors["R"].shape == (gates, 2, 16, 16)
    assert tensors["b"].shape == (gates, 2, 16)
    assert all(t.dtype == dtype and t.device.type == "cpu" for t in tensors.values())
    assert all(torch.equal(tensors[n], again[n]) for n in tensors), f"not deterministic; {reproduce(seed)}"
    assert all(not torch.equal(tensors[n], other[n]) for n in tensors), "the seed made no difference"


def test_make_inputs_scales(seed):
    """Wx unit variance, R with standard deviation 1 / sqrt(D) (the recurrent term O(1)), b 0.1."""
    tensors = registry.technique("rnn").make_inputs(case(B=8, T=16, H=4, D=64), torch.float32, CPU, seed).tensors
    stds = {name: t.std().item() for name, t in tensors.items()}
    assert abs(stds["Wx"] - 1.0) < 0.05, stds
    assert abs(stds["R"] - 1 / math.sqrt(64)) < 0.05 / math.sqrt(64), stds
    assert abs(stds["b"] - 0.1) < 0.01, stds


def test_make_inputs_low_precision_are_the_float32_draws_rounded(seed):
    tech = registry.technique("rnn")
    c = case(cell="gru")
    full = tech.make_inputs(c, torch.float32, CPU, seed).tensors
    half = tech.make_inputs(c, torch.float16, CPU, seed).tensors
    assert all(torch.equal(full[n].to(torch.float16), half[n]) for n in full)


# --- work counts --------------------------------------------------------------------------------


def test_flops_by_hand():
    # 2 D^2 per gate, head, sequence and step: lstm 2 * 4 * (2 * 3 * 4) * 16^2, gru with 3 gates
    assert rnn.flops(case(), "fwd") == 2 * 4 * 2 * 3 * 4 * 256 == 49152
    assert rnn.flops(case(cell="gru"), "fwd") == 2 * 3 * 2 * 3 * 4 * 256 == 36864
    assert rnn.flops(case(cell="slstm", B=1, T=7, H=1, D=128), "fwd") == 2 * 4 * 7 * 128 ** 2
    assert rnn.flops(case(), "fwd+bwd") == 3 * 49152


@pytest.mark.parametrize("dtype,size", [(torch.bfloat16, 2), (torch.float16, 2), (torch.float32, 4),
                                        (torch.float64, 8)])
def test_min_bytes_by_hand(dtype, size):
    # lstm B=2, T=3, H=4, D=16: Wx 2*3*4*4*16 = 1536, R 4*4*16*16 = 4096, b 4*4*16 = 256, y 2*3*4*16 = 384
    forward = (1536 + 4096 + 256 + 384) * size
    assert rnn.min_bytes(case(), dtype, "fwd") == forward
    assert rnn.min_bytes(case(), dtype, "fwd+bwd") == 2 * forward  # + dy read, dWx, dR, db written
    # gru: 3 gates; Wx 2*3*3*4*16 = 1152, R 3*4*256 = 3072, b 3*4*16 = 192, y 384
    assert rnn.min_bytes(case(cell="gru"), dtype, "fwd") == (1152 + 3072 + 192 + 384) * size


# --- case checks and features -----------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [dict(), dict(cell="slstm", B=1, T=1, H=1, D=1), dict(H=1, D=768),
                                       dict(cell="gru", B=16, T=8192, H=6, D=128)])
def test_validate_case_accepts_good_cases(overrides):
    assert rnn.validate_case(case(**overrides)) is None


@pytest.mark.parametrize("overrides,message", [
    (dict(cell="rnn"), "cell must be one of lstm, gru, slstm, got 'rnn'"),
    (dict(cell="LSTM"), "cell must be one of lstm, gru, slstm, got 'LSTM'"),
    (dict(B=0), "B must be a positive integer, got 0"),
    (dict(T=-3), "T must be a positive integer, got -3"),
    (dict(T=True), "T must be a positive integer, got True"),
    (dict(H="2"), "H must be a positive integer, got '2'"),
    (dict(D=1.5), "D must be a positive integer, got 1.5"),
], ids=["cell-unknown", "cell-case", "B=0", "T<0", "T-bool", "H-str", "D-float"])
def test_validate_case_refusals(overrides, message):
    assert rnn.validate_case(case(**overrides)) == message


@pytest.mark.parametrize("overrides,features", [
    (dict(H=1), {"lstm"}),
    (dict(cell="gru", H=1), {"gru"}),
    (dict(cell="slstm", H=1), {"slstm"}),
    (dict(H=2), {"lstm", "multi-head"}),
    (dict(cell="slstm", H=6), {"slstm", "multi-head"}),
])
def test_required_features(overrides, features):
    assert rnn.required_features(case(**overrides)) == features


def test_triton_unsupported_reasons(impls):
    tech = registry.technique("rnn")
    triton = impls["triton"]
    for D in (48, 256, 8, 768):
        reason = triton.why_not(tech, case(D=D), torch.bfloat16, "fwd")
        assert reason and f"head size {D} is not supported (accepted: 16, 32, 64, 128" in reason, reason
    assert triton.why_not(tech, case(), torch.float64, "fwd") == \
        "triton does not support dtype float64 (accepted: bfloat16, float16, float32)"
    for cell in ("lstm", "gru", "slstm"):
        for D in (16, 32, 64, 128):
            assert triton.why_not(tech, case(cell=cell, H=6, D=D), torch.float16, "fwd") is None
    assert triton.why_not(tech, case(cell="slstm", H=6, D=128), torch.bfloat16, "fwd+bwd") is None


def test_reference_runs_everything(impls):
    tech = registry.technique("rnn")
    for c in (case(cell="slstm", D=768, H=1), case(cell="gru", D=5, H=7)):
        for dtype in (torch.float64, torch.bfloat16):
            assert impls["reference"].why_not(tech, c, dtype, "fwd+bwd") is None


# --- the registered builders, end to end --------------------------------------------------------------


@pytest.mark.parametrize("name", ["reference", "triton"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "slstm"])
def test_builders_within_rule(impls, seed, name, cell):
    """The harness's path: make_inputs, the builder, the closure; within the rule."""
    tech = registry.technique("rnn")
    c = case(cell=cell, B=17, T=5, H=2, D=16)
    tensors = tech.make_inputs(c, torch.bfloat16, CPU, seed).tensors
    with torch.no_grad():
        out = impls[name].build(c, **tensors)()
    assert_rule(out, Rnn(cell, **tensors), f"{name} on {c.id}; {reproduce(seed)}")


@pytest.mark.parametrize("name", ["reference", "triton"])
def test_builders_backward_within_rule(impls, seed, name):
    """fwd+bwd as the harness runs it: leaves that need gradients, the closure, backward."""
    tech = registry.technique("rnn")
    c = case(cell="slstm", B=5, T=5, H=2, D=32)
    tensors = tech.make_inputs(c, torch.float16, CPU, seed).tensors
    r = Rnn("slstm", **tensors)
    dy = upstream(seed, r)
    _, grads = gradients(lambda cell, Wx, R, b: impls[name].build(c, Wx=Wx, R=R, b=b)(), r, dy)
    assert_grads_rule(grads, r, dy, f"{name} on {c.id}; {reproduce(seed)}")
