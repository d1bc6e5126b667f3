"""choose_dataflow, the pure function that plans a flat GEMM: which input drives which
choice (implementations/flat_gemm/triton_flat_gemm.py documents the rules), that every
architecture's table gives plans the kernels accept, and its picks for real decode shapes."""

from __future__ import annotations

import itertools

import pytest
import torch
import triton

from implementations.flat_gemm import triton_flat_gemm as tfg
from implementations.flat_gemm.triton_flat_gemm import Plan, choose_dataflow

ARCHS = sorted(tfg.CONFIGS)
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
BIG = 1 << 14  # N and K large enough that no clipping rule applies


@pytest.mark.parametrize("arch", ARCHS)
def test_rows_pick_the_dataflow_and_block_m(arch):
    for M in range(1, 129):
        plan = choose_dataflow(M, BIG, BIG, 132, torch.bfloat16, arch=arch)
        if M <= tfg.GEMV_UP_TO_M.get(arch, tfg.GEMV_UP_TO_M_DEFAULT):
            assert plan.dataflow == "gemv" and plan.block_m == triton.next_power_of_2(M), (M, plan)
        else:
            want = 16 if M <= 16 else 32 if M <= 32 else 64  # the smallest tl.dot tile covering M
            assert plan.dataflow == "flat" and plan.block_m == want, (M, plan)


@pytest.mark.parametrize("arch", ARCHS)
def test_forced_dataflows_are_kept_and_gemv_keeps_its_product_tile(arch):
    for M in (1, 2, 3, 4, 5, 16, 64, 100):
        gemv = choose_dataflow(M, BIG, BIG, 132, torch.float16, arch=arch, dataflow="gemv")
        flat = choose_dataflow(M, BIG, BIG, 132, torch.float16, arch=arch, dataflow="flat")
        assert gemv.dataflow == "gemv" and gemv.block_m <= tfg.GEMV_MAX_M
        assert gemv.block_m * gemv.block_n == tfg.CONFIGS[arch]["gemv"].block_n, (M, gemv)
        assert flat.dataflow == "flat" and flat.block_m >= 16


@pytest.mark.parametrize("arch", ARCHS)
def test_the_architecture_table_sets_tiles_warps_and_stages(arch):
    for dataflow in tfg.DATAFLOWS:
        tiles = tfg.CONFIGS[arch][dataflow]
        # as many SMs as tiles or more, so BLOCK_K keeps the table's value
        plan = choose_dataflow(8, BIG, BIG, 1 << 12, torch.bfloat16, arch=arch, dataflow=dataflow)
        assert (plan.block_k, plan.warps, plan.stages) == (tiles.block_k, tiles.warps, tiles.stages)
        if arch != "interpreter":
            assert plan.stages >= 2, f"{arch} {dataflow}: W is not double-buffered"


