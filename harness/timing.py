"""Latency: device events around the call, warm-up first, L2 flushed before every sample,
sampling until the median's 95% confidence interval is narrow or the time budget runs out.

On a GPU each sample is bracketed by CUDA events on the current stream; the L2 flush and
the per-sample setup (such as dropping last sample's gradients) are enqueued before the
start event, so they are not timed. The flush reads a buffer twice the L2's size: a read
leaves the L2 holding clean lines, where a memset leaves it full of dirty ones that the
timed call would pay to write back (on an H100, 6 us more for a 134 MB copy and about 10 us
more for a 32K-token decode; docs/methodology.md).

Short calls: when the host takes longer to launch the call than the GPU takes to run the
flush, the GPU reaches the start event before the call is enqueued and idles until it is,
inside the timing (a 35 us Triton kernel measured 2x slow, with a tight interval, while the
host was busy). So a spin kernel (torch.cuda._sleep) is enqueued between the flush and the
start event, lasting several times the call's host launch time as measured after the
warm-up: the host enqueues the call while the GPU spins, outside the timing.

With graph=True the call is captured once into a CUDA graph and each sample replays it,
so the figure is the GPU's time without the host's launch cost: how serving engines run
decode steps. A call that cannot be captured is timed eagerly, and says so in its mode.
Without a GPU the wall clock times the call: such figures are marked as not performance
figures (Triton's interpreter runs kernels in NumPy).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


LAUNCH_PROBES = 5  # launches timed on the host after the warm-up
LAUNCH_COVER = 3.0  # the spin before each sample, in multiples of the slowest of them
MIN_COVER_S = 20e-6
MAX_COVER_S = 1e-3


@dataclass(frozen=True)
class TimingPolicy:
    min_samples: int = 10
    max_samples: int = 2000
    min_seconds: float = 0.25
    max_seconds: float = 2.0
    target_rel_ci: float = 0.005  # stop once the median's 95% CI half-width is within 0.5% of it
    warmup_calls: int = 3
    warmup_seconds: float = 0.1
    batch: int = 10  # samples taken between synchronizations

    @classmethod
    def interpreter(cls) -> TimingPolicy:
        return cls(min_samples=3, max_samples=5, min_seconds=0.0, max_seconds=2.0, warmup_calls=1,
                   warmup_seconds=0.0, batch=1)


@dataclass(frozen=True)
class Timing:
    samples_ms: tuple[float, ...]
    mode: str  # "cuda-events", "cuda-graph" or "wall-clock"
    stop_reason: str  # "converged", "time budget", "sample cap"
    note: str = ""  # why a call asked to run as a CUDA graph was timed eagerly

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p10_ms(self) -> float:
        return _quantile(sorted(self.samples_ms), 0.10)

    @property
    def p90_ms(self) -> float:
        return _quantile(sorted(self.samples_ms), 0.90)

    @property
    def ci_rel(self) -> float:
        return median_ci_rel_halfwidth(self.samples_ms)

    @property
    def is_performance_figure(self) -> bool:
        return self.mode in ("cuda-events", "cuda-graph")


def median_ci_rel_halfwidth(samples: tuple[float, ...] | list[float]) -> float:
    """Half-width of the distribution-free 95% confidence interval of the median (order
    statistics around n/2 +- 0.98 sqrt(n)), relative to the median; inf below 6 samples."""
    n = len(samples)
    if n < 6:
        return math.inf
    xs = sorted(samples)
    half = 0.98 * math.sqrt(n)
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    median = statistics.median(xs)
    return (xs[hi] - xs[lo]) / (2 * median) if median > 0 else math.inf


class Timer:
    """Times closures on one device. Holds the L2-flush buffer, allocated once."""

    def __init__(self, device: torch.device, policy: TimingPolicy | None = None):
        self.device = device
        self.on_gpu = device.type == "cuda"
        self.policy = policy or (TimingPolicy() if self.on_gpu else TimingPolicy.interpreter())
        self._flush = None
        self._sleep_cycles_per_s = 0.0
        if self.on_gpu:
            l2_bytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 << 20)
            self._flush = torch.zeros(2 * max(l2_bytes, 8 << 20) // 8, dtype=torch.int64, device=device)
            self._sleep_cycles_per_s = _sleep_rate(device)

    def time(self, fn: Callable[[], object], setup: Callable[[], None] = lambda: None,
             graph: bool = False) -> Timing:
        policy = self.policy
        self._warm_up(fn, setup)
        mode, note = ("cuda-events" if self.on_gpu else "wall-clock"), ""
        if graph and self.on_gpu:
            try:
                fn, mode = self._captured(fn), "cuda-graph"
            except Exception as e:  # a host sync or an allocation the graph cannot hold
                torch.cuda.synchronize(self.device)
                note = f"not capturable as a CUDA graph ({type(e).__name__}: {str(e).strip().splitlines()[0][:160]}); timed eagerly"
        cover = self._launch_cover_cycles(fn, setup) if mode == "cuda-events" else 0  # a replay's launch is short
        samples: list[float] = []
        started = time.perf_counter()
        while True:
            samples += self._batch(fn, setup, policy.batch, cover)
            elapsed = time.perf_counter() - started
            if len(samples) >= policy.min_samples and elapsed >= policy.min_seconds:
                if median_ci_rel_halfwidth(samples) <= policy.target_rel_ci:
                    reason = "converged"
                    break
            if elapsed >= policy.max_seconds and len(samples) >= policy.min_samples:
                reason = "time budget"
                break
            if len(samples) >= policy.max_samples:
                reason = "sample cap"
                break
        return Timing(tuple(samples), mode, reason, note)

    def _captured(self, fn: Callable[[], object]) -> Callable[[], object]:
        """fn captured into a CUDA graph (warmed on a side stream first, as capture requires);
        returns the replay."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph.replay

    def _warm_up(self, fn: Callable[[], object], setup: Callable[[], None]) -> None:
        # Warm-up absorbs compilation, autotuning and handle creation.
        started = time.perf_counter()
        calls = 0
        while calls < self.policy.warmup_calls or time.perf_counter() - started < self.policy.warmup_seconds:
            setup()
            fn()
            calls += 1
        self.synchronize()

    def _launch_cover_cycles(self, fn: Callable[[], object], setup: Callable[[], None]) -> int:
        """Spin cycles that outlast the host's launch of fn (cover_cycles of the slowest of a
        few launches: host time of setup and fn, which return before the GPU runs them). The
        cap: a call that synchronizes inside has no launch to cover, and would otherwise make
        every sample wait its whole length again."""
        if not self.on_gpu:
            return 0
        slowest = 0.0
        for _ in range(LAUNCH_PROBES):
            t0 = time.perf_counter()
            setup()
            fn()
            slowest = max(slowest, time.perf_counter() - t0)
        self.synchronize()
        return cover_cycles(slowest, self._sleep_cycles_per_s)

    def _batch(self, fn: Callable[[], object], setup: Callable[[], None], count: int,
               cover_cycles: int = 0) -> list[float]:
        if not self.on_gpu:
            out = []
            for _ in range(count):
                setup()
                t0 = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t0) * 1e3)
            return out
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(count)]
        for start, end in pairs:
            setup()
            self._flush.sum()
            torch.cuda._sleep(cover_cycles)  # the GPU spins while the host launches fn
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(self.device)
        return [start.elapsed_time(end) for start, end in pairs]

    def synchronize(self) -> None:
        if self.on_gpu:
            torch.cuda.synchronize(self.device)


def cover_cycles(slowest_launch_s: float, cycles_per_s: float) -> int:
    """The spin before each sample: LAUNCH_COVER times the slowest launch, within
    [MIN_COVER_S, MAX_COVER_S], in torch.cuda._sleep's cycles."""
    return int(min(max(LAUNCH_COVER * slowest_launch_s, MIN_COVER_S), MAX_COVER_S) * cycles_per_s)


def _sleep_rate(device: torch.device, cycles: int = 2_000_000) -> float:
    """torch.cuda._sleep's cycles per second on `device` (its SM clock, as the spin sees it)."""
    with torch.cuda.device(device):
        torch.cuda._sleep(cycles)  # loads the kernel
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
        return cycles / (start.elapsed_time(end) / 1e3)


def _quantile(sorted_xs: list[float], q: float) -> float:
    if len(sorted_xs) == 1:
        return sorted_xs[0]
    pos = q * (len(sorted_xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)
