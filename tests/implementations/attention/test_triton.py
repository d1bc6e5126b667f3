"""The Triton FlashAttention-2 op (implementations/attention/triton_attention.py), run in
Triton's interpreter: forward and backward against the float64 reference under the
harness's tolerance rule, plus layouts, determinism, full coverage of the outputs,
input validation, and the GPUs' tilings forced through the launchers' config hooks.

The interpreter's tilings (triton_forward / triton_backward, "interpreter" configs):
forward BLOCK_M=32 BLOCK_N=16, dK/dV BLOCK_M=16 BLOCK_N=32, dQ BLOCK_M=32 BLOCK_N=16.
The sequence lengths below are below one block (1), between the blocks (17), and
several blocks with a remainder (45, 77, 130), plus an exact multiple (64).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from harness.correctness import bitwise_equal, poisoned_allocations
from implementations.attention import reference, triton_backward, triton_forward
from implementations.attention.triton_attention import attention
from tests.implementations.attention._support import LAYOUTS, assert_rule, fwd_bwd, make_qkv, rule_verdict, truth
from tests.implementations.shared import reproduce

NAMES = ("out", "dq", "dk", "dv")
B = 2
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
HEAD_DIMS = [32, 64, 128]
SEQ_LENS = [1, 17, 45, 64, 77, 130]
CAUSAL = [False, True]


def _pairwise_cases():
    """Every (sequence length, dtype) pair once; the head layout and head dim are Latin
    squares over those indices, so every pair of values of any two axes appears (checked
    by test_case_list_is_pairwise). Each case then runs causal and not."""
    cases = []
    for n, N in enumerate(SEQ_LENS):
        for t, dtype in enumerate(DTYPES):
            cases.append(dict(dtype=dtype, layout=list(LAYOUTS)[(t + n) % 3], D=HEAD_DIMS[(2 * t + n) % 3], N=N))
    return cases


CASES = _pairwise_cases()


def _case_id(c) -> str:
    return f"{str(c['dtype']).removeprefix('torch.')}-{c['layout']}-D{c['D']}-N{c['N']}"


def _check_against_reference(seed, dtype, causal, H, H_KV, N, D, sm_scale=None, q=None, k=None, v=None, do=None):
    if q is None:
        q, k, v, do = make_qkv(seed, B, H, H_KV, N, D, dtype)
    context = f"{dtype}, causal={causal}, H={H}, H_KV={H_KV}, N={N}, D={D}, sm_scale={sm_scale}; {reproduce(seed)}"
    got = fwd_bwd(attention, q, k, v, do, causal=causal, sm_scale=sm_scale)
    ref_lowp = fwd_bwd(reference.attention, q, k, v, do, causal=causal, scale=sm_scale)
    ref64 = fwd_bwd(reference.attention, *(t.double() for t in (q, k, v)), do.double(), causal=causal, scale=sm_scale)
    for name, g in zip(NAMES, got):
        assert g.dtype == dtype and g.shape == (q if name in ("out", "dq") else k).shape, name
    assert_rule(NAMES, got, ref_lowp, ref64, dtype, context)
    # Where the truth is identically zero (dQ and dK when N = 1: softmax over one key is
    # constant) the rule falls back to the call's largest output as its scale; those outputs
    # are also held to the tighter bound float32 rounding of dP - delta allows.
    zero = {name for name, r in zip(NAMES, ref64) if not r.any()}
    for i in sorted(NAMES.index(name) for name in zero):
        bound = _rounding_bound(q, k, v, do, sm_scale)
        residual = got[i].double().abs().max().item()
        assert residual <= bound, f"{NAMES[i]} should be ~0, max |{NAMES[i]}| = {residual:.3e} > {bound:.3e}; {context}"
    return got, ref64


def _rounding_bound(q, k, v, do, sm_scale) -> float:
    """What float32 rounding of dP - delta (D-term sums of dO * V) can leave in dS, carried
    through one product with Q or K: D * eps32 * max|dO| * max|V| * max(|Q|, |K|) * scale."""
    D = q.shape[-1]
    scale = 1 / math.sqrt(D) if sm_scale is None else sm_scale
    big = [t.double().abs().max().item() for t in (q, k, v, do)]
    return D * torch.finfo(torch.float32).eps * big[3] * big[2] * max(big[0], big[1]) * scale


def test_case_list_is_pairwise():
    axes = {"dtype": DTYPES, "layout": list(LAYOUTS), "D": HEAD_DIMS, "N": SEQ_LENS}
    for a, b in itertools.combinations(axes, 2):
        seen = {(c[a], c[b]) for c in CASES}
        missing = set(itertools.product(axes[a], axes[b])) - seen
        assert not missing, f"pairs of {a} and {b} never tested: {missing}"


@pytest.mark.parametrize("causal", CAUSAL, ids=["full", "causal"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_forward_backward_within_rule(seed, case, causal):
    H, H_KV = LAYOUTS[case["layout"]]
    _check_against_reference(seed, case["dtype"], causal, H, H_KV, case["N"], case["D"])


@pytest.mark.parametrize("D", [16, 256])
def test_other_supported_head_dims(seed, D):
    _check_against_reference(seed, torch.float16, True, 4, 2, 33, D)


@pytest.mark.parametrize("sm_scale", [0.03, 0.5])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_custom_sm_scale(seed, dtype, sm_scale):
    """A scale other than 1/sqrt(D) is used in the forward and in both backward kernels."""
    got, ref64 = _check_against_reference(seed, dtype, True, 4, 2, 45, 64, sm_scale=sm_scale)
    default = truth(*make_qkv(seed, B, 4, 2, 45, 64, dtype)[:3], causal=True)
    assert (got[0].double() - default).abs().max() > 10 * (got[0].double() - ref64[0]).abs().max(), \
        "the custom scale made no difference"


def test_default_sm_scale_is_inverse_sqrt_head_dim(seed):
    q, k, v, do = make_qkv(seed, B, 4, 2, 33, 64, torch.bfloat16)
    implicit = fwd_bwd(attention, q, k, v, do, causal=True)
    explicit = fwd_bwd(attention, q, k, v, do, causal=True, sm_scale=1 / math.sqrt(64))
    assert bitwise_equal(implicit, explicit), reproduce(seed)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_large_scores_stay_finite(seed, dtype):
    """Scores in the hundreds: exp overflows unless the running max is subtracted
    (online softmax rescaling across key tiles)."""
    q, k, v, do = make_qkv(seed, B, 4, 2, 77, 32, dtype)
    q, k = (q.float() * 6).to(dtype), (k.float() * 6).to(dtype)
    _check_against_reference(seed, dtype, False, 4, 2, 77, 32, q=q, k=k, v=v, do=do)


def test_rule_accepts_rounding_noise_where_the_truth_is_zero():
    # dQ and dK are identically zero at N = 1; the kernel's are float32 rounding noise, which
    # the rule judges against the call's largest output (harness/correctness.py).
    q, k, v, do = make_qkv(1234, B, 4, 4, 1, 128, torch.float32)
    got = fwd_bwd(attention, q, k, v, do, causal=False)
    ref_lowp = fwd_bwd(reference.attention, q, k, v, do, causal=False)
    ref64 = fwd_bwd(reference.attention, *(t.double() for t in (q, k, v)), do.double(), causal=False)
    if ref64[1].any() or ref64[2].any():
        pytest.fail("dQ and dK should be zero in exact arithmetic")  # not an AssertionError: not the xfail
    if not 0 < got[1].abs().max() < _rounding_bound(q, k, v, do, None):
        pytest.fail("the kernel's dQ should be nonzero rounding noise")
    assert_rule(NAMES, got, ref_lowp, ref64, torch.float32, "N=1, float32")


# --- layouts -----------------------------------------------------------------------------


def _bnhd(seed, shape_bhnd, dtype):
    """A [B, H, N, D] view of a contiguous [B, N, H, D] tensor (unit stride along D)."""
    b, h, n, d = shape_bhnd
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, h, d, generator=g).to(dtype).transpose(1, 2)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("layout", ["transposed", "strided-rows", "padded-rows", "strided-d"])
def test_noncontiguous_inputs_match_contiguous(monkeypatch, seed, layout, causal):
    """Views used in place (transposed [B, N, H, D]; every other sequence row) and views the
    op must copy first (rows of D+1 elements, not 16-byte aligned; stride 2 along D) give
    bitwise the results of contiguous copies, forward and gradients."""
    dtype, H, H_KV, N, D = torch.bfloat16, 4, 2, 45, 32
    g = torch.Generator().manual_seed(seed)

    def view(heads):
        if layout == "transposed":
            return torch.randn(B, N, heads, D, generator=g).to(dtype).transpose(1, 2)
        if layout == "strided-rows":
            return torch.randn(B, heads, 2 * N, D, generator=g).to(dtype)[:, :, ::2]
        if layout == "padded-rows":
            return torch.randn(B, heads, N, D + 1, generator=g).to(dtype)[..., :D]
        return torch.randn(B, heads, N, 2 * D, generator=g).to(dtype)[..., ::2]

    q, k, v = view(H), view(H_KV), view(H_KV)
    do = torch.randn(B, H, N, D, generator=g).to(dtype)
    assert not any(t.is_contiguous() for t in (q, k, v))
    seen = []
    original = triton_forward.forward
    monkeypatch.setattr(triton_forward, "forward", lambda *a: seen.append(a[0].stride()) or original(*a))
    got = fwd_bwd(attention, q, k, v, do, causal=causal)
    in_place = layout in ("transposed", "strided-rows")
    assert seen == [q.stride() if in_place else q.contiguous().stride()], f"{layout}: kernel got strides {seen}"
    monkeypatch.undo()
    want = fwd_bwd(attention, *(t.contiguous() for t in (q, k, v)), do, causal=causal)
    assert all(torch.equal(a, b) for a, b in zip(got, want)), f"{layout}: results differ; {reproduce(seed)}"


def test_noncontiguous_grad_out(seed):
    q, k, v, do = make_qkv(seed, B, 4, 1, 17, 64, torch.float16)
    do_t = do.transpose(1, 2).contiguous().transpose(1, 2)
    assert not do_t.is_contiguous()
    assert bitwise_equal(fwd_bwd(attention, q, k, v, do_t, causal=True),
                         fwd_bwd(attention, q, k, v, do, causal=True)), reproduce(seed)


def _misaligned(t: torch.Tensor, how: str) -> torch.Tensor:
    """The same values in a view that passes the op's layout check (unit stride along D,
    16-byte aligned rows) yet is not 16-byte aligned where a head starts: the data starts
    one element past a 16-byte boundary ("offset"), or heads are N*D+1 elements apart
    ("head-stride")."""
    b, h, n, d = t.shape
    if how == "offset":
        buf = torch.zeros(t.numel() + 8, dtype=t.dtype)
        view = buf[1:1 + t.numel()].view(t.shape)
    else:
        buf = torch.zeros(b * h * (n * d + 1), dtype=t.dtype)
        view = buf.as_strided(t.shape, (h * (n * d + 1), n * d + 1, d, 1))
    view.copy_(t)
    assert view.stride(-1) == 1 and (view.stride(2) * view.element_size()) % 16 == 0
    return view


@pytest.mark.parametrize("how", ["offset", "head-stride"])
def test_misaligned_input_view(seed, how):
    q, k, v, do = make_qkv(seed, B, 4, 2, 17, 64, torch.bfloat16)
    q_m = _misaligned(q, how)
    got = fwd_bwd(attention, q_m, k, v, do, causal=True)
    assert bitwise_equal(got, fwd_bwd(attention, q, k, v, do, causal=True))


def test_misaligned_grad_out(seed):
    q, k, v, do = make_qkv(seed, B, 4, 2, 17, 64, torch.bfloat16)
    do_m = _misaligned(do, "offset")
    assert do_m.is_contiguous() and do_m.data_ptr() % 16
    assert bitwise_equal(fwd_bwd(attention, q, k, v, do_m, causal=True), fwd_bwd(attention, q, k, v, do, causal=True))


# --- determinism, coverage of the outputs, the causal mask --------------------------------


@pytest.mark.parametrize("layout", ["MHA", "GQA"])
def test_deterministic(seed, layout):
    """Two calls give the same bits: output and all three gradients (no atomics)."""
    H, H_KV = LAYOUTS[layout]
    q, k, v, do = make_qkv(seed, B, H, H_KV, 77, 64, torch.bfloat16)
    first = fwd_bwd(attention, q, k, v, do, causal=True)
    second = fwd_bwd(attention, q, k, v, do, causal=True)
    assert bitwise_equal(first, second), f"two runs differ; {reproduce(seed)}"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("layout,N", [("MHA", 45), ("GQA", 77), ("MQA", 1)])
def test_every_output_element_written(seed, layout, N, causal):
    """With every torch.empty* NaN-filled, no NaN survives in the output or the gradients:
    each element of O, LSE, delta, dQ, dK, dV (and the GQA float32 buffers) is written."""
    H, H_KV = LAYOUTS[layout]
    q, k, v, do = make_qkv(seed, B, H, H_KV, N, 32, torch.float16)
    with poisoned_allocations():
        probe = torch.empty(4)
        assert probe.isnan().all(), "poisoned_allocations() did not poison torch.empty"
        got = fwd_bwd(attention, q, k, v, do, causal=causal)
    for name, t in zip(NAMES, got):
        assert not t.isnan().any(), f"{name}: {int(t.isnan().sum())} elements never written; {reproduce(seed)}"


@pytest.mark.parametrize("layout", ["MHA", "MQA"])
def test_causal_rows_ignore_later_keys(seed, layout):
    """Output row i and dQ row i are unchanged (bitwise) when the keys and values after i
    change, with i inside and at the edges of the 32-row and 16-key tiles."""
    H, H_KV = LAYOUTS[layout]
    q, k, v, do = make_qkv(seed, B, H, H_KV, 50, 32, torch.float32)
    base = fwd_bwd(attention, q, k, v, do, causal=True)
    g = torch.Generator().manual_seed(seed + 1)
    for i in (0, 15, 16, 31, 32, 40):
        k2, v2 = k.clone(), v.clone()
        k2[:, :, i + 1:] = 5 * torch.randn(k2[:, :, i + 1:].shape, generator=g)
        v2[:, :, i + 1:] = 5 * torch.randn(v2[:, :, i + 1:].shape, generator=g)
        changed = fwd_bwd(attention, q, k2, v2, do, causal=True)
        for name, a, b in zip(("out", "dq"), changed[:2], base[:2]):
            assert torch.equal(a[:, :, :i + 1], b[:, :, :i + 1]), (
                f"{name} rows <= {i} changed when only keys/values after {i} did; {reproduce(seed)}")


# --- bad inputs ---------------------------------------------------------------------------


def _t(*shape, dtype=torch.float16):
    return torch.randn(*shape).to(dtype)


@pytest.mark.parametrize("q,k,v,match", [
    pytest.param(_t(2, 4, 16, 96), _t(2, 4, 16, 96), _t(2, 4, 16, 96), r"head dim 96", id="head-dim-96"),
    pytest.param(_t(2, 4, 16, 64), _t(2, 2, 16, 64), _t(2, 2, 16, 32), r"k, v", id="k-v-shapes-differ"),
    pytest.param(_t(2, 4, 16, 64), _t(2, 2, 16, 64), _t(2, 2, 17, 64), r"k, v", id="k-v-lengths-differ"),
    pytest.param(_t(2, 4, 16, 64), _t(2, 3, 16, 64), _t(2, 3, 16, 64), r"H must be a multiple of H_KV",
                 id="H-not-multiple-of-H_KV"),
    pytest.param(_t(2, 4, 16, 64), _t(2, 2, 20, 64), _t(2, 2, 20, 64), r"do not match q", id="kv-length-not-q"),
    pytest.param(_t(2, 4, 16, 64), _t(2, 2, 16, 32), _t(2, 2, 16, 32), r"do not match q", id="kv-head-dim-not-q"),
    pytest.param(_t(2, 4, 16, 64), _t(1, 2, 16, 64), _t(1, 2, 16, 64), r"do not match q", id="batch-differs"),
    pytest.param(_t(2, 4, 16, 64), _t(2, 2, 16, 64, dtype=torch.bfloat16), _t(2, 2, 16, 64),
                 r"must share a dtype", id="mixed-dtypes"),
    pytest.param(_t(2, 4, 16, 64, dtype=torch.float64), _t(2, 2, 16, 64, dtype=torch.float64),
                 _t(2, 2, 16, 64, dtype=torch.float64), r"dtype torch.float64 is not supported", id="float64"),
    pytest.param(_t(4, 16, 64), _t(2, 16, 64), _t(2, 16, 64), r"expected q \[B, H, N, D\]", id="3d-inputs"),
])
def test_bad_inputs_raise_value_error(q, k, v, match):
    with pytest.raises(ValueError, match=match):
        attention(q, k, v, causal=True)


# --- the checks can fail -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_rule_rejects_wrong_masking(seed, dtype):
    """A kernel with the wrong causality fails the same check the real one passes."""
    q, k, v, do = make_qkv(seed, B, 4, 2, 45, 32, dtype)
    wrong = fwd_bwd(attention, q, k, v, do, causal=False)
    ref_lowp = fwd_bwd(reference.attention, q, k, v, do, causal=True)
    ref64 = fwd_bwd(reference.attention, *(t.double() for t in (q, k, v)), do.double(), causal=True)
    for name, w, r, r64 in zip(NAMES, wrong, ref_lowp, ref64):
        ok, line = rule_verdict(w, r, r64, dtype)
        assert not ok, f"{name}: a non-causal result passed as causal ({line}); {reproduce(seed)}"
    with pytest.raises(AssertionError, match="outside the tolerance rule"):
        assert_rule(NAMES, wrong, ref_lowp, ref64, dtype, "wrong masking")


def test_rule_rejects_lost_precision(seed):
    """A float32 result that went through bfloat16 somewhere fails the float32 rule."""
    q, k, v, do = make_qkv(seed, B, 4, 2, 45, 32, torch.float32)
    out = attention(q, k, v, causal=True).detach()
    ref_lowp = reference.attention(q, k, v, causal=True)
    ref64 = reference.attention(q.double(), k.double(), v.double(), causal=True)
    assert rule_verdict(out, ref_lowp, ref64, torch.float32)[0], reproduce(seed)
    degraded = out.to(torch.bfloat16).float()
    ok, line = rule_verdict(degraded, ref_lowp, ref64, torch.float32)
    assert not ok, f"a bfloat16-rounded result passed the float32 rule ({line}); {reproduce(seed)}"


def test_forward_kernel_is_the_one_tested(monkeypatch):
    """The op really runs triton_forward.forward (not, say, a PyTorch fallback)."""
    calls = []
    original = triton_forward.forward
    monkeypatch.setattr(triton_forward, "forward", lambda *a: calls.append(a[0].shape) or original(*a))
    attention(*make_qkv(0, 1, 2, 2, 8, 16, torch.float16)[:3])
    assert calls == [(1, 2, 8, 16)]


# --- the GPUs' tilings, forced, in the interpreter ------------------------------------------


def _tiling_id(config) -> str:
    return f"{config.kwargs['BLOCK_M']}x{config.kwargs['BLOCK_N']}"


def _gpu_tilings():
    """Every Hopper and Blackwell candidate of each kernel, paired up by position (the
    shorter lists repeat), so the tile-shape relations the interpreter's one tiling never
    has (BLOCK_M == BLOCK_N, 128-row tiles, 4x ratios) are all exercised."""
    for arch in ("sm90", "sm100"):
        lists = (triton_forward.FORWARD_CONFIGS[arch], triton_backward.DKDV_CONFIGS[arch],
                 triton_backward.DQ_CONFIGS[arch])
        for i in range(max(map(len, lists))):
            fwd, dkdv, dq = (configs[i % len(configs)] for configs in lists)
            yield pytest.param(fwd, dkdv, dq, id=f"{arch}-fwd{_tiling_id(fwd)}-dkdv{_tiling_id(dkdv)}-dq{_tiling_id(dq)}")


@pytest.mark.parametrize("causal", CAUSAL, ids=["full", "causal"])
@pytest.mark.parametrize("fwd_config,dkdv_config,dq_config", list(_gpu_tilings()))
def test_gpu_tilings_within_rule(seed, fwd_config, dkdv_config, dq_config, causal):
    """The launchers' forced-config hooks with the tilings a GPU autotunes over, on N = 150
    (not a multiple of 32, 64 or 128): forward and all three gradients pass the rule."""
    dtype, H, H_KV, N, D = torch.bfloat16, 4, 2, 150, 32
    q, k, v, do = make_qkv(seed, B, H, H_KV, N, D, dtype)
    scale = 1 / math.sqrt(D)
    out, lse = triton_forward.forward(q, k, v, causal, scale, fwd_config)
    delta = triton_backward.row_dot(out, do)
    dk, dv = triton_backward.dkdv(q, k, v, do, lse, delta, causal, scale, dkdv_config)
    dq = triton_backward.dq(q, k, v, do, lse, delta, causal, scale, dq_config)
    ref_lowp = fwd_bwd(reference.attention, q, k, v, do, causal=causal)
    ref64 = fwd_bwd(reference.attention, *(t.double() for t in (q, k, v)), do.double(), causal=causal)
    assert_rule(NAMES, (out, dq, dk, dv), ref_lowp, ref64, dtype,
                f"tilings fwd {fwd_config}, dkdv {dkdv_config}, dq {dq_config}, causal={causal}; {reproduce(seed)}")