@pytest.mark.parametrize("arch", ARCHS)
def test_four_byte_elements_halve_block_k(arch):
    for dataflow in tfg.DATAFLOWS:
        half = choose_dataflow(8, BIG, BIG, 132, torch.bfloat16, arch=arch, dataflow=dataflow)
        full = choose_dataflow(8, BIG, BIG, 132, torch.float32, arch=arch, dataflow=dataflow)
        assert full.block_k == max(16, half.block_k // 2) and full.block_n == half.block_n


def test_small_n_and_k_clip_the_tiles():
    plan = choose_dataflow(13, 5, 3, 132, torch.bfloat16, arch="sm90")
    assert (plan.block_n, plan.block_k) == (16, 16)
    for dataflow in tfg.DATAFLOWS:  # N = 20 -> 32 and K = 40 -> 64, below the table's 64 and 128
        plan = choose_dataflow(1, 20, 40, 132, torch.bfloat16, arch="sm90", dataflow=dataflow)
        assert (plan.block_n, plan.block_k) == (32, 64), plan


def test_split_k_fills_the_sms_only_when_the_n_tiles_do_not():
    # 4096 / 32 = 128 tiles >= half of 132 SMs: no split
    assert choose_dataflow(16, 4096, 4096, 132, torch.bfloat16, arch="sm90").split_k == 1
    # 1024 / 32 = 32 tiles: split, 4 ways (K's 16 tiles of 256 keep 4 tiles a split)
    assert choose_dataflow(16, 1024, 4096, 132, torch.bfloat16, arch="sm90").split_k == 4
    # the same on a 4-SM machine: 32 tiles already fill it
    assert choose_dataflow(16, 1024, 4096, 4, torch.bfloat16, arch="sm90").split_k == 1
    # K = 512 is 2 tiles of 256: too short to split at all
    assert choose_dataflow(16, 256, 512, 132, torch.bfloat16, arch="sm90").split_k == 1
    # a tiny N and a huge K: capped at MAX_SPLIT_K
    assert choose_dataflow(16, 64, 1 << 16, 132, torch.bfloat16, arch="sm90").split_k == tfg.MAX_SPLIT_K


def test_split_k_properties_over_a_grid():
    """Each split keeps MIN_K_TILES_PER_SPLIT tiles, never more than MAX_SPLIT_K splits, a
    split only when the tiles are too few, and more SMs never mean fewer splits."""
    for M, N, K, dtype in itertools.product((1, 3, 8, 33), (64, 1000, 4096, 28672), (256, 4096, 14336), DTYPES):
        previous = 0
        for sms in (8, 66, 132, 264):
            plan = choose_dataflow(M, N, K, sms, dtype, arch="sm90")
            tiles = triton.cdiv(M, plan.block_m) * triton.cdiv(N, plan.block_n)
            assert 1 <= plan.split_k <= tfg.MAX_SPLIT_K
            if plan.split_k > 1:
                assert tiles < sms // 2 and triton.cdiv(K, plan.block_k) >= plan.split_k * tfg.MIN_K_TILES_PER_SPLIT
            assert plan.split_k >= previous, (M, N, K, dtype, sms)
            previous = plan.split_k


def test_every_table_gives_plans_the_kernels_accept():
    """Plan validates itself (powers of two, tl.dot's 16-element minimum) on construction."""
    for arch, dataflow, M, dtype in itertools.product(ARCHS, tfg.DATAFLOWS, (1, 3, 4, 5, 17, 64, 65), DTYPES):
        for N, K in ((1, 1), (77, 129), (BIG, BIG)):
            assert isinstance(choose_dataflow(M, N, K, 132, dtype, arch=arch, dataflow=dataflow), Plan)


def test_pure_given_the_architecture(monkeypatch):
    monkeypatch.setattr(tfg, "architecture", lambda: pytest.fail("read the machine's architecture"))
    assert choose_dataflow(3, 77, 129, 132, torch.float16, arch="sm80") == \
        choose_dataflow(3, 77, 129, 132, torch.float16, arch="sm80")


def test_a_wide_n_is_cut_into_equal_ranges_a_whole_number_an_sm():
    """Tiles outnumbering the SMs: N in equal ranges of at most BALANCED_MAX_ROWS, as few as
    that allows in a whole number of ranges an SM, as equal as whole rows allow; 64-row tiles
    swap the dot."""
    for N, sms, M in itertools.product((4225, 6144, 11008, 14336, 50000, 128256), (8, 66, 132), (1, 16, 32)):
        plan = choose_dataflow(M, N, 4096, sms, torch.bfloat16, arch="sm90")
        if triton.cdiv(N, 32) <= sms:
            continue  # the table's 32-row tiles are no more than the SMs: not balanced
        per_sm = triton.cdiv(N, sms * tfg.BALANCED_MAX_ROWS)
        rows = plan.rows
        assert rows <= tfg.BALANCED_MAX_ROWS and triton.cdiv(N, rows) <= per_sm * sms, (N, sms, plan)
        assert N > (per_sm - 1) * sms * tfg.BALANCED_MAX_ROWS, f"more ranges than needed: {N, sms, plan}"
        assert rows == triton.cdiv(N, per_sm * sms), f"ranges not as equal as they can be: {N, sms, plan}"
        assert plan.block_n == max(16, triton.next_power_of_2(rows)) and plan.swap_ab == (plan.block_n >= 64)
        assert plan.block_k == 128 and plan.split_k == 1
    # past BALANCED_MAX_M rows of x, the power-of-two tiles as before
    plan = choose_dataflow(64, 14336, 4096, 132, torch.bfloat16, arch="sm90")
    assert plan.rows_per_program is None and not plan.swap_ab and plan.block_n == 32
    # only where the architecture's table asks for it
    assert choose_dataflow(16, 14336, 4096, 132, torch.bfloat16, arch="sm80").rows_per_program is None


@pytest.mark.parametrize("M,N,K,want", [
    # Llama-2-7B's projections at decode batch sizes, bfloat16, on an H100 (132 SMs)
    (1, 4096, 4096, Plan("flat", 16, 32, 256, 1, 4, 4)),     # attention output: 128 tiles
    # fused QKV: 384 tiles > 132: 264 ranges of 47 rows, 64-row tiles swapped, K steps halve
    (4, 12288, 4096, Plan("flat", 16, 64, 128, 1, 4, 4, 47, True)),
    (8, 11008, 4096, Plan("flat", 16, 64, 128, 1, 4, 4, 42, True)),   # MLP up: 344 tiles
    (64, 1024, 11008, Plan("flat", 64, 32, 256, 5, 4, 4)),   # a narrow output: 32 tiles, split 5
    # Llama-3-8B's MLP up at 16 rows, its vocabulary projection (16 ranges an SM), and a
    # 6144-wide output: 132 ranges of 47 rows
    (16, 14336, 4096, Plan("flat", 16, 64, 128, 1, 4, 4, 55, True)),
    (1, 128256, 4096, Plan("flat", 16, 64, 128, 1, 4, 4, 61, True)),
    (8, 6144, 4096, Plan("flat", 16, 64, 128, 1, 4, 4, 47, True)),
])
def test_picks_for_decode_shapes_on_hopper(M, N, K, want):
    assert choose_dataflow(M, N, K, 132, torch.bfloat16, arch="sm90") == want
