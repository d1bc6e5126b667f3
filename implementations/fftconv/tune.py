"""Sweep the Monarch FFT convolution's plans (factorizations and warps) on this GPU.

The evidence for PLANS in monarch.py (docs/results/fftconv.md gives the H100's).

    python -m implementations.fftconv.tune [--budget-s 300] [--csv sweep.csv] [--lengths 8192,65536] [--jobs 12]
    python -m implementations.fftconv.tune --offline sm90 [--lengths 8192]   # registers and spills, no GPU

For each sequence length N (the FFT length L = 2N), every factorization L = n1 x n2 x n3 the
kernels take (n1 = 1, fused, up to FUSED_MAX_L; n1 of 16..128 through the column kernels) at
4, 8 and 16 warps, the row kernel taking its whole tile or 16, 32 or 64 of its rows at a time
(pipelined over 1, 2 or 3 stages), is checked against the float64 reference on the GPU (within twice the
reference's own bf16 error: a plan cannot win by being wrong) and timed with the harness's
timer (L2 flushed, CUDA events), bf16, gated, B * C = 4096 (the headline, B = 16, C = 768, at
N = 8192); torch.fft on float32 copies of the inputs (the torch-fft peer) is timed beside it. The summary prints
each length's fastest plan as the PLANS entry to paste. Every candidate is first compiled in
--jobs parallel processes (sweep_cli.compile_ahead): the timing loop then reads Triton's cache.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import sys
import time

import torch

from harness import registry
from harness.cases import Case
from harness.timing import Timer, TimingPolicy
from implementations.fftconv import monarch, peers, reference
from implementations.fftconv import triton_fftconv as tf
from implementations.sweep_cli import Candidates, ContextLost, compile_ahead, context_lost, error_note, sweep_main

LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
FACTORS = (16, 32, 64, 128)
WARPS = (4, 8, 16)
CHUNKS = (0, 16, 32, 64)  # rows k2 the row kernel takes at a time (0: the whole tile)
STAGES = (1, 2, 3)  # the chunk loop's pipelining (a whole tile has no loop to pipeline)
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def candidates(length: int, dtype: torch.dtype = torch.bfloat16) -> list[monarch.Plan]:
    """Every plan for sequences of `length`: fused ones while L allows, three-pass ones always.
    float32's tf32x3 dots cannot hold a tile above monarch.FP32_MAX_TILE elements, so its
    candidates stop there, whole tiles only."""
    fft = monarch.fft_length(length)
    plans = []
    for n1 in (1,) + FACTORS:
        for n2, n3 in itertools.product(FACTORS, FACTORS):
            if n1 * n2 * n3 != fft or (n1 == 1 and fft > monarch.FUSED_MAX_L):
                continue
            for warps, chunk, stages in itertools.product(WARPS, CHUNKS, STAGES):
                rows = chunk or n2
                per_thread = 2 if dtype == torch.float32 else 4  # float32's tiles are small by necessity
                if rows * n3 // (32 * warps) < per_thread or (chunk and chunk >= n2) or (not chunk and stages != 3):
                    continue  # too many warps for the tile; no chunking; no loop to pipeline
                if dtype == torch.float32 and (n2 * n3 > monarch.FP32_MAX_TILE or chunk):
                    continue
                if dtype == torch.float32 and warps == 16:
                    continue  # tf32x3: 16 warps timed slowest at every length, or faulted (H100)
                # A three-pass row kernel of 4 warps at most 128 registers a thread fits 4 blocks an SM
                # (3 uncapped, at its 124-131): 16K's 505 -> 454 us on the H100. float32's tf32x3
                # dots hold three times the operands, which a cap would spill.
                for cap in (0, 128) if n1 > 1 and warps == 4 and dtype != torch.float32 else (0,):
                    plans.append(monarch.Plan(n1, n2, n3, num_warps=warps, block_m=min(64, n2 * n3), chunk=chunk,
                                              num_stages=stages, max_registers=cap))
    return [plan for plan in plans if plan.problem() is None]


def _inputs(batch: int, channels: int, length: int, dtype: torch.dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    u, v, w = (torch.randn(batch, channels, length, device="cuda", generator=gen).to(dtype) for _ in range(3))
    k = (torch.randn(channels, length, device="cuda", generator=gen) / math.sqrt(length)).to(dtype)
    return u, k, v, w


def _rel(out: torch.Tensor, exact: torch.Tensor) -> float:
    return ((out.double() - exact).norm() / exact.norm()).item()


def _shape_name(length: int) -> str:
    batch, channels = _shape(length)
    return f"B{batch} C{channels} N{length}"


def _shape(length: int) -> tuple[int, int]:
    """(batch, channels) swept at `length`: the headline's at 8K, else B * C = 4096."""
    return (16, 768) if length == 8192 else (8, 512)


