"""How the L2 flush before each sample changes a bandwidth-bound timing: a memset flush (the
L2 left full of dirty lines) against a read flush (clean lines), both with the call replayed
from a CUDA graph, on a 134 MB device copy and on SDPA decoding a 32K-token cache.

    PYTHONPATH=. python ci/l2-flush-check.py

The evidence for harness/timing.py's read flush (docs/methodology.md)."""

import torch
import torch.nn.functional as F

from harness.timing import Timer


def median_us(flush, fn, samples: int = 200) -> float:
    for _ in range(5):
        flush()
        fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(samples)]
    for start, end in events:
        flush()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return sorted(s.elapsed_time(e) for s, e in events)[samples // 2] * 1e3


def graphed(fn):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def main() -> None:
    buffer = Timer(torch.device("cuda"))._flush  # the harness's flush buffer, twice the L2
    flushes = {"memset": buffer.zero_, "read": buffer.sum}
    n_ctx = 32768
    q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 8, n_ctx, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    src = torch.empty(2 * k.numel(), dtype=torch.bfloat16, device="cuda")  # as many bytes as K and V
    dst = torch.empty_like(src)
    calls = {"copy of 134 MB": lambda: dst.copy_(src),
             "SDPA flash, 32K-token decode": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)}
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        for name, call in calls.items():
            replay = graphed(call)
            print(f"{name:30} " + "  ".join(f"{f} flush {median_us(flush, replay):6.1f} us"
                                            for f, flush in flushes.items()))


if __name__ == "__main__":
    main()
