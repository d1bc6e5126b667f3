"""What a run's Triton kernels compile to on a GPU that is not here: registers a thread,
bytes spilled to local memory and shared memory a block, from Triton's own compiler and the
ptxas it ships, for a target such as sm_90 (`bench kernels`).

A launcher is called on CPU tensors with Triton's launch step replaced by a recorder
(`capture`): every `kernel[grid](...)` it makes is kept, not run. Each recorded launch is
then specialized and compiled as Triton's JIT would on that target (`compile_launch`), and
ptxas's verbose report gives the resources. The code is Triton's for the installed version,
which may not be the one the GPU machine runs: the figures guide tuning (a spilling config
is a slow one), they are not measurements.

Needs Triton's JIT internals (3.4 to 3.9 have the shape used here); anything else is refused
in one line.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import triton
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction

from harness.errors import UsageError

# The architecture names a technique's launcher keys its tilings by, as read by
# implementations/triton_support.architecture(), and the compile target of each.
TARGETS = {"sm90": 90, "sm100": 100, "sm80": 80, "sm8x": 89}
# The most shared memory one block may take (opt-in), per target: a kernel needing more fails to launch.
SHARED_LIMIT_BYTES = {"sm90": 227 * 1024, "sm100": 227 * 1024, "sm80": 163 * 1024, "sm8x": 99 * 1024}
ARCH_VARIABLE = "FLASHSUITE_ARCH"


@dataclass(frozen=True)
class Launch:
    """One `kernel[grid](*args, **kwargs)` a launcher made; an autotuned kernel keeps its configs."""

    kernel: JITFunction
    args: tuple
    kwargs: dict[str, Any]
    configs: tuple = ()

    @property
    def name(self) -> str:
        return self.kernel.__name__


@dataclass(frozen=True)
class Resources:
    """What ptxas reports for one compiled kernel."""

    kernel: str
    constants: dict[str, Any] = field(default_factory=dict)
    registers: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    stack_bytes: int = 0
    shared_bytes: int = 0
    num_warps: int = 0
    num_stages: int = 0
    error: str = ""

    @property
    def spills(self) -> bool:
        return self.spill_store_bytes > 0 or self.spill_load_bytes > 0


def check_target(arch: str) -> None:
    if arch not in TARGETS:
        raise UsageError(f"unknown target {arch!r} (accepted: {', '.join(TARGETS)})")


@contextlib.contextmanager
def capture(arch: str) -> Iterator[list[Launch]]:
    """Within the block, launches are recorded instead of run, and launchers that pick their
    tilings by architecture pick `arch`'s."""
    check_target(arch)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise UsageError("bench kernels compiles for a GPU; unset TRITON_INTERPRET")
    launches: list[Launch] = []

    def record_jit(self: JITFunction, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> None:
        launches.append(Launch(self, args, kwargs))

    def record_autotuned(self: Autotuner, *args: Any, grid: Any = None, warmup: bool = False, **kwargs: Any) -> None:
        self.nargs = dict(zip(self.arg_names, args))  # what the autotuner's own pruning reads
        try:
            configs = self.prune_configs(kwargs)  # the configs it would compile for these arguments
        finally:
            self.nargs = None
        launches.append(Launch(self.fn, args, kwargs, tuple(configs)))

    saved = JITFunction.run, Autotuner.run, os.environ.get(ARCH_VARIABLE)
    JITFunction.run, Autotuner.run = record_jit, record_autotuned
    os.environ[ARCH_VARIABLE] = arch
    try:
        yield launches
    finally:
        JITFunction.run, Autotuner.run = saved[0], saved[1]
        if saved[2] is None:
            os.environ.pop(ARCH_VARIABLE, None)
        else:
            os.environ[ARCH_VARIABLE] = saved[2]


def compile_call(call: Callable[[], object], arch: str) -> list[Resources]:
    """Every kernel `call` launches, compiled for `arch` (each autotuning config it would try)."""
    with capture(arch) as launches:
        call()
    return [resources for launch in launches for resources in compile_launch(launch, arch)]


def compile_launch(launch: Launch, arch: str) -> list[Resources]:
    """The launch compiled for `arch`: one Resources, or one per autotuning config."""
    variants = [{}] if not launch.configs else [config.all_kwargs() for config in launch.configs]
    return [_compile(launch, arch, {**launch.kwargs, **extra}) for extra in variants]


def _compile(launch: Launch, arch: str, kwargs: dict[str, Any]) -> Resources:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    target = GPUTarget("cuda", TARGETS[arch], 32)
    backend = make_backend(target)
    kwargs = {"debug": False, **kwargs}
    try:
        binder = create_function_from_signature(kernel.signature, kernel.params, backend)
        bound, specialization, options = binder(*launch.args, **kwargs)
        options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    except (TypeError, AttributeError, ValueError) as e:  # Triton's internals changed shape
        raise UsageError(f"bench kernels does not know Triton {triton.__version__}'s JIT ({e})") from None
    constants = {kernel.arg_names[path[0]]: value for path, value in constexprs.items()
                 if len(path) == 1 and kernel.params[path[0]].is_constexpr and _shown(value)}
    base = Resources(launch.name, constants, num_warps=options.num_warps, num_stages=options.num_stages)
    try:
        compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                                  options=options.__dict__)
    except Exception as e:  # a config that does not compile is a finding, not a crash
        return replace(base, error=one_line_error(e))
    shared = int(compiled.metadata.shared)
    too_much = (f"needs {shared // 1024} KiB of shared memory, {arch} has {SHARED_LIMIT_BYTES[arch] // 1024}"
                if shared > SHARED_LIMIT_BYTES[arch] else "")
    return replace(base, shared_bytes=shared, error=too_much, **ptxas_report(compiled.asm["ptx"], arch))


@functools.lru_cache(maxsize=256)  # a suite launches the same kernel for many cases
def ptxas_report(ptx: str, arch: str) -> dict[str, int]:
    """registers, spill_store_bytes, spill_load_bytes and stack_bytes from `ptxas -v`."""
    from triton.backends.nvidia.compiler import get_ptxas

    capability = TARGETS[arch]
    gpu = f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "kernel.ptx")
        with open(source, "w") as f:
            f.write(ptx)
        done = subprocess.run([get_ptxas(capability).path, "-v", f"--gpu-name={gpu}", source,
                               "-o", os.path.join(tmp, "kernel.cubin")], capture_output=True, text=True)
    text = done.stdout + done.stderr
    return {
        "registers": _number(r"Used (\d+) registers", text),
        "spill_store_bytes": _number(r"(\d+) bytes spill stores", text),
        "spill_load_bytes": _number(r"(\d+) bytes spill loads", text),
        "stack_bytes": _number(r"(\d+) bytes stack frame", text),
    }


def _number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    return int(found.group(1)) if found else 0


def _shown(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str)) and not isinstance(value, type)


def one_line_error(e: BaseException) -> str:
    """The exception's type and its last line (a Triton compile error ends with the message)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:200]

