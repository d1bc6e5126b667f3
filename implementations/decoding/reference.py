"""Reference decoding attention: Q new query tokens per sequence (1 to 8: one step, or a
speculative draft) attend to a KV cache of per-sequence length, with grouped-query heads;
plain PyTorch, at whatever precision its inputs have (float64 for the truth).

Shapes: q [B, H, Q, D]; cache_lens [B] (int); the cache either contiguous, k and v
[B, H_KV, N, D] with sequence b's tokens in [:, :, :cache_lens[b]], or paged as serving
engines hold it, k and v [pages, page_size, H_KV, D] with block_table [B, N / page_size]
naming the page of each run of page_size tokens. The Q queries are the cache's last Q
tokens, so query i (at position L - Q + i) sees the keys at positions 0 .. L - Q + i.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def gather_pages(pages: torch.Tensor, block_table: torch.Tensor) -> torch.Tensor:
    """A paged cache [pages, page_size, H_KV, D] as the contiguous [B, H_KV, N, D] it stands for."""
    batch, pages_per_seq = block_table.shape
    page_size, kv_heads, head_dim = pages.shape[1:]
    tokens = pages[block_table.long()]  # [B, pages_per_seq, page_size, H_KV, D]
    return tokens.reshape(batch, pages_per_seq * page_size, kv_heads, head_dim).transpose(1, 2)


def visible_mask(length: int, query_len: int, device: torch.device) -> torch.Tensor:
    """[Q, length] booleans: query i sees the keys at positions up to length - Q + i."""
    keys = torch.arange(length, device=device)
    last_visible = length - query_len + torch.arange(query_len, device=device)
    return keys[None, :] <= last_visible[:, None]


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache_lens: torch.Tensor | Sequence[int],
                     block_table: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """softmax(q K^T * scale) V over each sequence's cache -> [B, H, Q, D], one sequence at a time.
    cache_lens may be a list, so a caller can read the lengths off the GPU once, outside a timed loop."""
    if block_table is not None:
        k, v = gather_pages(k, block_table), gather_pages(v, block_table)
    batch, heads, query_len, head_dim = q.shape
    group = heads // k.shape[1]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    out = torch.empty_like(q)
    lengths = cache_lens.tolist() if isinstance(cache_lens, torch.Tensor) else list(cache_lens)
    for b, length in enumerate(lengths):
        keys = k[b, :, :length].repeat_interleave(group, dim=0)  # [H, L, D]
        values = v[b, :, :length].repeat_interleave(group, dim=0)
        scores = torch.matmul(q[b], keys.transpose(-2, -1)) * scale  # [H, Q, L]
        scores = scores.masked_fill(~visible_mask(length, query_len, q.device), float("-inf"))
        out[b] = torch.matmul(torch.softmax(scores, dim=-1), values)
    return out
