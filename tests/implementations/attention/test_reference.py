"""The plain-PyTorch reference (implementations/attention/reference.py): it is the truth
every kernel is judged by, so it is checked against an independent float64 computation,
its chunked path against its unchunked one, and its causal mask as a property."""

from __future__ import annotations

import pytest
import torch

from implementations.attention import reference
from tests.implementations.attention._support import LAYOUTS, fwd_bwd, make_qkv, truth
from tests.implementations.shared import reproduce

F64 = dict(rtol=1e-10, atol=1e-12)


def _grad_fn_name(out: torch.Tensor) -> str:
    return type(out.grad_fn).__name__


def _chunk_budget(monkeypatch, B: int, H: int, N: int, chunk: int) -> None:
    """Make reference.attention split the queries into chunks of `chunk` rows."""
    monkeypatch.setattr(reference, "SCORE_BUDGET", chunk * B * H * N)


# --- against an independent float64 computation --------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_matches_independent_float64(seed, causal, layout):
    H, H_KV = LAYOUTS[layout]
    q, k, v, do = make_qkv(seed, 2, H, H_KV, 37, 32, torch.float64)
    out, dq, dk, dv = fwd_bwd(reference.attention, q, k, v, do, causal=causal)
    assert _grad_fn_name(out) != "_ChunkedAttentionBackward", "a 37-token case should not be chunked"
    expected = truth(q, k, v, causal, do=do)
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), expected):
        assert got.dtype == torch.float64 and got.shape == want.shape, name
        torch.testing.assert_close(got, want, **F64, msg=lambda m, name=name: f"{name}: {m}\n{reproduce(seed)}")


@pytest.mark.parametrize("scale", [0.05, 1.0, 3.0])
def test_explicit_scale_matches_independent_float64(seed, scale):
    q, k, v, do = make_qkv(seed, 2, 4, 2, 19, 16, torch.float64)
    out, dq, dk, dv = fwd_bwd(reference.attention, q, k, v, do, causal=True, scale=scale)
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), truth(q, k, v, True, scale, do)):
        torch.testing.assert_close(got, want, **F64, msg=lambda m, name=name: f"{name}: {m}\n{reproduce(seed)}")


def test_gqa_equals_mha_with_repeated_kv_heads(seed):
    """Query head h reads kv head h // group (grouped, as SDPA's enable_gqa and the kernels
    do), not h % H_KV."""
    q, k, v, _ = make_qkv(seed, 2, 6, 2, 11, 16, torch.float64, with_grad_out=False)
    grouped = reference.attention(q, k, v, causal=True)
    repeated = reference.attention(q, k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1), causal=True)
    torch.testing.assert_close(grouped, repeated, rtol=0, atol=0, msg=lambda m: f"{m}\n{reproduce(seed)}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_keeps_dtype_and_is_close(seed, dtype):
    q, k, v, do = make_qkv(seed, 2, 4, 2, 29, 32, dtype)
    out, dq, dk, dv = fwd_bwd(reference.attention, q, k, v, do, causal=True)
    expected = truth(q, k, v, True, do=do)
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), expected):
        assert got.dtype == dtype, f"{name} is {got.dtype}, inputs are {dtype}"
        rel = ((got.double() - want).norm() / want.norm()).item()
        assert rel < tol, f"{name}: relative error {rel:.3e} at {dtype}; {reproduce(seed)}"


# --- the chunked path ------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [0, 1, 5, 16], ids=lambda c: f"chunk{c}")
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_chunked_equals_unchunked_float64(monkeypatch, seed, causal, layout, chunk):
    """Chunks that do not divide N (37), single-row chunks, and a budget of 0 (chunk 1)."""
    H, H_KV = LAYOUTS[layout]
    B, N = 2, 37
    q, k, v, do = make_qkv(seed, B, H, H_KV, N, 32, torch.float64)
    whole = fwd_bwd(reference.attention, q, k, v, do, causal=causal)

    _chunk_budget(monkeypatch, B, H, N, chunk)
    q_, k_, v_ = (t.clone().requires_grad_() for t in (q, k, v))
    out = reference.attention(q_, k_, v_, causal=causal)
    assert _grad_fn_name(out) == "_ChunkedAttentionBackward", "the chunked path was not taken"
    out.backward(do)
    chunked = (out.detach(), q_.grad, k_.grad, v_.grad)
    for name, got, want in zip(("out", "dq", "dk", "dv"), chunked, whole):
        assert got.dtype == want.dtype and got.shape == want.shape, name
        torch.testing.assert_close(got, want, **F64, msg=lambda m, name=name: f"{name}: {m}\n{reproduce(seed)}")


