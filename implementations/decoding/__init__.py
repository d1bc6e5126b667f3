"""Decoding attention (FlashDecoding, FlashDecoding++): a few new query tokens per sequence
against a long KV cache, the work bound by reading the cache.

Case parameters: B sequences, H query heads, H_KV key/value heads (GQA), Q new tokens per
sequence (1 to 8), N cache length (the longest sequence's), D head dim, page the paged
cache's page size in tokens (0: contiguous), ragged (sequence lengths spread from N down to
about N / 2, so a batch is not one length). See reference.py for shapes and masking.
"""

from __future__ import annotations

import torch

from harness.cases import Case
from harness.needs import TRITON
from harness.registry import Direction, Inputs, Technique, Tolerance, implementation, register_technique
from implementations.decoding import reference
from implementations.decoding.triton_decoding import DTYPES as TRITON_DTYPES
from implementations.decoding.triton_decoding import decode_attention, unsupported_reason, workspace_size

PARAMETERS = ("B", "H", "H_KV", "Q", "N", "D", "page", "ragged")
MAX_QUERIES = 8
FEATURES = ("gqa", "paged", "ragged", "multi-query")


def cache_lengths(case: Case) -> list[int]:
    """Sequence b's cache length: N for every sequence, or (ragged) spread evenly from N down
    to N - N // 2, so one batch holds many lengths (most off any block boundary)."""
    batch, longest = case["B"], case["N"]
    if not case["ragged"] or batch == 1:
        return [longest] * batch
    return [longest - (b * (longest // 2)) // (batch - 1) for b in range(batch)]


def pages_per_sequence(case: Case) -> int:
    return -(-case["N"] // case["page"])


def make_inputs(case: Case, dtype: torch.dtype, device: torch.device, seed: int) -> Inputs:
    """Random q, k, v (also past each sequence's length, where a kernel must not look); a paged
    cache's pages are handed out in a random order, as an engine's allocator would."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(dtype)

    B, H, H_KV, Q, N, D, page = (case[p] for p in ("B", "H", "H_KV", "Q", "N", "D", "page"))
    tensors = {"q": randn(B, H, Q, D)}
    if page:
        pages = B * pages_per_sequence(case)
        tensors["k"], tensors["v"] = randn(pages, page, H_KV, D), randn(pages, page, H_KV, D)
        order = torch.randperm(pages, generator=torch.Generator().manual_seed(seed))
        tensors["block_table"] = order.view(B, -1).to(device=device, dtype=torch.int32)
    else:
        tensors["k"], tensors["v"] = randn(B, H_KV, N, D), randn(B, H_KV, N, D)
    tensors["cache_lens"] = torch.tensor(cache_lengths(case), device=device, dtype=torch.int32)
    return Inputs(tensors)


def flops(case: Case, direction: Direction) -> float:
    """Two matmuls of 2*D flops per visible (query, key) pair; query i of Q sees L - Q + 1 + i keys."""
    Q = case["Q"]
    pairs = sum(Q * length - Q * (Q - 1) // 2 for length in cache_lengths(case))
    return 4.0 * case["H"] * case["D"] * pairs


def min_bytes(case: Case, dtype: torch.dtype, direction: Direction) -> float:
    """The KV cache each sequence holds (K and V over its length, every KV head), read once;
    q read and the output written. The GB/s column is therefore KV-read bandwidth."""
    size = torch.finfo(dtype).bits // 8
    kv = 2 * sum(cache_lengths(case)) * case["H_KV"] * case["D"]
    q_and_out = 2 * case["B"] * case["H"] * case["Q"] * case["D"]
    return (kv + q_and_out) * size + 4 * case["B"]


def required_features(case: Case) -> frozenset[str]:
    wanted = {"gqa": case["H_KV"] != case["H"], "paged": case["page"] > 0,
              "ragged": case["ragged"] and case["B"] > 1, "multi-query": case["Q"] > 1}
    return frozenset(name for name, needed in wanted.items() if needed)


def validate_case(case: Case) -> str | None:
    for name in ("B", "H", "H_KV", "Q", "N", "D"):
        if not isinstance(case[name], int) or isinstance(case[name], bool) or case[name] < 1:
            return f"{name} must be a positive integer, got {case[name]!r}"
    if case["H"] % case["H_KV"]:
        return f"H={case['H']} must be a multiple of H_KV={case['H_KV']}"
    if case["Q"] > MAX_QUERIES:
        return f"Q={case['Q']} new tokens per sequence; decoding cases take 1 to {MAX_QUERIES}"
    if not isinstance(case["page"], int) or isinstance(case["page"], bool) or case["page"] < 0:
        return f"page must be 0 (contiguous cache) or a page size in tokens, got {case['page']!r}"
    if not isinstance(case["ragged"], bool):
        return f"ragged must be true or false, got {case['ragged']!r}"
    if min(cache_lengths(case)) < case["Q"]:
        return f"every cache must hold the Q={case['Q']} new tokens; the shortest holds {min(cache_lengths(case))}"
    return None


register_technique(Technique(
    name="decoding",
    summary="a few new queries against a long KV cache: GQA, ragged lengths, paged or contiguous",
    parameters=PARAMETERS,
    make_inputs=make_inputs,
    flops=flops,
    min_bytes=min_bytes,
    required_features=required_features,
    validate_case=validate_case,
    tolerance=Tolerance(multiple=2.0, floor=1e-5),
    directions=("fwd",),
))


@implementation("decoding", "reference", role="reference",
                dtypes=(torch.float64, torch.float32, torch.float16, torch.bfloat16), features=FEATURES)
def build_reference(case: Case, q, k, v, cache_lens, block_table=None):
    """Plain PyTorch: gather the pages, then one sequence at a time, dense scores and mask."""
    lengths = cache_lens.tolist()  # read once here, so the timed call never waits on the GPU
    return lambda: reference.decode_attention(q, k, v, lengths, block_table)


def _triton_builder(variant: str):
    def build(case: Case, q, k, v, cache_lens, block_table=None):
        # Zeroed once, as an engine's workspace is: the kernel leaves it zeroed for the next call.
        workspace = torch.zeros(workspace_size(case["B"], case["H_KV"]), device=q.device, dtype=torch.int32)
        return lambda: decode_attention(q, k, v, cache_lens, block_table, variant=variant, workspace=workspace)

    build.__doc__ = {"split-kv": "flashsuite's FlashDecoding: split-KV chunks, online softmax, a combine pass",
                     "async-softmax": "flashsuite's FlashDecoding++: one unified max, no rescaling, fallback"}[variant]
    return build


def _triton_unsupported(case: Case, dtype: torch.dtype) -> str | None:
    return unsupported_reason(case["D"], case["Q"], case["H"] // case["H_KV"], dtype)


implementation("decoding", "triton-split-kv", role="triton", dtypes=TRITON_DTYPES, features=FEATURES,
               needs=(TRITON,), unsupported=_triton_unsupported)(_triton_builder("split-kv"))
implementation("decoding", "triton-async-softmax", role="triton", dtypes=TRITON_DTYPES, features=FEATURES,
               needs=(TRITON,), unsupported=_triton_unsupported)(_triton_builder("async-softmax"))

from implementations.decoding import peers  # noqa: E402,F401  (registers the peer libraries)
