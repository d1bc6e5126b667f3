"""The attention kernels' autotuning candidates: one tiling, and the pruning hook that keeps
large tiles away from float32 and wide heads."""

from __future__ import annotations

import torch
import triton


def tiling(block_m: int, block_n: int, warps: int, stages: int) -> triton.Config:
    """One autotuning candidate: a BLOCK_M x BLOCK_N tile, its warps and pipeline depth."""
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)


def prune_for_shared_memory(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Autotuner hook: float32 tiles and head dims above 128 take twice the shared memory,
    so only tilings up to 64 x 64 are kept for them."""
    if named_args["Q"].dtype == torch.float32 or {**named_args, **kwargs}["HEAD_DIM"] > 128:
        small = [c for c in configs if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 64]
        return small or configs[-1:]
    return configs
