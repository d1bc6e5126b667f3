"""Tiled exact attention (FlashAttention, FlashAttention-2, FastAttention).

Case parameters: B batch, H query heads, H_KV key/value heads (H_KV < H is GQA, 1 is MQA),
N sequence length, D head dim, causal. Inputs q [B, H, N, D], k and v [B, H_KV, N, D].
"""

from __future__ import annotations

import torch

from harness.cases import Case
from harness.needs import TRITON
from harness.registry import Direction, Inputs, Technique, Tolerance, implementation, register_technique
from implementations.attention import reference
from implementations.attention.triton_attention import DTYPES as TRITON_DTYPES
from implementations.attention.triton_attention import attention as triton_attention
from implementations.attention.triton_attention import unsupported_reason

PARAMETERS = ("B", "H", "H_KV", "N", "D", "causal")


def make_inputs(case: Case, dtype: torch.dtype, device: torch.device, seed: int) -> Inputs:
    generator = torch.Generator(device=device).manual_seed(seed)
    shapes = {"q": (case["B"], case["H"], case["N"], case["D"]),
              "k": (case["B"], case["H_KV"], case["N"], case["D"]),
              "v": (case["B"], case["H_KV"], case["N"], case["D"])}
    tensors = {name: torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(dtype)
               for name, shape in shapes.items()}
    return Inputs(tensors, differentiable=("q", "k", "v"))


def _visible_pairs(case: Case) -> int:
    n = case["N"]
    return n * (n + 1) // 2 if case["causal"] else n * n


def flops(case: Case, direction: Direction) -> float:
    """Two matmuls of 2*D flops per visible (query, key) pair forward; the backward does
    five (2.5x), the convention of the FlashAttention papers. Causal counts only the
    visible half, so a causal row is never credited with masked work."""
    forward = 4.0 * case["B"] * case["H"] * _visible_pairs(case) * case["D"]
    return forward if direction == "fwd" else 3.5 * forward


def min_bytes(case: Case, dtype: torch.dtype, direction: Direction) -> float:
    """Forward reads q, k, v and writes o; the backward also reads o, dO and writes dq, dk, dv."""
    size = torch.finfo(dtype).bits // 8
    q_like = case["B"] * case["H"] * case["N"] * case["D"]
    kv_like = case["B"] * case["H_KV"] * case["N"] * case["D"]
    forward = (2 * q_like + 2 * kv_like) * size
    if direction == "fwd":
        return forward
    return forward + (4 * q_like + 4 * kv_like) * size  # + read q, o, dO, k, v; write dq, dk, dv


def required_features(case: Case) -> frozenset[str]:
    features = set()
    if case["causal"]:
        features.add("causal")
    if case["H_KV"] != case["H"]:
        features.add("gqa")
    return frozenset(features)


def validate_case(case: Case) -> str | None:
    for name in ("B", "H", "H_KV", "N", "D"):
        if not isinstance(case[name], int) or case[name] < 1:
            return f"{name} must be a positive integer, got {case[name]!r}"
    if case["H"] % case["H_KV"]:
        return f"H={case['H']} must be a multiple of H_KV={case['H_KV']}"
    if not isinstance(case["causal"], bool):
        return f"causal must be true or false, got {case['causal']!r}"
    return None


register_technique(Technique(
    name="attention",
    summary="softmax(QK^T * scale) V, causal or not, grouped-query heads",
    parameters=PARAMETERS,
    make_inputs=make_inputs,
    flops=flops,
    min_bytes=min_bytes,
    required_features=required_features,
    validate_case=validate_case,
    tolerance=Tolerance(multiple=2.0, floor=1e-5),
))


@implementation("attention", "reference", role="reference",
                dtypes=(torch.float64, torch.float32, torch.float16, torch.bfloat16),
                features=("causal", "gqa", "backward"))
def build_reference(case: Case, q, k, v):
    """Plain PyTorch: dense scores, dense mask, softmax, in query chunks for long N."""
    return lambda: reference.attention(q, k, v, causal=case["causal"])


@implementation("attention", "triton", role="triton", dtypes=TRITON_DTYPES,
                features=("causal", "gqa", "backward"), needs=(TRITON,),
                unsupported=lambda case, dtype: unsupported_reason(case["D"], dtype))
def build_triton(case: Case, q, k, v):
    """flashsuite's fused FlashAttention-2 forward and backward (Triton, TMA descriptors)."""
    return lambda: triton_attention(q, k, v, causal=case["causal"])


from implementations.attention import peers  # noqa: E402,F401  (registers the peer libraries)
