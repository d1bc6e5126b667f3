"""Shared pieces of the decoding tests: seeds, a builder of decoding inputs (contiguous or
paged cache, ragged lengths, garbage past each sequence's length), an independent float64
truth, and the harness's tolerance rule as an assertion that says what failed and how to
reproduce it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from harness.registry import Tolerance
from implementations.decoding import reference
from tests.implementations.shared import verdict

TOL = Tolerance(multiple=2.0, floor=1e-5)
GARBAGE = 1e4  # what the cache holds past each sequence's length, unless told otherwise


@dataclass(frozen=True)
class Decode:
    """One decoding call's inputs. Contiguous: k, v [B, H_KV, capacity, D], block_table None.
    Paged: k, v [pages, page, H_KV, D] and block_table [B, pages per sequence]."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    cache_lens: torch.Tensor
    block_table: torch.Tensor | None = None

    @property
    def args(self) -> tuple:
        return self.q, self.k, self.v, self.cache_lens, self.block_table

    @property
    def dtype(self) -> torch.dtype:
        return self.q.dtype

    def slot(self, b: int, t: int) -> tuple:
        """Index of token t of sequence b in k or v (all KV heads): (b, :, t) or (page, t % page)."""
        if self.block_table is None:
            return (b, slice(None), t)
        page = self.k.shape[1]
        return (int(self.block_table[b, t // page]), t % page)

    def with_q(self, q: torch.Tensor) -> Decode:
        return replace(self, q=q)


def make_decode(seed: int, lengths, H: int, H_KV: int, Q: int, D: int, dtype: torch.dtype, page: int = 0,
                capacity: int | None = None, garbage: float | None = GARBAGE, spare_pages: int = 1) -> Decode:
    """Random q, k, v (drawn in float32, cast) for sequences of the given lengths. The cache
    holds `capacity` tokens per sequence (default: the longest length + 3, so even the longest
    sequence has slots past its end); every slot at or past a sequence's length holds
    `garbage` (None: leave the random values). Paged: pages of `page` tokens handed out in a
    random order, plus `spare_pages` pages no table names (garbage too)."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    capacity = max(lengths) + 3 if capacity is None else capacity
    q = torch.randn(B, H, Q, D, generator=g)
    if page:
        per_seq = -(-capacity // page)
        pages = B * per_seq + spare_pages
        k, v = torch.randn(pages, page, H_KV, D, generator=g), torch.randn(pages, page, H_KV, D, generator=g)
        order = torch.randperm(pages, generator=g)
        table = order[:B * per_seq].view(B, per_seq).to(torch.int32)
    else:
        k, v = torch.randn(B, H_KV, capacity, D, generator=g), torch.randn(B, H_KV, capacity, D, generator=g)
        table = None
    d = Decode(q, k, v, torch.tensor(lengths, dtype=torch.int32), table)
    if garbage is not None:
        for b, length in enumerate(lengths):
            for t in range(length, capacity if not page else table.shape[1] * page):
                d.k[d.slot(b, t)] = garbage
                d.v[d.slot(b, t)] = garbage
        if page and spare_pages:
            spare = order[B * table.shape[1]:]
            d.k[spare], d.v[spare] = garbage, garbage
    return Decode(*(t.to(dtype) for t in (d.q, d.k, d.v)), d.cache_lens, d.block_table)


def truth(d: Decode, scale: float | None = None) -> torch.Tensor:
    """Decoding attention in float64, one (sequence, head, query) row at a time: the
    sequence's tokens read one by one (through the block table by hand when paged), the
    visible keys of query i being the first L - Q + 1 + i, and an explicit softmax."""
    q, k, v = (t.detach().to(torch.float64) for t in (d.q, d.k, d.v))
    B, H, Q, D = q.shape
    kv_heads = k.shape[2] if d.block_table is not None else k.shape[1]
    group = H // kv_heads
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = torch.zeros(B, H, Q, D, dtype=torch.float64)
    for b in range(B):
        length = int(d.cache_lens[b])
        keys = torch.stack([k[d.slot(b, t)] for t in range(length)])  # [L, H_KV, D]
        values = torch.stack([v[d.slot(b, t)] for t in range(length)])
        for h in range(H):
            kv = h // group  # query heads are grouped: h reads KV head h // (H / H_KV)
            for i in range(Q):
                visible = length - Q + 1 + i
                scores = (keys[:visible, kv] * q[b, h, i]).sum(-1) * scale
                weights = torch.exp(scores - scores.max())
                out[b, h, i] = (weights[:, None] * values[:visible, kv]).sum(0) / weights.sum()
    return out


def visible_keys(d: Decode) -> torch.Tensor:
    """[B, 1, Q, 1]: how many keys each (sequence, query) sees, L - Q + 1 + i."""
    Q = d.q.shape[2]
    return (d.cache_lens.long()[:, None] - Q + 1 + torch.arange(Q)[None, :])[:, None, :, None]


def rule_verdict(out: torch.Tensor, d: Decode, want: torch.Tensor | None = None,
                 scale: float | None = None, keep: torch.Tensor | None = None) -> tuple[bool, str]:
    """The harness rule for one output: its error against the float64 truth (`want`, computed
    when not given) within 2x the reference's own error at the same dtype, plus the floor.
    `keep` (a boolean mask broadcasting to the output) judges only those elements.
    Returns (passes, a line with the numbers)."""
    want = truth(d, scale) if want is None else want
    ref = reference.decode_attention(*d.args, scale=scale)
    if keep is not None:
        keep = keep.expand(out.shape)
        out, want, ref = out[keep], want[keep], ref[keep]
    return verdict(out, ref, want, d.dtype, TOL)


def assert_rule(out: torch.Tensor, d: Decode, context: str, want: torch.Tensor | None = None,
                scale: float | None = None, keep: torch.Tensor | None = None) -> None:
    assert out.dtype == d.dtype and out.shape == d.q.shape, \
        f"out is {out.dtype} {tuple(out.shape)}, expected {d.dtype} {tuple(d.q.shape)}; {context}"
    ok, line = rule_verdict(out, d, want, scale, keep)
    assert ok, f"out outside the tolerance rule for {context}\n  {line}"


def describe(d: Decode) -> str:
    B, H, Q, D = d.q.shape
    paged = d.block_table is not None
    kv_heads = d.k.shape[2] if paged else d.k.shape[1]
    layout = f"page={d.k.shape[1]}" if paged else "contiguous"
    return f"{d.dtype}, lengths={d.cache_lens.tolist()}, H={H}, H_KV={kv_heads}, Q={Q}, D={D}, {layout}"
