"""The attention a user would otherwise call, registered beside flashsuite's kernels:
PyTorch SDPA with each backend forced, SDPA's own dispatch, FlexAttention, and
flash-attn and xformers when they import."""

from __future__ import annotations

import contextlib
import functools
import re
import warnings

import torch
import torch.nn.functional as F

from harness.cases import Case
from harness.errors import Unsupported
from harness.needs import CUDA, package
from harness.registry import implementation

HALF = (torch.bfloat16, torch.float16)
ALL = (torch.bfloat16, torch.float16, torch.float32)


def _gqa(case: Case) -> bool:
    return case["H_KV"] != case["H"]


def _sdpa(backend: str | None):
    """A builder calling SDPA with `backend` forced (None: SDPA's own choice)."""

    def build(case: Case, q, k, v):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def call():
            with sdpa_kernel(getattr(SDPBackend, backend)) if backend else contextlib.nullcontext():
                return F.scaled_dot_product_attention(q, k, v, is_causal=case["causal"], enable_gqa=_gqa(case))

        refusal_as_unsupported(call)
        return call

    return build


def refusal_as_unsupported(call) -> None:
    """Run once; a backend that refuses the case ("No available kernel") becomes an
    unsupported row whose reason is the warning SDPA gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except RuntimeError as e:
            if "No available kernel" not in str(e):
                raise
            raise Unsupported(f"SDPA refused the case: {_sdpa_reasons(caught) or e}") from None


def _sdpa_reasons(caught: list) -> str:
    """SDPA's warnings as one line: it warns "<kernel> not used because:" and then the reason,
    each with a "(Triggered internally at <file>:<line>.)" that says nothing to a user."""
    messages = (re.sub(r"\s*\(Triggered internally at [^)]*\)\.?", "", str(w.message)) for w in caught)
    return " ".join(" ".join(m.split()) for m in messages).strip()


implementation("attention", "sdpa-flash", role="peer", dtypes=HALF, features=("causal", "gqa", "backward"),
               needs=(CUDA,))(_sdpa("FLASH_ATTENTION"))
implementation("attention", "sdpa-cudnn", role="peer", dtypes=HALF, features=("causal", "gqa", "backward"),
               needs=(CUDA,))(_sdpa("CUDNN_ATTENTION"))
implementation("attention", "sdpa-efficient", role="peer", dtypes=ALL, features=("causal", "gqa", "backward"),
               needs=(CUDA,))(_sdpa("EFFICIENT_ATTENTION"))
implementation("attention", "sdpa-math", role="peer", dtypes=ALL, features=("causal", "gqa", "backward"))(_sdpa("MATH"))
implementation("attention", "sdpa", role="peer", dtypes=ALL, features=("causal", "gqa", "backward"))(_sdpa(None))


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


@functools.cache
def _compiled_flex():
    """flex_attention compiled once per worker. Every case is a new static shape; the
    recompile limit is raised so no case silently falls back to the slow eager path."""
    import torch._dynamo
    from torch.nn.attention.flex_attention import flex_attention

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 512))
    return torch.compile(flex_attention, dynamic=False)


@implementation("attention", "flex", role="peer", dtypes=ALL, features=("causal", "gqa", "backward"), needs=(CUDA,))
def build_flex(case: Case, q, k, v):
    """FlexAttention (torch.compile'd), causal through a block mask built before timing."""
    from torch.nn.attention.flex_attention import create_block_mask

    mask = None
    if case["causal"]:
        mask = create_block_mask(_causal, B=None, H=None, Q_LEN=case["N"], KV_LEN=case["N"], device=q.device,
                                 _compile=True)
    flex = _compiled_flex()
    return lambda: flex(q, k, v, block_mask=mask, enable_gqa=_gqa(case))


@implementation("attention", "flash-attn", role="peer", dtypes=HALF, features=("causal", "gqa", "backward"),
                needs=(CUDA, package("flash_attn", "flash-attn")))
def build_flash_attn(case: Case, q, k, v):
    """Tri Dao's flash-attn (FlashAttention-2), on [B, N, H, D] views of the same tensors."""
    from flash_attn import flash_attn_func

    q_t, k_t, v_t = (t.transpose(1, 2) for t in (q, k, v))
    return lambda: flash_attn_func(q_t, k_t, v_t, causal=case["causal"]).transpose(1, 2)


@implementation("attention", "xformers", role="peer", dtypes=HALF, features=("causal", "backward"),
                needs=(CUDA, package("xformers")))
def build_xformers(case: Case, q, k, v):
    """xformers' memory_efficient_attention, on [B, N, H, D] views of the same tensors."""
    from xformers.ops import LowerTriangularMask, memory_efficient_attention

    bias = LowerTriangularMask() if case["causal"] else None
    q_t, k_t, v_t = (t.transpose(1, 2) for t in (q, k, v))
    return lambda: memory_efficient_attention(q_t, k_t, v_t, attn_bias=bias).transpose(1, 2)
