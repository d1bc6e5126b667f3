"""The Monarch FFT convolution (implementations/fftconv/triton_fftconv.py), run in Triton's
interpreter against the independent float64 truth (_support.truth) under the harness's rule.

Both decompositions are run: the fused single kernel (2 factors, L = N2 x N3, up to
FUSED_MAX_L) and the three passes (3 factors, L = N1 x N2 x N3), the latter also at small
lengths by handing the launcher a plan, which is what the GPU runs at long lengths in
miniature. Lengths include both ends of each range (L = 256 and 16K fused; 32K and 2M, the
limit, in three passes), lengths no power of two (masked loads and stores), tiles with and
without the skipped zero half (a factor of 16 has none), one-tap filters and filters as long
as the sequence, odd channel counts, gated and not, in every claimed dtype.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from harness.correctness import bitwise_equal, poisoned_allocations
from implementations.fftconv import monarch, reference
from implementations.fftconv import triton_fftconv as tf
from implementations.fftconv.monarch import Plan
from implementations.fftconv.triton_fftconv import fftconv, monarch_fftconv, prepare
from tests.implementations.fftconv._support import assert_rule, describe, make_conv, rule_verdict, truth
from tests.implementations.shared import pairwise_cases, reproduce, uncovered_pairs

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# (N, plan): None is the default plan for N (the fused kernel at these lengths).
SHAPES = {
    "N100-16x16": (100, None),                   # L = 256, no zero half skipped (N2 = 16)
    "N1000-64x32": (1000, None),                  # L = 2048, half the rows skipped
    "N4096-128x64": (4096, None),                 # L = 8192, exactly half of it the input
    "N2000-16x16x16": (2000, Plan(16, 16, 16)),   # three passes, no half skipped anywhere
    "N3001-32x16x16": (3001, Plan(32, 16, 16, block_m=32)),  # three passes, half the columns' rows skipped
    "N4096-16x32x16": (4096, Plan(16, 32, 16, block_m=128)),
}
FILTERS = {"K1": 1, "K7": 7, "K=N": None}
CHANNELS = {"C1": 1, "C3": 3}
BATCHES = {"B1": 1, "B2": 2}
GATED = {"plain": False, "gated": True}
AXES = {"shape": SHAPES, "dtype": DTYPES, "K": FILTERS, "C": CHANNELS, "B": BATCHES, "gated": GATED}


def _cost(c: dict[str, str]) -> float:
    N, plan = SHAPES[c["shape"]]
    return N * CHANNELS[c["C"]] * BATCHES[c["B"]] * (3 if plan else 1) * (2 if c["dtype"] != "fp32" else 1)


CASES = pairwise_cases(AXES, cost=_cost)


def _conv(seed: int, c: dict[str, str]):
    N, plan = SHAPES[c["shape"]]
    K = FILTERS[c["K"]] or N
    return make_conv(seed, BATCHES[c["B"]], CHANNELS[c["C"]], N, K, GATED[c["gated"]], DTYPES[c["dtype"]]), plan


def test_case_list_is_pairwise():
    assert not uncovered_pairs(CASES, AXES)
    assert len(CASES) <= 24, f"{len(CASES)} cases: the greedy covering array grew"


@pytest.mark.parametrize("case", CASES, ids=["-".join(c[a] for a in AXES) for c in CASES])
def test_within_rule(seed, case):
    conv, plan = _conv(seed, case)
    out = monarch_fftconv(*conv.args, plan=plan)
    assert_rule(out, conv, f"{describe(conv)}, plan {plan or monarch.make_plan(conv.u.shape[-1])}; {reproduce(seed)}")


@pytest.mark.parametrize("N,dtype,gated", [
    (1, torch.float32, True), (128, torch.bfloat16, False),        # the smallest FFT, 256 = 16 x 16
    (8192, torch.bfloat16, True), (8192, torch.float32, False),    # the largest fused in 16 bits, 16K = 128 x 128
    (8193, torch.float16, True),                                   # the smallest in three passes, 32K = 16 x 64 x 32
], ids=["N1", "N128", "N8192-bf16", "N8192-fp32", "N8193"])
def test_ends_of_the_default_ranges(seed, N, dtype, gated):
    conv = make_conv(seed, 1, 1, N, N, gated, dtype)
    plan = monarch.make_plan(N, dtype)
    if dtype != torch.float32:  # float32's own table takes three passes sooner (FP32_PLANS)
        assert plan.levels == (2 if N <= 8192 else 3)
    assert_rule(monarch_fftconv(*conv.args), conv, f"{describe(conv)}, plan {plan}; {reproduce(seed)}")


def test_the_longest_sequence(seed):
    """N = 2^20, the 16-bit kernels' limit: L = 2^21 = 128 x 128 x 128 (the default plan, with
    wider column blocks so the interpreter launches fewer programs)."""
    N = monarch.MAX_N
    conv = make_conv(seed, 1, 1, N, N, True, torch.bfloat16)
    plan = monarch.make_plan(N)
    assert (plan.n1, plan.n2, plan.n3) == (128, 128, 128)
    out = monarch_fftconv(*conv.args, plan=Plan(128, 128, 128, block_m=4096))
    assert_rule(out, conv, f"{describe(conv)}; {reproduce(seed)}")


def test_the_longest_float32_sequence(seed):
    """N = 2^17, the float32 kernels' limit (L = 128 x 2048), on the float32 table's own plan."""
    N = monarch.FP32_MAX_N
    conv = make_conv(seed, 1, 1, N, 64, True, torch.float32)
    plan = monarch.make_plan(N, torch.float32)
    assert plan.n1 == 128 and plan.n2 * plan.n3 == monarch.FP32_MAX_TILE
    out = monarch_fftconv(*conv.args, plan=replace(plan, block_m=plan.n2 * plan.n3))
    assert_rule(out, conv, f"{describe(conv)}, plan {plan}; {reproduce(seed)}")


CHUNKED = {  # the row kernel taking CHUNK rows k2 of its tile at a time
    "fused-N1000-64x32-chunk16": (1000, Plan(1, 64, 32, chunk=16)),
    "fused-N4096-128x64-chunk32": (4096, Plan(1, 128, 64, chunk=32)),
    "3pass-N2000-16x32x16-chunk16": (2000, Plan(16, 32, 16, block_m=128, chunk=16)),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("name", list(CHUNKED))
def test_chunked_row_kernel_within_rule_and_equal_to_the_whole_tile(seed, name, dtype):
    """Chunking changes only the order of the last product's sums (and, in 16 bits, where each
    operand is scaled): within the rule, and in fp32 equal to the whole tile's result up to
    float32 rounding."""
    N, plan = CHUNKED[name]
    conv = make_conv(seed, 1, 2, N, N, True, dtype)
    out = monarch_fftconv(*conv.args, plan=plan)
    assert_rule(out, conv, f"{describe(conv)}, plan {plan}; {reproduce(seed)}")
    if dtype == torch.float32:
        whole = monarch_fftconv(*conv.args, plan=replace(plan, chunk=0))
        torch.testing.assert_close(out, whole, rtol=1e-4, atol=1e-5, msg=lambda m: f"{m}\n{name}; {reproduce(seed)}")


PAIRED_PLANS = {"fused": None, "3pass": Plan(16, 16, 16), "3pass-one-row": Plan(16, 16, 16, paired=False)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("plan_name", list(PAIRED_PLANS))
def test_paired_rows_keep_their_own_precision(seed, plan_name, dtype):
    """Rows b and b + 1 share one complex transform: an odd batch leaves the last row without a
    partner, and rows 1e4 apart in magnitude share a pair. Each row on its own is within the
    rule (a row judged beside a 1e8-times larger one would hide its errors), and each row's
    output is what it gets convolved alone (B = 1, unpaired), to the rule's tolerance. A plan
    that says paired=False takes one row a transform, at any batch."""
    conv = make_conv(seed, 5, 2, 1000, 1000, True, torch.float32)
    magnitudes = torch.tensor([1e2, 1e-2, 1.0, 3e3, 1e-1]).view(5, 1, 1)  # pairs (0, 1), (2, 3), and 4 alone
    conv = conv.with_(u=conv.u * magnitudes).to(dtype)
    plan = PAIRED_PLANS[plan_name]
    out = monarch_fftconv(*conv.args, plan=plan)
    for b in range(5):
        row = conv.with_(u=conv.u[b:b + 1], v=conv.v[b:b + 1], w=conv.w[b:b + 1])
        assert_rule(out[b:b + 1], row, f"row {b} of 5 (x {magnitudes[b].item():g}), {describe(conv)}, "
                                        f"plan {plan}; {reproduce(seed)}")
        assert_rule(monarch_fftconv(*row.args, plan=plan), row, f"row {b} alone; {reproduce(seed)}")


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("scale", [1e4, 1e-5, 1e20], ids=["huge", "tiny", "bfloat16-range"])
def test_magnitudes_outside_float16(seed, dtype, scale):
    """u scaled by 1e4 and k by 1e3 (outputs near 1e7, beyond float16's 65504), both by 1e-5
    (inputs where float16 is subnormal), or u by 1e20 (its squares, 1e40, overflow float32:
    the row norms are summed in float64): the scaling of each row before its float16 roundings
    keeps the 16-bit paths finite and within the rule, in both decompositions (the three
    passes' float16 scratch included), for a pair of rows and a row alone (B = 3)."""
    if dtype == torch.float16 and scale > 1:
        pytest.skip("float16 inputs cannot hold outputs beyond 65504")
    conv = make_conv(seed, 3, 2, 1000, 1000, True, torch.float32, u_scale=scale,
                     k_scale=(1e3 if scale > 1 else scale) / 1000 ** 0.5).to(dtype)
    for plan in (None, Plan(16, 16, 16)):
        out = monarch_fftconv(*conv.args, plan=plan)
        assert torch.isfinite(out).all(), f"non-finite outputs, plan {plan}; {reproduce(seed)}"
        assert_rule(out, conv, f"x {scale:g}, {describe(conv)}, plan {plan}; {reproduce(seed)}")


# --- structure: channels, strides, determinism, coverage of the output ---------------------------


@pytest.mark.parametrize("plan", [None, Plan(16, 16, 16)], ids=["2-factor", "3-factor"])
def test_channels_are_independent(seed, plan):
    """Changing channel 1's filter leaves channels 0 and 2 bitwise unchanged (each row is its
    own program, with its own scaling), and changes channel 1."""
    conv = make_conv(seed, 1, 3, 700, 30, False, torch.bfloat16)
    k = conv.k.clone()
    k[1] = torch.randn_like(k[1].float()).to(k.dtype)
    before, after = monarch_fftconv(*conv.args, plan=plan), monarch_fftconv(conv.u, k, plan=plan)
    assert torch.equal(before[:, 0], after[:, 0]) and torch.equal(before[:, 2], after[:, 2]), reproduce(seed)
    assert not torch.equal(before[:, 1], after[:, 1])


def test_strided_views_match_contiguous(seed):
    """u, v, w as slices of wider tensors (strides along B and C not those of [B, C, N]), and u
    with a non-unit last stride (copied by the launcher): bitwise the contiguous result."""
    conv = make_conv(seed, 2, 3, 500, 500, True, torch.float16)
    wide = [torch.cat([t, torch.zeros_like(t)], dim=1)[:, :3] for t in (conv.u, conv.v, conv.w)]
    assert not any(t.is_contiguous() for t in wide) and all(torch.equal(a, b) for a, b in zip(wide, (conv.u, conv.v, conv.w)))
    want = monarch_fftconv(*conv.args)
    got = monarch_fftconv(wide[0], conv.k, wide[1], wide[2])
    assert torch.equal(got, want), reproduce(seed)
    transposed = conv.u.transpose(1, 2).contiguous().transpose(1, 2)
    assert transposed.stride(-1) != 1
    assert torch.equal(monarch_fftconv(transposed, conv.k, conv.v, conv.w), want)


@pytest.mark.parametrize("plan", [None, Plan(32, 16, 16)], ids=["2-factor", "3-factor"])
def test_deterministic(seed, plan):
    conv = make_conv(seed, 2, 1, 1500, 1500, True, torch.bfloat16)
    prepared = prepare(conv.k, 1500, torch.bfloat16, plan)
    first, again = fftconv(conv.u, prepared, conv.v, conv.w), fftconv(conv.u, prepared, conv.v, conv.w)
    assert bitwise_equal([first], [again]), reproduce(seed)


@pytest.mark.parametrize("plan", [None, Plan(16, 16, 16)], ids=["2-factor", "3-factor"])
def test_every_output_element_written(seed, plan):
    """With every torch.empty* NaN-filled (the output and the three-pass scratch), no NaN
    survives at a length no power of two."""
    conv = make_conv(seed, 2, 3, 2001, 100, True, torch.float32)
    prepared = prepare(conv.k, 2001, torch.float32, plan)
    with poisoned_allocations():
        assert torch.empty(4).isnan().all(), "poisoned_allocations() did not poison torch.empty"
        out = fftconv(conv.u, prepared, conv.v, conv.w)
    assert not out.isnan().any(), f"{int(out.isnan().sum())} elements never written; {reproduce(seed)}"


def test_refuses_mismatched_inputs(seed):
    conv = make_conv(seed, 1, 3, 300, 10, False, torch.bfloat16)
    prepared = prepare(conv.k, 300, torch.bfloat16)
    with pytest.raises(ValueError, match="prepared for 3 channels"):
        fftconv(conv.u[:, :2], prepared)
    with pytest.raises(ValueError, match="prepared for 3 channels and FFT length 1024"):
        fftconv(torch.zeros(1, 3, 600, dtype=torch.bfloat16), prepared)
    with pytest.raises(ValueError, match="prepared for torch.float16 operands, u is torch.float32"):
        fftconv(conv.u.float(), prepared)
    with pytest.raises(ValueError, match="both v and w"):
        monarch_fftconv(conv.u, conv.k, conv.u)
    with pytest.raises(ValueError, match="longer"):
        prepare(torch.zeros(3, 301), 300, torch.float32)


# --- the checks can fail ------------------------------------------------------------------------


def _twiddles(exponent):
    """A twiddle table built like monarch.twiddles but with exponent(r, c, length) -> (n, e): W_n^e."""
    def table(rows, cols, length, device, dtype=torch.float32):
        r = torch.arange(rows, dtype=torch.int64)[:, None]
        c = torch.arange(cols, dtype=torch.int64)[None, :]
        re, im = monarch._roots(*exponent(r, c, length))
        return torch.stack([re, im]).to(dtype=dtype, device=device).contiguous()

    return table


def _natural_order_spectrum(k, plan, dtype):
    """The filter's spectrum in natural order, not the kernels' digit-reversed one."""
    spectrum = torch.fft.fft(k.to(torch.float64), n=plan.length).reshape(k.shape[0], plan.n1, plan.n2, plan.n3)
    return torch.stack([spectrum.real, spectrum.imag], dim=1).to(dtype).contiguous()


# Each twiddle table serves the forward and, conjugated, the inverse, so some errors cancel
# and are rightly not caught: a column index off by one (W^(r (c + 1))) multiplies each row
# by a phase the inverse takes off again; a row index off by one (W^((r + 1) c)) makes the
# outermost level's circular convolution skew-circular (wrapped terms times a phase), the
# same thing here since the zero padding leaves nothing to wrap. Inside the three passes'
# inner level, whose rows are not zero-padded, the row off by one does matter.
WRONG = {
    "twiddles-conjugated": ("twiddles", _twiddles(lambda r, c, n: (n, -r * c))),
    "twiddles-of-twice-the-length": ("twiddles", _twiddles(lambda r, c, n: (2 * n, r * c))),
    "twiddle-row-off-by-one": ("twiddles", _twiddles(lambda r, c, n: (n, (r + 1) * c))),
    "natural-order-filter": ("filter_spectrum", _natural_order_spectrum),
}


@pytest.mark.parametrize("plan,dtype,wrong", [
    (None, torch.bfloat16, "twiddles-conjugated"), (None, torch.float32, "twiddles-of-twice-the-length"),
    (None, torch.float16, "natural-order-filter"), (Plan(16, 16, 16), torch.float32, "twiddles-conjugated"),
    (Plan(16, 16, 16), torch.bfloat16, "twiddle-row-off-by-one"), (Plan(32, 16, 16), torch.float16, "natural-order-filter"),
], ids=lambda x: x if isinstance(x, str) else ("3-factor" if isinstance(x, Plan) else "2-factor" if x is None else str(x)[6:]))
def test_rule_rejects_a_wrong_variant(seed, monkeypatch, plan, dtype, wrong):
    """The same kernels handed wrong twiddles (both levels' tables, in the three passes) or
    the filter's spectrum in natural order fail the check that the right call passes."""
    conv = make_conv(seed, 1, 3, 1000, 1000, True, dtype)
    want = truth(conv)
    right = monarch_fftconv(*conv.args, plan=plan)
    assert rule_verdict(right, conv, want)[0], f"the right call fails; {reproduce(seed)}"
    monkeypatch.setattr(tf, *WRONG[wrong])
    bad = monarch_fftconv(*conv.args, plan=plan)
    ok, line = rule_verdict(bad, conv, want)
    assert not ok, f"{wrong} passed the rule: {line}; {reproduce(seed)}"


def test_rule_rejects_the_circular_convolution(seed):
    """A plan whose FFT is only N long (no zero padding) wraps the convolution around: the
    launcher refuses it, and its output, made by hand, fails the rule."""
    conv = make_conv(seed, 1, 2, 256, 256, False, torch.float32)
    with pytest.raises(ValueError, match="at least 2N"):
        monarch_fftconv(*conv.args, plan=Plan(1, 16, 16))
    x, k = conv.u.double(), conv.k.double()
    circular = torch.fft.irfft(torch.fft.rfft(x, n=256) * torch.fft.rfft(k, n=256), n=256).float()
    assert not rule_verdict(circular, conv)[0]
    assert rule_verdict(reference.fftconv(*conv.args), conv)[0]
