"""The fixed-cost probe's pieces that run without a GPU: its line fit and its read-only kernel."""

from __future__ import annotations

import pytest
import torch

from implementations.decoding.fixed_cost import _read_kernel, fit


def test_fit_recovers_fixed_cost_and_rate():
    points = [(bytes_, 7.5 + bytes_ / 3000e3) for bytes_ in (1.3e8, 2.7e8, 5.4e8)]  # 7.5 us + 3000 GB/s
    fixed, rate = fit(points)
    assert fixed == pytest.approx(7.5) and rate == pytest.approx(3000.0)


@pytest.mark.parametrize("length,splits", [(100, 3), (64, 1), (37, 5)])
def test_read_kernel_sums_each_chunk_of_k_and_v(length, splits):
    heads, dim, block = 2, 16, 16
    k, v = torch.randn(heads, length, dim), torch.randn(heads, length, dim)
    sums = torch.empty(heads * splits)
    _read_kernel[(heads, splits)](k, v, sums, length, splits, BLOCK_N=block, HEAD_DIM=dim)
    chunk = -(-(-(-length // splits)) // block) * block
    want = [float((k[h, s * chunk:(s + 1) * chunk] + v[h, s * chunk:(s + 1) * chunk]).sum())
            for h in range(heads) for s in range(splits)]
    assert sums.tolist() == pytest.approx(want, rel=1e-5, abs=1e-4)
