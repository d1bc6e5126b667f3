"""The command line every technique's tuning sweep (`python -m implementations.<name>.tune`)
shares: --budget-s and --csv, a check for a GPU, the sweep, its rows written as CSV, then
the sweep's own summary. A sweep that lists its candidates as CPU calls also takes
`--offline ARCH`: each candidate's kernels compiled for ARCH (no GPU needed) with the
registers, spills and shared memory ptxas reports, so the GPU's minutes go to candidates
that fit. And `compile_ahead`: a sweep's candidates compiled in parallel processes before its
serial timing loop, since compiling, not timing, is most of a large sweep's minutes. And a
sweep that a GPU fault stops (an illegal address leaves the process's CUDA context unusable)
raises ContextLost: its rows are written and the command starts again in a fresh process
with `--resume`, the rest of its budget, and the rows done so far, which the sweep skips.
Not a technique: it registers nothing."""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Callable, Iterable

import torch

Rows = list[dict]
Candidates = Iterable[tuple[str, Callable[[], object]]]  # (name, a call of the candidate on CPU tensors)


class ContextLost(Exception):
    """A candidate faulted the GPU: the process can launch nothing more. Carries the rows
    measured so far, the faulting one last (its note says so)."""

    def __init__(self, rows: Rows):
        super().__init__(rows[-1].get("note", "") if rows else "")
        self.rows = rows


def context_lost() -> bool:
    """After a candidate raised: whether this process's CUDA context is gone with it."""
    try:
        torch.cuda.synchronize()
        return False
    except Exception:  # torch.AcceleratorError and its kin: every later CUDA call would raise too
        return True


def sweep_main(description: str, default_budget_s: float, sweep: Callable[[argparse.Namespace], Rows],
               summarize: Callable[[Rows], None],
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
               offline: Callable[[argparse.Namespace], Candidates] | None = None,
               summarize_offline: Callable[[Rows], None] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--budget-s", type=float, default=default_budget_s, help="stop the sweep after this long")
    parser.add_argument("--csv", default=None, help="also write every row to this CSV file")
    if offline:
        parser.add_argument("--offline", metavar="ARCH", help="compile the candidates for ARCH (sm90, sm100, sm80, "
                                                              "sm8x) and report their resources; no GPU needed")
    parser.add_argument("--resume", metavar="CSV", default=None,
                        help="the rows of an earlier run of this sweep, kept in its output; the sweeps that raise "
                             "ContextLost (fftconv's) skip their candidates. Given on its own after a GPU fault")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    args.previous = read_rows(args.resume) if args.resume else []
    started = time.monotonic()
    if offline and args.offline:
        from harness.errors import UsageError

        try:
            rows = compile_report(offline(args), args.offline)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        summarize = summarize_offline or _summarize_resources
    elif not torch.cuda.is_available():
        print("error: the sweep needs a CUDA GPU (or --offline ARCH, where the sweep offers it)", file=sys.stderr)
        return 2
    else:
        try:
            rows = args.previous + sweep(args)
        except ContextLost as lost:
            path = args.csv or args.resume or tempfile.mkstemp(prefix="sweep-", suffix=".csv")[1]
            write_rows(path, args.previous + lost.rows)
            budget = args.budget_s - (time.monotonic() - started)
            print(f"{lost}; starting again in a fresh process (--resume {path}, {budget:.0f} s left)", flush=True)
            os.execv(sys.executable, [*sys.orig_argv, "--budget-s", str(max(budget, 0.0)), "--resume", path,
                                      "--csv", path])
    if args.csv and rows:
        write_rows(args.csv, rows)
    summarize(rows)
    return 0


def write_rows(path: str, rows: Rows) -> None:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def read_rows(path: str) -> Rows:
    """A sweep's CSV back as rows, its numbers as floats (NaN included), its text as text."""
    def value(text: str) -> object:
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline="") as f:
        return [{key: value(text) for key, text in row.items()} for row in csv.DictReader(f)]


def error_note(e: BaseException) -> str:
    """A sweep row's note for a candidate that failed: the exception's type and first line
    (a CUDA error's first line is the error; the lines after it are advice)."""
    text = str(e)
    return f"{type(e).__name__}: {text.splitlines()[0][:120] if text else ''}"


def compile_ahead(compile_one: Callable[..., str], jobs: Iterable[tuple], workers: int) -> dict[tuple, str]:
    """compile_one(*job) for every job in `workers` fresh processes, and each job's error ("" when
    it compiled). compile_one (a module-level function: it is pickled) runs the candidate once on
    inputs of the timed inputs' specialization class (the divisibility of every integer argument),
    so Triton's on-disk cache, which the timing process reads, then holds the very kernels it will
    launch; a job whose key differs only costs the timing loop its compile, as without this. Each
    job has a process of its own, so a kernel that faults the GPU (an illegal address leaves the
    process's CUDA context unusable) fails its own job, not the ones after it: a sweep can then
    skip it rather than meet the fault in its timing process."""
    jobs = list(jobs)
    if workers <= 1 or not jobs:
        return {}
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {job: pool.submit(compile_one, *job) for job in jobs}
        done = {}
        for job, future in futures.items():
            try:
                done[job] = future.result()
            except Exception as e:  # a worker that died (out of memory): the timing loop will say why
                done[job] = error_note(e)
        return done


def compile_report(candidates: Candidates, arch: str) -> Rows:
    """Each candidate called on CPU tensors with its launches recorded, not run, and every
    kernel it launched compiled for `arch` (harness/offline_compile.py)."""
    from harness.offline_compile import check_target, compile_call

    check_target(arch)
    rows = []
    for name, call in candidates:
        for r in compile_call(call, arch):
            rows.append({"candidate": name, "kernel": r.kernel, "warps": r.num_warps, "stages": r.num_stages,
                         "registers": r.registers, "spill_store_bytes": r.spill_store_bytes,
                         "spill_load_bytes": r.spill_load_bytes, "shared_kib": r.shared_bytes // 1024,
                         "error": r.error})
            print(f"{name:28} {r.kernel:24} {r.num_warps:2}w {r.num_stages}s {r.registers:4} regs  spills "
                  f"{r.spill_store_bytes}/{r.spill_load_bytes} B  smem {r.shared_bytes // 1024:4} KiB  {r.error}",
                  flush=True)
    return rows


def _summarize_resources(rows: Rows) -> None:
    fits = sorted({r["candidate"] for r in rows} - {r["candidate"] for r in rows
                                                    if r["error"] or r["spill_store_bytes"] or r["spill_load_bytes"]})
    print(f"\n{len(fits)} of {len({r['candidate'] for r in rows})} candidates compile without spills within "
          f"shared memory: {', '.join(fits) or 'none'}")