def _job(length: int, dtype_name: str, plan: monarch.Plan) -> tuple:
    """_compile_plan's arguments for `plan`, and the key of its outcome in compile_ahead's answer."""
    return (*_shape(length), length, dtype_name, plan)


def _compile_plan(batch: int, channels: int, length: int, dtype_name: str, plan: monarch.Plan) -> str:
    """One call of `plan` on the swept shape: its kernels land in Triton's cache, and a kernel
    that faults the GPU there (Triton 3.6's illegal addresses, which a smaller grid did not
    show) fails this process, not the timing loop."""
    dtype = DTYPES[dtype_name]
    try:
        u, k, v, w = _inputs(batch, channels, length, dtype)
        tf.fftconv(u, tf.prepare(k, length, dtype, plan), v, w)
        torch.cuda.synchronize()
        return ""
    except Exception as e:  # the timing loop records it and skips the candidate
        return error_note(e)


def sweep(budget_s: float, lengths: tuple[int, ...], dtype: torch.dtype, jobs: int = 1,
          done: frozenset[tuple[str, str]] = frozenset()) -> list[dict]:
    """Time every candidate of every length (skipping the (shape, impl) pairs in `done`, from a
    resumed run); a candidate that faults the GPU ends the process with ContextLost."""
    timer = Timer(torch.device("cuda"), TimingPolicy(min_samples=10, min_seconds=0.1, max_seconds=0.5))
    deadline = time.monotonic() + budget_s
    dtype_name = registry.dtype_name(dtype)
    started = time.monotonic()
    compiled = compile_ahead(_compile_plan, [_job(n, dtype_name, plan) for n in lengths for plan in candidates(n, dtype)
                                             if (_shape_name(n), _name(plan)) not in done], jobs)
    if compiled:
        print(f"compiled {len(compiled)} candidates in {jobs} processes in {time.monotonic() - started:.0f} s "
              f"({sum(bool(e) for e in compiled.values())} failed)", flush=True)
    rows = []
    for length in lengths:
        batch, channels = _shape(length)
        u, k, v, w = _inputs(batch, channels, length, dtype)
        exact = reference.fftconv(u.double(), k.double(), v.double(), w.double())
        allowed = 2 * _rel(reference.fftconv(u, k, v, w), exact) + 1e-5
        shape = _shape_name(length)
        # The yardstick: torch.fft on float32 copies of the inputs, as the suite's float32 rows
        # (on the bf16 tensors themselves it also times their casts: 3.94 ms at 16K against 3.19).
        peer = peers.build_torch_fft(Case.of(B=batch, C=channels, N=length, K=length, gated=True),
                                     *(t.float() for t in (u, k, v, w)))
        named = [("torch-fft", None)] + [(_name(p), p) for p in candidates(length, dtype)]
        for name, plan in named:
            if time.monotonic() > deadline:
                return rows
            if (shape, name) in done:
                continue
            row = {"shape": shape, "impl": name, "ms": math.nan, "rel_err": math.nan, "note": "", "plan": ""}
            failed = compiled.get(_job(length, dtype_name, plan)) if plan else None
            if failed:  # met again here, a fault would end the sweep: its CUDA context is lost
                row["note"] = f"in its own process: {failed}"
                rows.append(row)
                print(f"{shape:22} {name:22} skipped: {row['note']}", flush=True)
                continue
            try:
                if plan is None:
                    run = peer
                else:
                    prepared = tf.prepare(k, length, dtype, plan)
                    run = lambda: tf.fftconv(u, prepared, v, w)  # noqa: E731
                    row["plan"] = _entry(plan)
                row["rel_err"] = _rel(run(), exact)
                if not row["rel_err"] <= allowed:
                    row["note"] = f"rel err {row['rel_err']:.2e} > {allowed:.2e}"
                row["ms"] = timer.time(run).median_ms
            except Exception as e:  # out of resources, a compile error: recorded, not fatal
                row["note"] = error_note(e)
                if context_lost():  # a fault: nothing more can run in this process
                    row["note"] = f"faulted the GPU: {row['note']}"
                    raise ContextLost(rows + [row]) from e
            rows.append(row)
            print(f"{shape:22} {name:22} {row['ms']:9.3f} ms  err {row['rel_err']:.2e} {row['plan']} {row['note']}", flush=True)
        del exact
        torch.cuda.empty_cache()
    return rows


