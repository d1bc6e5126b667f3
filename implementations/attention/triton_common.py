"""The attention kernels' autotuning candidates: one tiling, and the pruning hook that keeps
large tiles away from float32 and wide heads, and tuning away from short sequences."""

from __future__ import annotations

import torch
import triton


def tiling(block_m: int, block_n: int, warps: int, stages: int) -> triton.Config:
    """One autotuning candidate: a BLOCK_M x BLOCK_N tile, its warps and pipeline depth."""
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)


SHORT_SEQUENCE = 128  # at most one tile of the largest tilings: every tiling does about the same work


def prune_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Autotuner hook. float32 tiles and head dims above 128 take twice the shared memory, so
    only tilings up to 64 x 64 are kept for them. A sequence of at most SHORT_SEQUENCE tokens
    (a smoke test's) keeps only the smallest tiling: tuning there would compile and time every
    candidate, minutes on a GPU, to choose among kernels that all run one or two tiles."""
    args = {**named_args, **kwargs}
    smallest = min(configs, key=_tile_area)
    if args["N_CTX"] <= SHORT_SEQUENCE:
        return [smallest]
    if named_args["Q"].dtype == torch.float32 or args["HEAD_DIM"] > 128:
        return [c for c in configs if _tile_area(c) <= 64 * 64] or [smallest]
    return configs


def _tile_area(config: triton.Config) -> int:
    return config.kwargs["BLOCK_M"] * config.kwargs["BLOCK_N"]
