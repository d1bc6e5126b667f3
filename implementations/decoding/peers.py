"""The decoding attention a user would otherwise call: PyTorch SDPA on the new queries with
each backend forced, and flashinfer's decode kernels when flashinfer imports.

SDPA has no notion of a per-sequence cache length or of queries at the end of the cache:
ragged batches and Q > 1 pass a boolean mask (built in the builder, outside the timing),
which some backends refuse; those refusals become unsupported rows with SDPA's reason."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.cases import Case
from harness.needs import CUDA, package
from harness.registry import implementation
from implementations.attention.peers import refusal_as_unsupported
from implementations.decoding.reference import visible_mask

HALF = (torch.bfloat16, torch.float16)
ALL = (torch.bfloat16, torch.float16, torch.float32)
SDPA_FEATURES = ("gqa", "ragged", "multi-query")


def _mask(case: Case, cache_lens: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """[B, 1, Q, N] booleans (True: visible), or None when every sequence fills the cache and
    there is one query, the case SDPA answers unmasked."""
    lengths = cache_lens.tolist()
    if case["Q"] == 1 and all(length == case["N"] for length in lengths):
        return None
    mask = torch.zeros(case["B"], 1, case["Q"], case["N"], dtype=torch.bool, device=device)
    for b, length in enumerate(lengths):
        mask[b, 0, :, :length] = visible_mask(length, case["Q"], device)
    return mask


def _sdpa(backend: str):
    def build(case: Case, q, k, v, cache_lens, block_table=None):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        mask = _mask(case, cache_lens, q.device)
        gqa = case["H_KV"] != case["H"]

        def call():
            with sdpa_kernel(getattr(SDPBackend, backend)):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)

        refusal_as_unsupported(call)
        return call

    build.__doc__ = f"torch SDPA with the {backend} backend forced, on the new queries"
    return build


for name, backend, dtypes in (("sdpa-flash", "FLASH_ATTENTION", HALF), ("sdpa-cudnn", "CUDNN_ATTENTION", HALF),
                              ("sdpa-efficient", "EFFICIENT_ATTENTION", ALL), ("sdpa-math", "MATH", ALL)):
    implementation("decoding", name, role="peer", dtypes=dtypes, features=SDPA_FEATURES, needs=(CUDA,))(_sdpa(backend))


@implementation("decoding", "flashinfer", role="peer", dtypes=HALF, features=("gqa", "paged", "ragged"),
                needs=(CUDA, package("flashinfer", "flashinfer-python")))
def build_flashinfer(case: Case, q, k, v, cache_lens, block_table=None):
    """flashinfer's batch decode over a paged cache (a contiguous cache is one page per sequence)."""
    import flashinfer

    lengths = cache_lens.tolist()
    device = q.device
    if block_table is None:  # [B, H_KV, N, D] is the HND layout with one N-token page per sequence
        layout, page_size, pages = "HND", case["N"], [[b] for b in range(case["B"])]
    else:
        layout, page_size = "NHD", case["page"]
        pages = [block_table[b, :-(-length // page_size)].tolist() for b, length in enumerate(lengths)]
    indptr = torch.tensor([0] + [sum(len(p) for p in pages[:b + 1]) for b in range(len(pages))],
                          dtype=torch.int32, device=device)
    indices = torch.tensor([i for p in pages for i in p], dtype=torch.int32, device=device)
    last_page_len = torch.tensor([length - (len(p) - 1) * page_size for p, length in zip(pages, lengths)],
                                 dtype=torch.int32, device=device)
    workspace = torch.empty(128 << 20, dtype=torch.uint8, device=device)
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, layout)
    wrapper.plan(indptr, indices, last_page_len, case["H"], case["H_KV"], case["D"], page_size,
                 q_data_type=q.dtype, kv_data_type=k.dtype)
    queries = q[:, :, 0].contiguous()  # [B, H, D]: the decode wrapper takes one new token per sequence
    return lambda: wrapper.run(queries, (k, v)).unsqueeze(2)
