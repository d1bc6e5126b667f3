"""Every plan in PLANS and FP32_PLANS run once on this GPU at a small batch and checked against
the float64 reference: Triton 3.6 miscompiled a tile silently once (docs/results/fftconv.md),
which the CPU interpreter's tests cannot see.

    python -m implementations.fftconv.check_plans

Prints one line a plan (its error against the bound: twice torch.fft's own error on inputs
rounded to the dtype) and exits 1 if any plan is wrong or fails.
"""

from __future__ import annotations

import math
import sys

import torch

from implementations.fftconv import monarch, reference
from implementations.fftconv import triton_fftconv as tf


def check(dtype: torch.dtype, length: int, generator: torch.Generator) -> tuple[float, float]:
    """(the plan's relative error, the bound it must meet) at `length` tokens."""
    batch, channels = (2, 8) if length <= 65536 else (2, 2)
    u, v, w = (torch.randn(batch, channels, length, device="cuda", generator=generator).to(dtype) for _ in range(3))
    k = (torch.randn(channels, length, device="cuda", generator=generator) / math.sqrt(length)).to(dtype)
    exact = reference.fftconv(u.double(), k.double(), v.double(), w.double())
    rounded = reference.fftconv(u.float(), k.float(), v.float(), w.float()).to(dtype).double()
    out = tf.fftconv(u, tf.prepare(k, length, dtype), v, w).double()
    rel = lambda y: ((y - exact).norm() / exact.norm()).item()  # noqa: E731
    return rel(out), 2 * rel(rounded) + 1e-5


def main() -> int:
    if not torch.cuda.is_available():
        print("error: check_plans runs the plans on a CUDA GPU; none is visible", file=sys.stderr)
        return 2
    generator = torch.Generator(device="cuda").manual_seed(1)
    bad = 0
    for dtype, tables in ((torch.bfloat16, monarch.PLANS), (torch.float32, monarch.FP32_PLANS)):
        for fft in sorted(tables[monarch.architecture()]):
            length = fft // 2
            try:
                err, bound = check(dtype, length, generator)
                verdict = "ok" if err <= bound else "WRONG"
            except Exception as e:  # a plan that does not compile, launch or run is a finding
                err, bound, verdict = math.nan, math.nan, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            bad += verdict != "ok"
            print(f"{str(dtype):15} N={length:8} {monarch.make_plan(length, dtype)}: err {err:.2e} "
                  f"(bound {bound:.1e}) {verdict}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
