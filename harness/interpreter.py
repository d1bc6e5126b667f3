"""Running Triton kernels on a machine with no GPU, in Triton's interpreter.

With TRITON_INTERPRET=1 Triton executes kernels with NumPy on the CPU, so the same
kernels a GPU runs can be checked anywhere. Triton 3.9's interpreter holds bfloat16
values as raw 16-bit patterns, and two of its operations then differ from a GPU:
  - `tl.dot` on bfloat16 operands multiplies the patterns as integers;
  - casting float32 to bfloat16 truncates, where the GPU rounds to nearest even (a
    kernel rounding P to bfloat16 before P @ V then looks several times less accurate).
`enable()` probes each and, only where a probe fails, patches the interpreter: dot
operands are widened to float32 first (exact), and the cast rounds to nearest even.
Nothing here touches what runs on a GPU.
"""

from __future__ import annotations

import functools
import os

from harness.needs import interpreting


def enable() -> None:
    """Switch Triton to its interpreter and fix its bfloat16 handling where it is wrong.
    Call before any @triton.jit function is defined."""
    os.environ["TRITON_INTERPRET"] = "1"
    fix_bfloat16()


def fix_bfloat16() -> list[str]:
    """Patch what the probes find wrong; return the names of the patches installed."""
    if not interpreting():
        return []
    from triton.runtime import interpreter as interp

    builder = interp.InterpreterBuilder
    installed = []
    if _dot_error() > 1e-3:
        builder.create_dot = _widening_dot(builder.create_dot)
        installed.append("bfloat16 dot")
    if _cast_mismatches():
        builder.cast_impl = _rounding_cast(builder.cast_impl)
        installed.append("float32->bfloat16 rounding")
    if _dot_error() > 1e-3 or _cast_mismatches():
        raise RuntimeError("Triton's interpreter still mishandles bfloat16 after flashsuite's patches")
    return installed


def _widening_dot(original):
    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return original(self, _widen(a), _widen(b), d, input_precision, max_num_imprecise_acc)

    return create_dot


def _rounding_cast(original):
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter as interp

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            bits = np.ascontiguousarray(src.data, dtype=np.float32).view(np.uint32)
            # round to nearest even: add 0x7FFF plus the lowest kept bit, then drop 16 bits
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
            rounded = np.where(np.isnan(src.data), np.uint16(0x7FC0), rounded)
            return interp.TensorHandle(rounded, tl.bfloat16)
        return original(self, src, dst_type)

    return cast_impl


def _widen(handle):
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter as interp

    if handle.dtype.scalar != tl.bfloat16:
        return handle
    return interp.TensorHandle((handle.data.astype(np.uint32) << 16).view(np.float32), tl.float32)


def _dot_error() -> float:
    """Max abs error of a 16x16 bfloat16 tl.dot in the interpreter against torch."""
    import torch

    a = torch.randn(16, 16).to(torch.bfloat16)
    b = torch.randn(16, 16).to(torch.bfloat16)
    c = torch.empty(16, 16)
    _probes()[0][(1,)](a, b, c, 16)
    return (c - a.float() @ b.float()).abs().max().item()


def _cast_mismatches() -> int:
    """Elements where the interpreter's float32->bfloat16 cast differs from torch's (RTNE)."""
    import torch

    x = torch.randn(256) * 100
    y = torch.empty(256, dtype=torch.bfloat16)
    _probes()[1][(1,)](x, y, 256)
    return int((y.view(torch.int16) != x.to(torch.bfloat16).view(torch.int16)).sum())


@functools.cache
def _probes():
    import triton  # imported here so that importing this module needs no Triton
    import triton.language as tl

    @triton.jit
    def dot_probe(a_ptr, b_ptr, c_ptr, N: tl.constexpr):
        i = tl.arange(0, N)
        tile = i[:, None] * N + i[None, :]
        tl.store(c_ptr + tile, tl.dot(tl.load(a_ptr + tile), tl.load(b_ptr + tile)))

    @triton.jit
    def cast_probe(x_ptr, y_ptr, N: tl.constexpr):
        i = tl.arange(0, N)
        tl.store(y_ptr + i, tl.load(x_ptr + i).to(tl.bfloat16))

    return dot_probe, cast_probe
