"""The device's own ceilings, measured in the same run: a large matmul per dtype (TFLOP/s),
a large device-to-device copy (GB/s, bytes read plus bytes written) and a large read-only
reduction (GB/s read). A row's fraction of peak is measured against the matmul and the copy,
not against a datasheet; a stream of reads alone runs slightly faster than a copy, so a row
is flagged as beyond the device only above the faster of the two."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.registry import dtype_name
from harness.timing import Timer

MATMUL_SIZE = 8192  # 8192^3: large enough for cuBLAS to reach its plateau on Hopper
COPY_BYTES = 1 << 30


@dataclass(frozen=True)
class Ceilings:
    tflops: dict[str, float] = field(default_factory=dict)  # by dtype name
    gbps: float | None = None  # the copy
    read_gbps: float | None = None  # reads alone

    def fraction(self, dtype: torch.dtype, tflops: float | None, gbps: float | None) -> float | None:
        """Roofline fraction: the larger of the compute and the bandwidth fractions, which
        equals (the roofline's time floor) / (measured time)."""
        fractions = []
        peak_tflops = self.tflops.get(dtype_name(dtype))
        if tflops is not None and peak_tflops:
            fractions.append(tflops / peak_tflops)
        if gbps is not None and self.gbps:
            fractions.append(gbps / self.gbps)
        return max(fractions) if fractions else None

    def exceeded(self, dtype: torch.dtype, tflops: float | None, gbps: float | None) -> float | None:
        """How far past what this device can do a row's counts put it (above 1: the FLOP or
        byte count is suspect), or None when it is within: the compute fraction, or the
        bandwidth against the faster of the copy and the read-only stream."""
        peak_tflops = self.tflops.get(dtype_name(dtype))
        over = []
        if tflops is not None and peak_tflops and tflops > peak_tflops:
            over.append(tflops / peak_tflops)
        bandwidth = max(filter(None, (self.gbps, self.read_gbps)), default=None)
        if gbps is not None and bandwidth and gbps > bandwidth:
            over.append(gbps / bandwidth)
        return max(over) if over else None

    def to_dict(self) -> dict:
        return {"tflops": dict(self.tflops), "gbps": self.gbps, "read_gbps": self.read_gbps}

    @classmethod
    def from_dict(cls, data: dict | None) -> Ceilings:
        data = data or {}
        return cls(dict(data.get("tflops") or {}), data.get("gbps"), data.get("read_gbps"))


def read_all(src: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """A reduction of a 1-D `src` into the 0-d `total`: every byte read once, nothing else written."""
    return torch.sum(src, dim=0, out=total)


def measure(timer: Timer, dtypes: list[torch.dtype]) -> Ceilings:
    """Measure on the timer's device; empty ceilings without a GPU (no performance figures)."""
    if not timer.on_gpu:
        return Ceilings()
    device = timer.device
    tflops = {}
    for dtype in sorted(set(dtypes) - {torch.float64}, key=str):
        a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=dtype)
        b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=dtype)
        c = torch.empty(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=dtype)
        ms = timer.time(lambda: torch.matmul(a, b, out=c)).median_ms
        tflops[dtype_name(dtype)] = 2 * MATMUL_SIZE**3 / (ms * 1e-3) / 1e12
        del a, b, c
    src = torch.randn(COPY_BYTES // 4, device=device)
    dst = torch.empty_like(src)
    ms = timer.time(lambda: dst.copy_(src)).median_ms
    gbps = 2 * COPY_BYTES / (ms * 1e-3) / 1e9
    total = torch.empty((), device=device)
    ms = timer.time(lambda: read_all(src, total)).median_ms
    read_gbps = COPY_BYTES / (ms * 1e-3) / 1e9
    del src, dst, total
    torch.cuda.empty_cache()
    return Ceilings(tflops, gbps, read_gbps)
