"""The plain-PyTorch reference (implementations/decoding/reference.py): it is the truth every
kernel is judged by (in float64) and the yardstick of the tolerance rule (at the kernel's
dtype), so it is checked against an independent float64 computation, and its two helpers,
gather_pages and visible_mask, as properties."""

from __future__ import annotations

import pytest
import torch

from implementations.decoding import reference
from tests.implementations.decoding._support import describe, make_decode, truth
from tests.implementations.shared import reproduce

F64 = dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("page", [0, 16, 5], ids=["contiguous", "page16", "page5"])
@pytest.mark.parametrize("Q", [1, 4])
@pytest.mark.parametrize("H,H_KV", [(4, 4), (8, 2), (4, 1)], ids=["MHA", "GQA4", "MQA"])
def test_matches_independent_float64(seed, H, H_KV, Q, page):
    """Ragged lengths (one of them Q, the least a case allows), garbage past each length."""
    d = make_decode(seed, [37, Q, 21], H, H_KV, Q, 16, torch.float64, page=page)
    got = reference.decode_attention(*d.args)
    assert got.dtype == torch.float64 and got.shape == d.q.shape
    torch.testing.assert_close(got, truth(d), **F64, msg=lambda m: f"{m}\n{describe(d)}; {reproduce(seed)}")


@pytest.mark.parametrize("scale", [0.05, 2.0])
def test_explicit_scale(seed, scale):
    d = make_decode(seed, [19, 7], 4, 2, 3, 16, torch.float64, page=8)
    torch.testing.assert_close(reference.decode_attention(*d.args, scale=scale), truth(d, scale), **F64,
                               msg=lambda m: f"{m}\n{reproduce(seed)}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_keeps_dtype_and_is_close(seed, dtype):
    """The yardstick at a kernel's dtype: that dtype out, and near the truth."""
    d = make_decode(seed, [29, 11], 4, 2, 2, 32, dtype, page=5)
    got = reference.decode_attention(*d.args)
    want = truth(d)
    rel = ((got.double() - want).norm() / want.norm()).item()
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]
    assert got.dtype == dtype and rel < tol, f"relative error {rel:.3e} at {dtype}; {reproduce(seed)}"


def test_garbage_past_length_is_ignored(seed):
    """Values past each sequence's length (here NaN) never reach the output."""
    clean = make_decode(seed, [23, 9], 4, 2, 2, 16, torch.float64, page=4, garbage=None)
    poisoned = make_decode(seed, [23, 9], 4, 2, 2, 16, torch.float64, page=4, garbage=float("nan"))
    assert poisoned.k.isnan().any()
    assert torch.equal(reference.decode_attention(*clean.args), reference.decode_attention(*poisoned.args))


# --- gather_pages ---------------------------------------------------------------------------


@pytest.mark.parametrize("N,page", [(32, 8), (13, 5), (7, 16)], ids=["dividing", "not-dividing", "one-page"])
def test_gather_pages_round_trip(seed, N, page):
    """Scatter a contiguous cache [B, H_KV, N, D] into shuffled pages by hand; gather_pages
    gives it back exactly (the last page's tail beyond N is whatever the page held)."""
    g = torch.Generator().manual_seed(seed)
    B, H_KV, D = 3, 2, 4
    cache = torch.randn(B, H_KV, N, D, generator=g, dtype=torch.float64)
    per_seq = -(-N // page)
    order = torch.randperm(B * per_seq + 2, generator=g)  # two pages nobody uses
    table = order[:B * per_seq].view(B, per_seq).to(torch.int32)
    pages = torch.full((B * per_seq + 2, page, H_KV, D), float("nan"), dtype=torch.float64)
    for b in range(B):
        for t in range(N):
            pages[table[b, t // page], t % page] = cache[b, :, t]
    gathered = reference.gather_pages(pages, table)
    assert gathered.shape == (B, H_KV, per_seq * page, D)
    assert torch.equal(gathered[:, :, :N], cache), reproduce(seed)
    assert gathered[:, :, N:].isnan().all()


def test_gather_pages_accepts_int64_table():
    pages = torch.arange(3 * 2 * 1 * 1, dtype=torch.float32).view(3, 2, 1, 1)
    table = torch.tensor([[2, 0], [1, 2]])
    assert reference.gather_pages(pages, table).flatten().tolist() == [4, 5, 0, 1, 2, 3, 4, 5]


# --- visible_mask ---------------------------------------------------------------------------


def test_visible_mask_single_query_sees_everything():
    assert reference.visible_mask(5, 1, torch.device("cpu")).tolist() == [[True] * 5]


def test_visible_mask_queries_are_the_last_tokens():
    """Q = 3 new tokens at positions 2, 3, 4 of a 5-token cache: each sees itself and before."""
    assert reference.visible_mask(5, 3, torch.device("cpu")).tolist() == [
        [True, True, True, False, False],
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]


@pytest.mark.parametrize("length,Q", [(1, 1), (8, 8), (130, 8), (17, 3)])
def test_visible_mask_is_a_growing_prefix(length, Q):
    mask = reference.visible_mask(length, Q, torch.device("cpu"))
    assert mask.shape == (Q, length) and mask.dtype == torch.bool
    for i in range(Q):
        seen = length - Q + 1 + i
        assert mask[i, :seen].all() and not mask[i, seen:].any(), f"query {i}"
