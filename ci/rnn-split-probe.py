"""Development probe of the split recurrence (implementations/rnn/triton_rnn_split.py) on a GPU:
does its step barrier open, is it right, and how fast is it beside cuDNN and the fused kernel.
Not a suite run (no table); the figures in docs/results/rnn.md's "split" note came from it:

    PYTHONPATH=. python ci/rnn-split-probe.py
"""

import math
import time

import torch

from harness.cases import Case
from harness.timing import Timer, TimingPolicy
from implementations.rnn import peers, reference
from implementations.rnn.triton_rnn import fused_rnn, split_rnn

SHAPES = [("lstm", 16, 64, 1, 128), ("lstm", 16, 1024, 1, 768), ("gru", 16, 1024, 1, 768),
          ("slstm", 16, 1024, 1, 768), ("lstm", 16, 1024, 6, 128)]  # cell, B, T, H, D


def main() -> None:
    timer = Timer(torch.device("cuda"), TimingPolicy(min_samples=10, min_seconds=0.2, max_seconds=1.0))
    for cell, B, T, H, D in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        G = 3 if cell == "gru" else 4
        Wx = torch.randn(B, T, G, H, D, device="cuda", generator=g).bfloat16()
        R = (torch.randn(G, H, D, D, device="cuda", generator=g) / math.sqrt(D)).bfloat16()
        b = (torch.randn(G, H, D, device="cuda", generator=g) * 0.1).bfloat16()
        started = time.time()
        y = split_rnn(cell, Wx, R, b)
        torch.cuda.synchronize()
        first = time.time() - started
        truth = reference.rnn(cell, Wx.float(), R.float(), b.float())
        err = ((y.float() - truth).norm() / truth.norm()).item()
        line = f"{cell} B{B} T{T} H{H} D{D}: split {timer.time(lambda: split_rnn(cell, Wx, R, b)).median_ms:.3f} ms"
        line += f" rel err {err:.2e} (first call {first:.1f} s)"
        with torch.no_grad():
            if H == 1 and cell != "slstm":
                line += f"; cudnn {timer.time(peers.build_cudnn(Case.of(cell=cell, B=B, T=T, H=H, D=D), Wx, R, b)).median_ms:.3f} ms"
            if D <= 128:
                line += f"; fused {timer.time(lambda: fused_rnn(cell, Wx, R, b)).median_ms:.3f} ms"
        print(line, flush=True)


if __name__ == "__main__":
    main()
