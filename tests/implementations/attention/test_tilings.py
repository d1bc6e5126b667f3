"""The autotuner's pruning hook (triton_common.prune_configs): which of an architecture's
tilings are tried for a shape, so a float32 or wide-head case never gets a tile that
overflows shared memory and a short sequence compiles one kernel instead of tuning four."""

from __future__ import annotations

import pytest
import torch

from implementations.attention import triton_backward, triton_forward
from implementations.attention.triton_common import SHORT_SEQUENCE, prune_configs

LISTS = {"forward": triton_forward.FORWARD_CONFIGS, "dkdv": triton_backward.DKDV_CONFIGS,
         "dq": triton_backward.DQ_CONFIGS}


def _kept(configs, n_ctx: int, head_dim: int, dtype: torch.dtype) -> list[tuple[int, int]]:
    q = torch.empty(0, dtype=dtype)
    kept = prune_configs(configs, {"Q": q, "N_CTX": n_ctx}, HEAD_DIM=head_dim)
    return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kept]


@pytest.mark.parametrize("kernel", sorted(LISTS))
@pytest.mark.parametrize("arch", ["sm90", "sm100", "sm80", "sm8x"])
def test_long_bf16_sequences_try_every_tiling(kernel, arch):
    configs = LISTS[kernel][arch]
    assert _kept(configs, 4096, 128, torch.bfloat16) == [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in configs]


@pytest.mark.parametrize("kernel", sorted(LISTS))
@pytest.mark.parametrize("arch", ["sm90", "sm100", "sm80", "sm8x"])
@pytest.mark.parametrize("dtype, head_dim", [(torch.float32, 64), (torch.bfloat16, 256)])
def test_float32_and_wide_heads_keep_tiles_of_at_most_64_by_64(kernel, arch, dtype, head_dim):
    kept = _kept(LISTS[kernel][arch], 4096, head_dim, dtype)
    assert kept and all(m * n <= 64 * 64 for m, n in kept)


@pytest.mark.parametrize("kernel", sorted(LISTS))
@pytest.mark.parametrize("n_ctx", [1, 45, 77, SHORT_SEQUENCE])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_short_sequence_compiles_only_the_smallest_tiling(kernel, n_ctx, dtype):
    configs = LISTS[kernel]["sm90"]
    smallest = min(m * n for m, n in _kept(configs, 4096, 128, torch.bfloat16))
    kept = _kept(configs, n_ctx, 128, dtype)
    assert len(kept) == 1 and kept[0][0] * kept[0][1] == smallest
    assert len(_kept(configs, SHORT_SEQUENCE + 1, 128, torch.bfloat16)) == len(configs)