def test_default_budget_chunks_only_past_it(monkeypatch):
    """The chunk is the largest query count whose score block fits SCORE_BUDGET elements."""
    q, k, v, _ = make_qkv(0, 1, 2, 2, 8, 16, torch.float64, with_grad_out=False)
    q.requires_grad_()
    monkeypatch.setattr(reference, "SCORE_BUDGET", 1 * 2 * 8 * 8)  # exactly all 8 rows: no chunks
    assert _grad_fn_name(reference.attention(q, k, v)) != "_ChunkedAttentionBackward"
    monkeypatch.setattr(reference, "SCORE_BUDGET", 1 * 2 * 8 * 8 - 1)  # one element short: chunks of 7
    calls = []
    original = reference.naive_attention

    def spy(q_chunk, *args, **kwargs):
        calls.append(q_chunk.shape[2])
        return original(q_chunk, *args, **kwargs)

    monkeypatch.setattr(reference, "naive_attention", spy)
    assert _grad_fn_name(reference.attention(q, k, v)) == "_ChunkedAttentionBackward"
    assert calls == [7, 1]


@pytest.mark.parametrize("layout", ["MHA", "GQA"])
def test_chunked_accumulates_dkdv_in_float32(monkeypatch, seed, layout):
    """bf16 inputs: each chunk's dK, dV (bf16, from autograd) are summed in float32 and
    rounded to bf16 once, not summed in bf16 chunk after chunk."""
    H, H_KV = LAYOUTS[layout]
    B, N, D, chunk = 2, 48, 32, 4
    q, k, v, do = make_qkv(seed, B, H, H_KV, N, D, torch.bfloat16)
    _chunk_budget(monkeypatch, B, H, N, chunk)
    _, _, dk, dv = fwd_bwd(reference.attention, q, k, v, do, causal=True)

    scale = D ** -0.5
    sum32 = [torch.zeros(k.shape, dtype=torch.float32) for _ in range(2)]
    sum16 = [torch.zeros(k.shape, dtype=torch.bfloat16) for _ in range(2)]
    for s in range(0, N, chunk):
        q_c = q[:, :, s:s + chunk].clone().requires_grad_()
        k_c, v_c = k.clone().requires_grad_(), v.clone().requires_grad_()
        out_c = reference.naive_attention(q_c, k_c, v_c, True, scale, s)
        parts = torch.autograd.grad(out_c, (k_c, v_c), do[:, :, s:s + chunk])
        for i, part in enumerate(parts):
            assert part.dtype == torch.bfloat16
            sum32[i] += part
            sum16[i] += part
    for name, got, acc32, acc16 in zip(("dk", "dv"), (dk, dv), sum32, sum16):
        assert got.dtype == torch.bfloat16
        assert torch.equal(got, acc32.to(torch.bfloat16)), f"{name} is not the float32 sum of the chunks; {reproduce(seed)}"
        # 12 chunks summed in bf16 round differently: the check above can tell the two apart.
        assert not torch.equal(acc16, acc32.to(torch.bfloat16)), f"{name}: bf16 and fp32 sums agree; {reproduce(seed)}"


# --- the causal mask as a property ------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
@pytest.mark.parametrize("layout", ["MHA", "GQA"])
def test_causal_rows_ignore_later_keys(monkeypatch, seed, layout, chunked):
    """Output row i is unchanged (bitwise) when the keys and values after position i change,
    for several random i including the first and last positions."""
    H, H_KV = LAYOUTS[layout]
    B, N = 2, 33
    q, k, v, _ = make_qkv(seed, B, H, H_KV, N, 16, torch.float64, with_grad_out=False)
    if chunked:
        _chunk_budget(monkeypatch, B, H, N, 6)
    base = reference.attention(q, k, v, causal=True)
    g = torch.Generator().manual_seed(seed + 1)
    positions = {0, N - 2, *torch.randint(0, N - 1, (4,), generator=g).tolist()}
    for i in sorted(positions):
        k2, v2 = k.clone(), v.clone()
        k2[:, :, i + 1:] = 10 * torch.randn(k2[:, :, i + 1:].shape, generator=g, dtype=torch.float64)
        v2[:, :, i + 1:] = 10 * torch.randn(v2[:, :, i + 1:].shape, generator=g, dtype=torch.float64)
        changed = reference.attention(q, k2, v2, causal=True)
        assert torch.equal(changed[:, :, :i + 1], base[:, :, :i + 1]), (
            f"rows <= {i} changed when only keys/values after {i} did; {reproduce(seed)}")
        # the change is visible somewhere later, so the mask is not hiding everything
        assert not torch.equal(changed[:, :, i + 1:], base[:, :, i + 1:]), f"row {i + 1}.. did not change"
