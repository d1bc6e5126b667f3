"""The registry: techniques (what is computed) and implementations (who computes it).

A technique module declares one `Technique` and registers its implementations with
`@implementation(...)`. The registry is plain data: frozen dataclasses in two dicts,
filled when `load_all()` imports the technique packages. It is the only global
mutable state in flashsuite.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence

import torch

from harness.cases import Case
from harness.needs import Need

Role = Literal["reference", "triton", "peer"]
ROLES: tuple[Role, ...] = ("reference", "triton", "peer")
Direction = Literal["fwd", "fwd+bwd"]
DIRECTIONS: tuple[Direction, ...] = ("fwd", "fwd+bwd")

# What an implementation's builder returns: a zero-argument closure to time. Setup
# (allocation, compilation, layout changes) happens in the builder, outside the timing.
Closure = Callable[[], "torch.Tensor | tuple[torch.Tensor, ...]"]
Builder = Callable[..., Closure]


@dataclass(frozen=True)
class Inputs:
    """Seeded inputs for one case: named tensors, and the names that get gradients."""

    tensors: dict[str, torch.Tensor]
    differentiable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tolerance:
    """FlashAttention's rule: an implementation's error against the float64 reference may be
    at most `multiple` times the error of the reference itself run at the same precision,
    plus `floor` (relative to the output's scale). NaN never passes."""

    multiple: float = 2.0
    floor: float = 1e-5


@dataclass(frozen=True)
class Technique:
    """What a technique computes and how to count its work.

    make_inputs(case, dtype, device, seed) -> Inputs   the same values for every implementation
    flops(case, direction) -> float            useful floating-point operations
    min_bytes(case, dtype, direction) -> float each input read once, each output written once
    required_features(case) -> set of feature names an implementation must offer
    """

    name: str
    summary: str
    parameters: tuple[str, ...]
    make_inputs: Callable[[Case, torch.dtype, torch.device, int], Inputs]
    flops: Callable[[Case, Direction], float]
    min_bytes: Callable[[Case, torch.dtype, Direction], float]
    required_features: Callable[[Case], frozenset[str]] = lambda case: frozenset()
    validate_case: Callable[[Case], str | None] = lambda case: None
    tolerance: Tolerance = Tolerance()
    directions: tuple[Direction, ...] = DIRECTIONS
    outputs: tuple[str, ...] = ("out",)  # names of what the implementations return, in order


@dataclass(frozen=True)
class Implementation:
    """One way to compute a technique.

    build(case, **tensors) -> closure; the closure returns the output tensor(s).
    unsupported(case, dtype) -> None, or the reason this case is out of the kernel's range.
    """

    technique: str
    name: str
    role: Role
    build: Builder
    dtypes: frozenset[torch.dtype]
    features: frozenset[str] = frozenset()
    needs: tuple[Need, ...] = ()
    unsupported: Callable[[Case, torch.dtype], str | None] = lambda case, dtype: None
    summary: str = ""

    def missing_needs(self) -> str | None:
        """The first unmet need, as a reason, or None when the implementation can run here."""
        for need in self.needs:
            reason = need.check()
            if reason:
                return reason
        return None

    def why_not(self, technique: Technique, case: Case, dtype: torch.dtype, direction: Direction) -> str | None:
        """None if this implementation can run (case, dtype, direction); else the reason."""
        if dtype not in self.dtypes:
            accepted = ", ".join(sorted(dtype_name(d) for d in self.dtypes))
            return f"{self.name} does not support dtype {dtype_name(dtype)} (accepted: {accepted})"
        if direction == "fwd+bwd" and "backward" not in self.features:
            return f"{self.name} has no backward pass"
        missing = sorted(technique.required_features(case) - self.features)
        if missing:
            return f"{self.name} does not support {', '.join(missing)}"
        return self.unsupported(case, dtype)


_TECHNIQUES: dict[str, Technique] = {}
_IMPLEMENTATIONS: dict[tuple[str, str], Implementation] = {}


def register_technique(technique: Technique) -> Technique:
    if technique.name in _TECHNIQUES and _TECHNIQUES[technique.name] != technique:
        raise ValueError(f"technique {technique.name!r} is registered twice")
    _TECHNIQUES[technique.name] = technique
    return technique


def implementation(
    technique: str,
    name: str,
    *,
    role: Role,
    dtypes: Sequence[torch.dtype],
    features: Sequence[str] = (),
    needs: Sequence[Need] = (),
    unsupported: Callable[[Case, torch.dtype], str | None] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering `build(case, **tensors) -> closure` as an implementation."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")

    def register(build: Builder) -> Builder:
        impl = Implementation(
            technique=technique,
            name=name,
            role=role,
            build=build,
            dtypes=frozenset(dtypes),
            features=frozenset(features),
            needs=tuple(needs),
            unsupported=unsupported or (lambda case, dtype: None),
            summary=(build.__doc__ or "").strip().splitlines()[0] if build.__doc__ else "",
        )
        key = (technique, name)
        if key in _IMPLEMENTATIONS and _IMPLEMENTATIONS[key].build is not build:
            raise ValueError(f"implementation {technique}/{name} is registered twice")
        _IMPLEMENTATIONS[key] = impl
        return build

    return register


def technique(name: str) -> Technique:
    try:
        return _TECHNIQUES[name]
    except KeyError:
        raise KeyError(f"unknown technique {name!r} (registered: {', '.join(sorted(_TECHNIQUES)) or 'none'})") from None


def technique_names() -> list[str]:
    return sorted(_TECHNIQUES)


def implementations(technique_name: str) -> list[Implementation]:
    """A technique's implementations, the reference first."""
    impls = [impl for (tech, _), impl in _IMPLEMENTATIONS.items() if tech == technique_name]
    return sorted(impls, key=lambda impl: (ROLES.index(impl.role), impl.name))


def reference(technique_name: str) -> Implementation:
    refs = [impl for impl in implementations(technique_name) if impl.role == "reference"]
    if len(refs) != 1:
        raise ValueError(f"technique {technique_name!r} needs exactly one reference implementation, has {len(refs)}")
    return refs[0]


def load_all() -> None:
    """Import every technique package under `implementations/`, plus any modules named in
    FLASHSUITE_PLUGINS (comma-separated), so out-of-tree techniques register the same way."""
    import implementations as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"implementations.{module.name}")
    for name in filter(None, (s.strip() for s in os.environ.get("FLASHSUITE_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            from harness.errors import UsageError

            raise UsageError(f"FLASHSUITE_PLUGINS names {name!r}, which cannot be imported ({e})") from None


DTYPES: Mapping[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
}
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "fp64": "float64"}


def parse_dtype(text: str) -> torch.dtype:
    name = _DTYPE_ALIASES.get(text, text)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {text!r} (accepted: {', '.join(DTYPES)}, or bf16, fp16, fp32, fp64)")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


__all__ = [
    "Case", "Closure", "DIRECTIONS", "DTYPES", "Direction", "Implementation", "Inputs", "Need", "ROLES", "Role",
    "Technique", "Tolerance", "dtype_name", "implementation", "implementations", "load_all", "parse_dtype",
    "reference", "register_technique", "technique", "technique_names",
]
