"""What every technique's Triton launchers share: whether kernels run in Triton's interpreter,
the target architecture (each launcher keeps its own tilings per architecture), the SM
count, the dot precision for a dtype, TMA-ready tensors and the tensor-descriptor scratch allocator.

Not a technique: it registers nothing, so `registry.load_all()` importing it is harmless."""

from __future__ import annotations

import functools
import os

import torch
import triton

from harness.needs import interpreting

# Triton 3.4 to 3.9 contract a * b + c into one FMA by default, and 3.10 will not (3.9 warns
# about it at every compile). Pinned on, so a kernel's rounding does not change with the
# Triton release; a user who sets the variable keeps theirs.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def architecture() -> str:
    """'interpreter', 'sm90' (Hopper), 'sm100' (Blackwell), 'sm80' (A100), 'sm8x' (consumer
    Ampere and Ada: about 100 KB of shared memory a block) or 'other'. Read when a kernel is
    first launched, never at import. FLASHSUITE_ARCH names one instead (`bench kernels` sets it
    to compile a GPU's tilings on a machine without that GPU)."""
    named = os.environ.get("FLASHSUITE_ARCH")
    if named:
        return named
    if interpreting() or not torch.cuda.is_available():
        return "interpreter"
    if torch.version.hip:
        return "other"
    major, minor = torch.cuda.get_device_capability()
    if major >= 10:
        return "sm100"
    if major == 9:
        return "sm90"
    if (major, minor) == (8, 0):
        return "sm80"
    return "sm8x" if major == 8 else "other"


INTERPRETER_SM_COUNT = 132  # an H100's, so the interpreter plans as a Hopper would


@functools.cache
def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of `device`; INTERPRETER_SM_COUNT off the GPU."""
    if device.type != "cuda":
        return INTERPRETER_SM_COUNT
    return torch.cuda.get_device_properties(device).multi_processor_count


def dot_precision(dtype: torch.dtype) -> str:
    """float32 runs as true float32 ('ieee'), not TF32, so an fp32 row means fp32; the
    setting is ignored for 16-bit operands."""
    return "ieee" if dtype == torch.float32 else "tf32"


def tma_compatible(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when TMA descriptors can read it in place (unit stride along the last dim,
    16-byte aligned base and strides), else an aligned contiguous copy. `.contiguous()` is not
    enough: a contiguous view can start off a 16-byte boundary."""
    size = t.element_size()
    aligned = t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and all(
        (stride * size) % 16 == 0 for stride, extent in zip(t.stride()[:-1], t.shape[:-1]) if extent > 1)
    return t if aligned else t.clone(memory_format=torch.contiguous_format)


def use_descriptor_scratch(device: torch.device) -> None:
    """Kernels build TMA tensor descriptors on the device; Triton asks for scratch memory."""
    triton.set_allocator(_allocator(device))


@functools.cache
def _allocator(device: torch.device):
    def allocate(size: int, alignment: int, stream):
        return torch.empty(size, dtype=torch.int8, device=device)

    return allocate
