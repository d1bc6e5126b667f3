"""Error metrics against the float64 reference, and the pass rule.

The rule (FlashAttention's test rule): an implementation at precision P passes when its
error against the float64 reference is at most `multiple` times the error of the
reference itself computed at precision P, plus a floor relative to the output's scale.
Both the relative L2 error and the max abs error must pass; the max abs test also allows
one ulp of P at the output's largest magnitude, since two correct kernels may round the
same element to neighbouring values (FlashAttention-3's tests add a like term). Where
the float64 answer is identically zero (dQ and dK of attention over a single key), a
relative error is undefined: the output passes when its max abs error is within the
floor and one ulp of the largest output of the same call (`unit_scale`). NaN never passes.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from harness.registry import Tolerance


@dataclass(frozen=True)
class ErrorStats:
    rel_err: float  # ||out - ref||_2 / ||ref||_2
    max_abs_err: float  # max |out - ref|
    scale: float  # max |ref|, so floors are relative to the output's size

    @classmethod
    def between(cls, out: torch.Tensor, ref: torch.Tensor) -> ErrorStats:
        if out.shape != ref.shape:
            raise ValueError(f"output has shape {tuple(out.shape)}, the reference {tuple(ref.shape)}")
        out64, ref64 = out.detach().to(torch.float64), ref.detach().to(torch.float64)
        if not torch.isfinite(out64).all():
            return cls(math.nan, math.nan, _max_abs(ref64))
        diff = out64 - ref64
        ref_norm = torch.linalg.vector_norm(ref64).item()
        diff_norm = torch.linalg.vector_norm(diff).item()
        rel = diff_norm / ref_norm if ref_norm > 0 else diff_norm
        return cls(rel, _max_abs(diff), _max_abs(ref64))

    def worst(self, other: ErrorStats) -> ErrorStats:
        return ErrorStats(_nanmax(self.rel_err, other.rel_err), _nanmax(self.max_abs_err, other.max_abs_err),
                          max(self.scale, other.scale))


def passes(err: ErrorStats, ref_err: ErrorStats, tol: Tolerance, dtype: torch.dtype,
           unit_scale: float | None = None) -> bool:
    """The FlashAttention rule on both metrics, for outputs of `dtype`; False on NaN."""
    if math.isnan(err.rel_err) or math.isnan(err.max_abs_err):
        return False
    if ref_err.scale == 0:
        return err.max_abs_err <= (tol.floor + torch.finfo(dtype).eps) * (unit_scale or 0.0)
    rel_ok = err.rel_err <= tol.multiple * ref_err.rel_err + tol.floor
    ulp = torch.finfo(dtype).eps * ref_err.scale
    abs_ok = err.max_abs_err <= tol.multiple * ref_err.max_abs_err + tol.floor * ref_err.scale + ulp
    return rel_ok and abs_ok


def compare_outputs(names: Sequence[str], outs: Sequence[torch.Tensor], refs: Sequence[torch.Tensor]) -> dict[str, ErrorStats]:
    if len(outs) != len(refs):
        raise ValueError(f"implementation returned {len(outs)} outputs, the reference {len(refs)}")
    stats = {}
    for name, out, ref in zip(names, outs, refs):
        try:
            stats[name] = ErrorStats.between(out, ref)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    return stats


def bitwise_equal(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> bool:
    """Same bits, NaNs included (two runs that both write NaN in one place are repeatable)."""
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(_bits(x), _bits(y)) for x, y in zip(a, b)
    )


@contextlib.contextmanager
def poisoned_allocations() -> Iterator[None]:
    """Every torch.empty* inside the block returns NaN-filled memory (torch's
    fill_uninitialized_memory, active under use_deterministic_algorithms), so an output
    element an implementation forgets to write reads NaN and fails the check."""
    import torch.utils.deterministic as deterministic

    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_fill = deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        deterministic.fill_uninitialized_memory = was_fill
        torch.use_deterministic_algorithms(was_on, warn_only=was_warn_only)


def _bits(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().contiguous()
    if x.element_size() in (1, 2, 4, 8) and x.is_floating_point():
        return x.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()])
    return x


def _max_abs(x: torch.Tensor) -> float:
    return x.abs().max().item() if x.numel() else 0.0


def _nanmax(a: float, b: float) -> float:
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)
