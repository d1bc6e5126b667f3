"""The device's ceilings (harness/ceilings.py): the roofline fraction a row reports, and when a
row is flagged as beyond what the device can do (its counts suspect)."""

from __future__ import annotations

import pytest
import torch

from harness.ceilings import Ceilings, measure, read_all
from harness.timing import Timer

H100 = Ceilings({"bfloat16": 680.0}, gbps=3000.0, read_gbps=3150.0)


def test_fraction_is_the_larger_of_compute_and_copy_bandwidth():
    assert H100.fraction(torch.bfloat16, 340.0, 600.0) == pytest.approx(0.5)
    assert H100.fraction(torch.bfloat16, 68.0, 2700.0) == pytest.approx(0.9)
    assert H100.fraction(torch.float16, None, 1500.0) == pytest.approx(0.5)  # no fp16 matmul ceiling measured
    assert Ceilings().fraction(torch.bfloat16, 1.0, 1.0) is None


def test_a_read_stream_above_the_copy_but_below_the_read_ceiling_is_not_flagged():
    """A read-only kernel (decoding reads its KV cache) can beat a copy, which mixes reads and
    writes: 1.01 of the copy is within the device, above the read-only stream it is not."""
    assert H100.fraction(torch.bfloat16, None, 3030.0) == pytest.approx(1.01)
    assert H100.exceeded(torch.bfloat16, None, 3030.0) is None
    assert H100.exceeded(torch.bfloat16, None, 3465.0) == pytest.approx(1.1)


def test_compute_above_the_matmul_ceiling_is_flagged():
    assert H100.exceeded(torch.bfloat16, 748.0, 10.0) == pytest.approx(1.1)
    assert H100.exceeded(torch.bfloat16, 600.0, 10.0) is None
    assert H100.exceeded(torch.float16, 5000.0, None) is None  # no ceiling to exceed


def test_without_a_read_ceiling_the_copy_is_the_limit():
    """Sidecars written before the read ceiling existed have only the copy."""
    old = Ceilings.from_dict({"tflops": {"bfloat16": 680.0}, "gbps": 3000.0})
    assert old.read_gbps is None
    assert old.exceeded(torch.bfloat16, None, 3030.0) == pytest.approx(1.01)


def test_round_trip_through_the_sidecar():
    assert Ceilings.from_dict(H100.to_dict()) == H100
    assert Ceilings.from_dict(None) == Ceilings()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_no_ceilings_without_a_gpu():
    assert measure(Timer(torch.device("cpu")), [torch.bfloat16]) == Ceilings()


def test_the_read_ceiling_kernel_reduces_without_allocating_its_result():
    src = torch.arange(1000, dtype=torch.float32)
    total = torch.empty(())
    assert read_all(src, total) is total and total.item() == 499500.0
