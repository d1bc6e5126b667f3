"""The peer libraries registered beside flashsuite's kernels (implementations/attention/peers.py).
On a CPU only PyTorch SDPA (its own dispatch, and the math backend forced) can run; the
rest must say that they need CUDA."""

from __future__ import annotations

import pytest
import torch

from harness import registry
from harness.cases import Case
from implementations.attention import reference
from tests.implementations.attention._support import assert_rule, fwd_bwd, make_qkv
from tests.implementations.shared import reproduce

CPU_PEERS = ("sdpa", "sdpa-math")
GPU_ONLY_PEERS = ("sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "flex", "flash-attn", "xformers")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what is reported on a machine without CUDA")


@pytest.fixture(scope="module")
def impls() -> dict[str, registry.Implementation]:
    registry.load_all()
    return {impl.name: impl for impl in registry.implementations("attention")}


def test_every_peer_is_registered(impls):
    assert {name for name, impl in impls.items() if impl.role == "peer"} == set(CPU_PEERS + GPU_ONLY_PEERS)
    assert impls["reference"].role == "reference" and impls["triton"].role == "triton"


@pytest.mark.parametrize("name", CPU_PEERS)
def test_cpu_peers_can_run_here(impls, name):
    assert impls[name].missing_needs() is None


@NO_CUDA
@pytest.mark.parametrize("name", GPU_ONLY_PEERS)
def test_gpu_only_peers_report_missing_cuda(impls, name):
    reason = impls[name].missing_needs()
    assert reason is not None and "CUDA" in reason, f"{name}: missing_needs() = {reason!r}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", CPU_PEERS)
def test_cpu_peer_matches_reference_within_rule(impls, seed, name, dtype):
    """A small grouped-query causal case, N not a multiple of any tile: the builder returns
    a closure whose output and gradients pass the rule against the float64 reference."""
    B, H, H_KV, N, D = 2, 4, 2, 19, 32
    case = Case.of(B=B, H=H, H_KV=H_KV, N=N, D=D, causal=True)
    impl = impls[name]
    assert impl.why_not(registry.technique("attention"), case, dtype, "fwd+bwd") is None
    q, k, v, do = make_qkv(seed, B, H, H_KV, N, D, dtype)

    def via_builder(q, k, v):
        closure = impl.build(case, q=q, k=k, v=v)
        assert callable(closure)
        return closure()

    got = fwd_bwd(via_builder, q, k, v, do)
    ref_lowp = fwd_bwd(reference.attention, q, k, v, do, causal=True)
    ref64 = fwd_bwd(reference.attention, *(t.double() for t in (q, k, v)), do.double(), causal=True)
    assert got[0].dtype == dtype and got[0].shape == (B, H, N, D)
    assert_rule(("out", "dq", "dk", "dv"), got, ref_lowp, ref64, dtype, f"{name} at {dtype}; {reproduce(seed)}")


@pytest.mark.parametrize("name", CPU_PEERS)
def test_cpu_peer_is_causal_as_asked(impls, seed, name):
    """The closure honours the case's causal flag (and so is not trivially right above)."""
    q, k, v, _ = make_qkv(seed, 1, 2, 1, 9, 16, torch.float64, with_grad_out=False)
    for causal in (False, True):
        case = Case.of(B=1, H=2, H_KV=1, N=9, D=16, causal=causal)
        got = impls[name].build(case, q=q, k=k, v=v)()
        torch.testing.assert_close(got, reference.attention(q, k, v, causal=causal), rtol=1e-10, atol=1e-12)


def test_sdpa_refusal_reasons_read_as_one_line_without_source_locations():
    from types import SimpleNamespace

    from implementations.attention.peers import _sdpa_reasons

    caught = [SimpleNamespace(message="Flash attention kernel not used because: (Triggered internally at "
                                      "/pytorch/aten/src/ATen/native/transformers/cuda/sdp_utils.cpp:986.)"),
              SimpleNamespace(message="Flash attention does not support the attn_mask\nargument. "
                                      "(Triggered internally at /pytorch/x.h:552.)")]
    assert _sdpa_reasons(caught) == ("Flash attention kernel not used because: "
                                     "Flash attention does not support the attn_mask argument.")
