"""Sweep the fused recurrence's launch shapes on this GPU: the evidence behind CONFIGS in
triton_rnn_forward.py and triton_rnn_backward.py.

    python -m implementations.rnn.tune [--budget-s 240] [--csv sweep.csv]

Each (warps, stages, R kept on chip or re-read, inputs loaded a step ahead or not) is timed with the harness's timer (L2
flushed, CUDA events) on the suite's headline shape, forward alone and forward+backward
(the forward at its tuned shape, so the row ranks the backward's), and checked against
the float32 reference loop first, so a launch shape cannot win by being wrong. flashrnn's
triton backend is timed beside it where it imports.
"""

from __future__ import annotations

import itertools
import math
import sys
import time

import torch

from harness.timing import Timer, TimingPolicy
from implementations.rnn import reference, triton_rnn_backward, triton_rnn_forward
from implementations.rnn.reference import GATES
from implementations.rnn.triton_rnn import fused_rnn
from implementations.rnn.triton_rnn_forward import RnnConfig
from implementations.sweep_cli import error_note, sweep_main
from implementations.triton_support import architecture

SHAPES = [("lstm", 16, 1024, 6, 128), ("gru", 16, 1024, 6, 128), ("slstm", 16, 1024, 6, 128), ("slstm", 16, 1024, 12, 64)]
SPACE = [RnnConfig(16, warps, stages, hoist, prefetch)
         for warps, stages, hoist, prefetch in itertools.product((4, 8), (1, 2), (False, True), (False, True))]


def _inputs(cell: str, batch: int, steps: int, heads: int, dim: int):
    gen = torch.Generator(device="cuda").manual_seed(0)
    gates = GATES[cell]
    Wx = torch.randn(batch, steps, gates, heads, dim, device="cuda", generator=gen).bfloat16()
    R = (torch.randn(gates, heads, dim, dim, device="cuda", generator=gen) / math.sqrt(dim)).bfloat16()
    b = (torch.randn(gates, heads, dim, device="cuda", generator=gen) * 0.1).bfloat16()
    return Wx, R, b


def _use(config: RnnConfig, forward: RnnConfig | None) -> None:
    """Launch the backward with `config`, and the forward with `forward` (None: `config` too)."""
    triton_rnn_forward.CONFIGS[architecture()] = forward or config
    triton_rnn_backward.CONFIGS[architecture()] = config


def sweep(budget_s: float) -> list[dict]:
    timer = Timer(torch.device("cuda"), TimingPolicy(min_samples=10, min_seconds=0.1, max_seconds=0.5))
    deadline = time.monotonic() + budget_s
    rows = []
    tuned_forward = triton_rnn_forward.CONFIGS[architecture()]
    try:
        from flashrnn import flashrnn
    except ImportError:
        flashrnn = None
    for cell, batch, steps, heads, dim in SHAPES:
        Wx, R, b = _inputs(cell, batch, steps, heads, dim)
        truth = reference.rnn(cell, Wx.float(), R.float(), b.float())
        dy = torch.randn_like(truth).bfloat16()
        shape = f"{cell} B{batch} T{steps} H{heads} D{dim}"
        leaves = [t.detach().clone().requires_grad_(True) for t in (Wx, R, b)]
        candidates = [(f"{'hoist' if c.hoist_r else 'reread'} {c.warps}w{c.stages}s{' ahead' if c.prefetch else ''}", c)
                      for c in SPACE]
        if flashrnn is not None and cell != "gru":
            candidates.append(("flashrnn-triton", None))
        for (name, config), direction in itertools.product(candidates, ("fwd", "fwd+bwd")):
            if time.monotonic() > deadline:
                return rows
            row = {"shape": shape, "direction": direction, "impl": name, "ms": math.nan, "note": ""}
            try:
                if config is None:
                    def forward(Wx, R, b):
                        return flashrnn(Wx, R.transpose(-1, -2), b, function=cell, backend="triton_fused",
                                        dtype="bfloat16")[0][0]
                else:
                    _use(config, forward=tuned_forward if direction == "fwd+bwd" else None)
                    forward = lambda Wx, R, b: fused_rnn(cell, Wx, R, b)  # noqa: E731
                if direction == "fwd":
                    with torch.no_grad():
                        run = lambda: forward(Wx, R, b)  # noqa: E731
                        err = ((run().float() - truth).norm() / truth.norm()).item()
                        ms = timer.time(run).median_ms
                else:
                    run = lambda: forward(*leaves).backward(dy)  # noqa: E731
                    err = ((forward(*leaves).detach().float() - truth).norm() / truth.norm()).item()
                    ms = timer.time(run).median_ms
                if not err < 5e-2:
                    row["note"] = f"rel err {err:.2e}"
                row["ms"] = ms
            except Exception as e:  # out of resources, a compile error: recorded, not fatal
                row["note"] = error_note(e)
            rows.append(row)
            print(f"{shape:26} {direction:8} {name:18} {row['ms']:9.3f} ms {row['note']}", flush=True)
    return rows


def summarize(rows: list[dict]) -> None:
    print("\nfastest per shape and direction:")
    key = lambda r: (r["shape"], r["direction"])  # noqa: E731
    for (shape, direction), group in itertools.groupby(sorted(rows, key=key), key=key):
        ranked = sorted((r for r in group if not math.isnan(r["ms"]) and not r["note"]), key=lambda r: r["ms"])
        print(f"{shape:26} {direction:8}", [(r["impl"], round(r["ms"], 3)) for r in ranked[:5]])


def main() -> int:
    return sweep_main(__doc__.splitlines()[0], 240.0, lambda args: sweep(args.budget_s), summarize)


if __name__ == "__main__":
    sys.exit(main())