def summarize(rows: list[dict]) -> None:
    print("\nfastest correct plans per shape (PLANS entry: (n1, n2, n3, warps, chunk, stages"
          "[, block_m, column_warps, paired] for three passes)), and torch-fft:")
    key = lambda r: r["shape"]  # noqa: E731
    for shape, group in itertools.groupby(sorted(rows, key=key), key=key):
        group = list(group)
        ranked = sorted((r for r in group if r["plan"] and not r["note"] and not math.isnan(r["ms"])), key=lambda r: r["ms"])
        peer = [r["ms"] for r in group if r["impl"] == "torch-fft"]
        best = f"{ranked[0]['plan']} {ranked[0]['ms']:.3f} ms" if ranked else "none correct"
        print(f"{shape:22} {best:32} torch-fft {peer[0] if peer else math.nan:.3f} ms;",
              [(r["impl"], round(r["ms"], 3)) for r in ranked[1:4]])


def summarize_offline(rows: list[dict]) -> None:
    """Per length, the plan whose kernels all compile without spills within shared memory,
    with the fewest passes, then the largest tile a pass, then the fewest warps: the entry to
    paste where no GPU timing exists yet."""
    by_candidate: dict[str, list[dict]] = {}
    for row in rows:
        by_candidate.setdefault(row["candidate"], []).append(row)
    fitting = [name for name, kernels in by_candidate.items()
               if not any(k["error"] or k["spill_store_bytes"] or k["spill_load_bytes"] for k in kernels)]
    print(f"\n{len(fitting)} of {len(by_candidate)} candidates compile without spills within shared memory; "
          "per length, the fewest passes, then the largest tile a pass, then the fewest warps "
          "(PLANS entry: (n1, n2, n3, warps, chunk, stages)):")
    best: dict[str, tuple] = {}
    for name in fitting:
        length, plan = _parse(name)
        rank = (plan.levels, -(plan.rows_per_pass * plan.n3), plan.num_warps, plan.num_stages)
        if length not in best or rank < best[length][0]:
            best[length] = (rank, plan)
    for length, (_, p) in sorted(best.items(), key=lambda item: int(item[0][1:])):
        print(f"{length:8} {_entry(p)}")


def _parse(name: str) -> tuple[str, monarch.Plan]:
    """'N16384 16x32x64 4w c0 s3 r128' -> ('N16384', the plan); the register cap is optional."""
    length, factors, warps, chunk, stages, *cap = name.split()
    n1, n2, n3 = map(int, factors.split("x"))
    return length, monarch.Plan(n1, n2, n3, num_warps=int(warps[:-1]), block_m=min(64, n2 * n3),
                                chunk=int(chunk[1:]), num_stages=int(stages[1:]),
                                max_registers=int(cap[0][1:]) if cap else 0)


def _name(plan: monarch.Plan) -> str:
    cap = f" r{plan.max_registers}" if plan.max_registers else ""
    return f"{plan.n1}x{plan.n2}x{plan.n3} {plan.num_warps}w c{plan.chunk} s{plan.num_stages}{cap}"


def _entry(plan: monarch.Plan) -> str:
    """The plan as its PLANS entry."""
    entry = (plan.n1, plan.n2, plan.n3, plan.num_warps, plan.chunk, plan.num_stages)
    if plan.n1 > 1 or plan.max_registers:
        entry += (plan.block_m, plan.column_warps, plan.paired)
    if plan.max_registers:
        entry += (plan.max_registers,)
    return str(entry)


def offline_candidates(args: argparse.Namespace) -> Candidates:
    """Every plan of every length as a call on CPU tensors (one row: the kernels are the same)."""
    dtype = DTYPES[args.dtype]
    for length in (int(n) for n in args.lengths.split(",")):
        u = torch.zeros(1, 1, length, dtype=dtype)
        k = torch.zeros(1, length, dtype=dtype)
        for plan in candidates(length, dtype):
            yield f"N{length} {_name(plan)}", functools.partial(_convolve, u, k, length, plan)


def _convolve(u: torch.Tensor, k: torch.Tensor, length: int, plan: monarch.Plan) -> torch.Tensor:
    return tf.fftconv(u, tf.prepare(k, length, u.dtype, plan), u, u)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="sequence lengths N, comma-separated")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16",
                        help="the inputs' dtype (float32 has its own plans: FP32_PLANS)")
    parser.add_argument("--jobs", type=int, default=min(12, os.cpu_count() or 1),
                        help="processes compiling the candidates ahead of the timing loop (1: compile as timed)")


def main() -> int:
    return sweep_main(__doc__.splitlines()[0], 300.0,
                      lambda args: sweep(args.budget_s, tuple(int(n) for n in args.lengths.split(",")), DTYPES[args.dtype],
                                         args.jobs, frozenset((r["shape"], r["impl"]) for r in args.previous)),
                      summarize, _arguments, offline_candidates, summarize_offline)


if __name__ == "__main__":
    sys.exit(main())
