"""`bench kernels SUITE --target sm90`: every Triton kernel a suite's cases launch, compiled for
a GPU that need not be here, with the registers, spills and shared memory ptxas reports.

Each case's Triton implementations are built and called on CPU tensors (forward, and
backward for fwd+bwd) while harness.offline_compile records their launches; distinct
launches (kernel, constants, warps, stages) are compiled once and listed, as they are found,
with the first case that made them. A case that cannot be built or called is a row with its
error, never the end of the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from harness import registry, suites
from harness.errors import UsageError
from harness.measure import as_tuple, fresh_leaves
from harness.offline_compile import Resources, check_target, compile_call, one_line_error
from harness.runner import plan


@dataclass(frozen=True)
class KernelRow:
    """One distinct compiled kernel, or one case whose launches could not be captured."""

    technique: str
    impl: str
    case_id: str
    dtype: str
    direction: str
    resources: Resources


def suite_kernels(suite_name: str, tier: str, arch: str, impls: Iterable[str] = (),
                  dtypes: Iterable[str] = (), cases: Iterable[str] = ()) -> Iterator[KernelRow]:
    check_target(arch)
    registry.load_all()
    suite = suites.load(suite_name, tier)
    seen: set[tuple] = set()
    for planned in plan(suite, impls, dtypes, cases, here=False):  # compiled for another machine
        unit = planned.unit
        tech = registry.technique(unit.technique)
        for impl in registry.implementations(unit.technique):
            if impl.name not in planned.impls or impl.role != "triton":
                continue
            if impl.why_not(tech, unit.case, unit.dtype, unit.direction):
                continue
            where = (unit.technique, impl.name, unit.case.id, registry.dtype_name(unit.dtype), unit.direction)
            try:
                compiled = compile_call(lambda: _call(tech, impl, unit), arch)
            except UsageError:  # a Triton whose internals it does not know: the whole report stops
                raise
            except Exception as e:  # noqa: BLE001 - one case's failure is a row, not the end
                yield KernelRow(*where, Resources("(launcher)", error=one_line_error(e)))
                continue
            for resources in compiled:
                key = (unit.technique, impl.name, resources.kernel, tuple(sorted(resources.constants.items())),
                       resources.num_warps, resources.num_stages)
                if key not in seen:
                    seen.add(key)
                    yield KernelRow(*where, resources)


def _call(tech: registry.Technique, impl: registry.Implementation, unit: suites.Unit) -> None:
    """The implementation built and called once on CPU inputs, backward too for fwd+bwd."""
    inputs = tech.make_inputs(unit.case, unit.dtype, torch.device("cpu"), 0)
    backward = unit.direction == "fwd+bwd"
    with torch.set_grad_enabled(backward):
        outputs = as_tuple(impl.build(unit.case, **fresh_leaves(inputs, backward))())
        if backward:
            torch.autograd.backward(outputs, [torch.ones_like(o) for o in outputs])
