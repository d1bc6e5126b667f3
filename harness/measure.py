"""Measuring one unit (a technique at one case, dtype and direction) for each implementation.

For every implementation, in this order, each result a column of its row:
  1. correctness on several fresh seeds against the float64 reference, outputs poisoned;
     the reference's own error at the same precision sets the tolerance;
  2. determinism: the same inputs twice, bitwise (forward, and backward when timed);
  3. the FP32 run's error against the same float64 reference, and the gap to this dtype;
  4. latency with the GPU's clocks and temperature read before and after;
  5. peak memory above the inputs; throughput against the ceilings measured this run.
An implementation that fails correctness is not timed. Failures become rows, not crashes.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from harness import registry, slowdown
from harness.ceilings import Ceilings
from harness.correctness import ErrorStats, bitwise_equal, compare_outputs, passes, poisoned_allocations
from harness.environment import code_hash, gpu_state
from harness.errors import Unsupported
from harness.registry import Implementation, Inputs, Technique, dtype_name
from harness.results import Row, utc_now
from harness.suites import Unit
from harness.timing import Timer

Emit = Callable[[str, object], None]  # ("begin", impl name) | ("row", Row) | ("poisoned", reason)
LOW_PRECISION = (torch.bfloat16, torch.float16)
# Calls compared bit for bit by the "repeat" check. Atomics reorder only sometimes: on the H100,
# PyTorch's memory-efficient attention backward gave one run two equal calls and the next run
# two that differed; each further call is another chance to see it.
REPEAT_CALLS = 5


@dataclass
class Expected:
    """The float64 reference's outputs for one seed, and the error of the reference run at
    the unit's own precision (the yardstick of the tolerance rule)."""

    outputs: tuple[torch.Tensor, ...]
    reference_error: dict[str, ErrorStats]


class Measurer:
    def __init__(self, device: torch.device, ceilings: Ceilings, base_seed: int, timer: Timer | None = None):
        self.device = device
        self.ceilings = ceilings
        self.base_seed = base_seed
        self.timer = timer or Timer(device)

    def run_unit(self, unit: Unit, impl_names: Sequence[str], emit: Emit) -> None:
        tech = registry.technique(unit.technique)
        impls = {impl.name: impl for impl in registry.implementations(unit.technique)}
        expected: list[Expected] | Exception | None = None
        for name in impl_names:
            impl = impls[name]
            emit("begin", name)
            started = time.perf_counter()
            row = self._blank_row(unit, impl)
            try:
                reason = impl.missing_needs()
                if reason:
                    row.status, row.reason = "unavailable", reason
                elif reason := impl.why_not(tech, unit.case, unit.dtype, unit.direction):
                    row.status, row.reason = "unsupported", reason
                else:
                    if expected is None:
                        expected = self._expected_or_error(tech, unit)
                    if isinstance(expected, Exception):
                        raise expected
                    self._measure(tech, impl, unit, expected, row)
            except Unsupported as e:
                row.status, row.reason = "unsupported", _one_line(e)
            except torch.OutOfMemoryError as e:
                row.status, row.reason = "oom", _one_line(e)
            except Exception as e:  # any failure of one implementation is a row, never the end of the run
                row.status, row.reason = "error", f"{type(e).__name__}: {_one_line(e)}"
            finally:
                row.timestamp = utc_now()
                row.elapsed_s = round(time.perf_counter() - started, 2)
                gc.collect()
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
            emit("row", row)
            if row.status in ("error", "oom") and (poison := self._context_poisoned()):
                emit("poisoned", poison)
                return

    # -- the steps ---------------------------------------------------------------------------

    def _expected_or_error(self, tech: Technique, unit: Unit) -> list[Expected] | Exception:
        try:
            return [self._expected(tech, unit, seed) for seed in self._seeds(unit)]
        except Exception as e:
            return RuntimeError(f"the reference failed: {type(e).__name__}: {_one_line(e)}")

    def _expected(self, tech: Technique, unit: Unit, seed: int) -> Expected:
        ref = registry.reference(unit.technique)
        inputs = tech.make_inputs(unit.case, unit.dtype, self.device, seed)
        exact = self._call(ref, unit, _cast(inputs, torch.float64), seed)
        same_precision = self._call(ref, unit, inputs, seed)
        return Expected(exact, compare_outputs(self._output_names(tech, unit, inputs), same_precision, exact))

    def _measure(self, tech: Technique, impl: Implementation, unit: Unit, expected: list[Expected], row: Row) -> None:
        seeds = self._seeds(unit)
        errors: dict[str, ErrorStats] = {}
        failures: list[str] = []
        for seed, want in zip(seeds, expected):
            inputs = tech.make_inputs(unit.case, unit.dtype, self.device, seed)
            with poisoned_allocations():
                got = self._call(impl, unit, inputs, seed)
            names = self._output_names(tech, unit, inputs)
            unit_scale = max(e.scale for e in want.reference_error.values())
            for name, err in compare_outputs(names, got, want.outputs).items():
                ref_err = want.reference_error[name]
                if not passes(err, ref_err, tech.tolerance, unit.dtype, unit_scale):
                    failures.append(f"{name}: rel_err {err.rel_err:.3g}, max_abs_err {err.max_abs_err:.3g} against "
                                    f"the reference's own {ref_err.rel_err:.3g}, {ref_err.max_abs_err:.3g}")
                errors[name] = errors[name].worst(err) if name in errors else err
            del got
        worst_ref = _worst(e for want in expected for e in want.reference_error.values())
        worst = _worst(errors.values())
        row.correct, row.n_seeds = not failures, len(seeds)
        row.rel_err, row.max_abs_err = worst.rel_err, worst.max_abs_err
        row.ref_rel_err, row.ref_max_abs_err = worst_ref.rel_err, worst_ref.max_abs_err
        row.errors = json.dumps({n: {"rel_err": e.rel_err, "max_abs_err": e.max_abs_err} for n, e in errors.items()})
        if failures:
            row.status = "incorrect"
            row.reason = (f"{failures[0]} (allowed: {tech.tolerance.multiple:g}x + {tech.tolerance.floor:g}); "
                          f"{len(failures)} failing output(s) over {len(seeds)} seeds; not timed")
            return

        inputs = tech.make_inputs(unit.case, unit.dtype, self.device, seeds[0])
        if "repeat" in unit.checks:
            first = self._call(impl, unit, inputs, seeds[0])
            row.bitwise_repeatable = all(bitwise_equal(first, self._call(impl, unit, inputs, seeds[0]))
                                         for _ in range(REPEAT_CALLS - 1))
            del first
        if "fp32" in unit.checks and unit.dtype in LOW_PRECISION and impl.why_not(tech, unit.case, torch.float32, unit.direction) is None:
            got32 = self._call(impl, unit, _cast(inputs, torch.float32), seeds[0])
            row.rel_err_fp32 = _worst(compare_outputs(self._output_names(tech, unit, inputs), got32, expected[0].outputs).values()).rel_err
            row.precision_gap = row.rel_err - row.rel_err_fp32
            del got32
        self._time(tech, impl, unit, inputs, seeds[0], row)

    def _time(self, tech: Technique, impl: Implementation, unit: Unit, inputs: Inputs, seed: int, row: Row) -> None:
        step, setup = self._step(impl, unit, inputs, seed)
        step, injected = slowdown.apply(unit.technique, impl.name, step, setup, self.timer,
                                        graph=unit.timing == "cuda-graph")  # test only; unset: unchanged
        before = gpu_state(self.device)
        timing = self.timer.time(step, setup, graph=unit.timing == "cuda-graph")
        after = gpu_state(self.device)
        row.median_ms, row.p10_ms, row.p90_ms = timing.median_ms, timing.p10_ms, timing.p90_ms
        row.n_samples, row.ci_rel, row.samples_ms = len(timing.samples_ms), timing.ci_rel, list(timing.samples_ms)
        row.timing_mode, row.stop_reason = timing.mode, timing.stop_reason
        if timing.note:
            row.reason = timing.note
        if injected:
            row.reason = "; ".join(filter(None, (row.reason, injected)))
        row.is_performance_figure = timing.is_performance_figure
        row.sm_clock_mhz_before, row.sm_clock_mhz_after = before.sm_clock_mhz, after.sm_clock_mhz
        row.temp_c_before, row.temp_c_after, row.power_w_after = before.temp_c, after.temp_c, after.power_w
        row.throttle_reasons = ",".join(sorted(set(before.throttle_reasons) | set(after.throttle_reasons)))
        row.throttled = before.throttled or after.throttled if self.device.type == "cuda" else None
        row.peak_bytes = self._peak_bytes(step, setup)
        row.flops = tech.flops(unit.case, unit.direction)
        row.min_bytes = tech.min_bytes(unit.case, unit.dtype, unit.direction)
        if timing.is_performance_figure:
            seconds = timing.median_ms * 1e-3
            row.tflops = row.flops / seconds / 1e12
            row.gbps = row.min_bytes / seconds / 1e9
            row.peak_tflops = self.ceilings.tflops.get(dtype_name(unit.dtype))
            row.peak_gbps = self.ceilings.gbps
            row.frac_of_peak = self.ceilings.fraction(unit.dtype, row.tflops, row.gbps)
            # Above the device's own ceiling means the work counts are wrong, not a record.
            over = self.ceilings.exceeded(unit.dtype, row.tflops, row.gbps)
            row.exceeds_ceiling = over is not None
            if over is not None:
                row.reason = f"{over:.2f} of the measured ceiling: the FLOP or byte count is suspect"

    def _peak_bytes(self, step: Callable[[], object], setup: Callable[[], None]) -> int | None:
        if self.device.type != "cuda":
            return None
        setup()
        torch.cuda.synchronize(self.device)
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        step()
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - base

    # -- calling an implementation -----------------------------------------------------------

    def _step(self, impl: Implementation, unit: Unit, inputs: Inputs, seed: int) -> tuple[Callable[[], object], Callable[[], None]]:
        """The closure to time, and the per-sample setup (outside the timing)."""
        backward = unit.direction == "fwd+bwd"
        tensors = fresh_leaves(inputs, backward)
        if not backward:
            with torch.no_grad():
                closure = impl.build(unit.case, **tensors)

            def forward() -> object:
                with torch.no_grad():
                    return closure()

            return forward, lambda: None
        closure = impl.build(unit.case, **tensors)
        outputs = as_tuple(closure())
        grads = self._grad_outputs(outputs, unit, seed)
        leaves = [tensors[name] for name in inputs.differentiable]
        del outputs

        def forward_backward() -> object:
            outs = as_tuple(closure())
            torch.autograd.backward(outs, grads)
            return outs

        def drop_grads() -> None:
            for leaf in leaves:
                leaf.grad = None

        return forward_backward, drop_grads

    def _call(self, impl: Implementation, unit: Unit, inputs: Inputs, seed: int) -> tuple[torch.Tensor, ...]:
        """Run once; the outputs, then (for fwd+bwd) the gradients of the differentiable inputs."""
        backward = unit.direction == "fwd+bwd"
        tensors = fresh_leaves(inputs, backward)
        if not backward:
            with torch.no_grad():
                return tuple(t.detach() for t in as_tuple(impl.build(unit.case, **tensors)()))
        outputs = as_tuple(impl.build(unit.case, **tensors)())
        torch.autograd.backward(outputs, self._grad_outputs(outputs, unit, seed))
        grads = []
        for name in inputs.differentiable:
            grad = tensors[name].grad
            if grad is None:
                raise RuntimeError(f"{impl.name} produced no gradient for {name}")
            grads.append(grad)
        return tuple(o.detach() for o in outputs) + tuple(grads)

    def _grad_outputs(self, outputs: tuple[torch.Tensor, ...], unit: Unit, seed: int) -> tuple[torch.Tensor, ...]:
        """Seeded upstream gradients, drawn at the unit's dtype so every implementation and
        the float64 reference see the same values."""
        generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        return tuple(
            torch.randn(o.shape, generator=generator, device=self.device, dtype=torch.float32).to(unit.dtype).to(o.dtype)
            for o in outputs
        )

    def _output_names(self, tech: Technique, unit: Unit, inputs: Inputs) -> list[str]:
        names = list(tech.outputs)
        if unit.direction == "fwd+bwd":
            names += [f"grad_{name}" for name in inputs.differentiable]
        return names

    def _seeds(self, unit: Unit) -> list[int]:
        """Fresh per run (from the run's base seed), the same for every implementation."""
        out = []
        for index in range(unit.seeds):
            key = f"{self.base_seed}/{unit.technique}/{unit.case.id}/{unit.dtype}/{index}".encode()
            out.append(int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF)
        return out

    def _blank_row(self, unit: Unit, impl: Implementation) -> Row:
        return Row(
            technique=unit.technique, impl=impl.name, role=impl.role, case=unit.case.to_json(),
            case_id=unit.case.id, dtype=dtype_name(unit.dtype), direction=unit.direction,
            fp32_matmul="tf32" if torch.backends.cuda.matmul.allow_tf32 and self.device.type == "cuda" else "ieee",
            impl_code_hash=impl_code_hash(impl),
        )

    def _context_poisoned(self) -> str | None:
        """After a failure on a GPU: is the CUDA context still usable (an illegal memory
        access poisons it for the whole process)?"""
        if self.device.type != "cuda":
            return None
        try:
            torch.cuda.synchronize(self.device)
            torch.ones(1, device=self.device).add_(1).item()
            return None
        except Exception as e:
            return _one_line(e)


def impl_code_hash(impl: Implementation) -> str:
    """Hash of the technique's folder, where an implementation and the kernels it calls live."""
    source = inspect.getsourcefile(impl.build)
    return code_hash(list(Path(source).parent.glob("*.py"))) if source else ""


def fresh_leaves(inputs: Inputs, backward: bool) -> dict[str, torch.Tensor]:
    """Fresh copies of the inputs, those named differentiable needing gradients for fwd+bwd."""
    return {name: t.detach().clone().requires_grad_(backward and name in inputs.differentiable)
            for name, t in inputs.tensors.items()}


def _cast(inputs: Inputs, dtype: torch.dtype) -> Inputs:
    return Inputs({n: t.to(dtype) if t.is_floating_point() else t for n, t in inputs.tensors.items()}, inputs.differentiable)


def as_tuple(out: object) -> tuple[torch.Tensor, ...]:
    """An implementation's output(s) as a tuple."""
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _worst(stats) -> ErrorStats:
    stats = list(stats)
    out = stats[0]
    for s in stats[1:]:
        out = out.worst(s)
    return out


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line[:400]
