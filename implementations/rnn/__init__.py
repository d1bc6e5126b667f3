"""Head-wise recurrent networks (FlashRNN): LSTM, GRU and sLSTM with the time loop fused.

Case parameters: cell (lstm, gru, slstm), B sequences, T time steps, H heads, D head size
(hidden size H x D, block-diagonal recurrent weights). Inputs as FlashRNN takes them: the
input projections Wx [B, T, G, H, D] (precomputed), R [G, H, D, D], b [G, H, D]; the output
is y [B, T, H, D]. See reference.py for the cells.
"""

from __future__ import annotations

import math

import torch

from harness.cases import Case
from harness.errors import Unsupported
from harness.needs import TRITON
from harness.registry import Direction, Inputs, Technique, Tolerance, implementation, register_technique
from implementations.rnn import reference
from implementations.rnn.reference import CELLS, GATES
from implementations.rnn.triton_rnn import DTYPES as TRITON_DTYPES
from implementations.rnn.triton_rnn import fused_rnn, split_rnn, split_unsupported_reason, unsupported_reason
from implementations.rnn.triton_rnn_split import grid_programs
from implementations.triton_support import architecture, sm_count

PARAMETERS = ("cell", "B", "T", "H", "D")


def make_inputs(case: Case, dtype: torch.dtype, device: torch.device, seed: int) -> Inputs:
    """Unit-variance input projections; R scaled by 1/sqrt(D) so the recurrent term is O(1)
    and the gates neither saturate nor vanish over thousands of steps; a small bias."""
    generator = torch.Generator(device=device).manual_seed(seed)
    G, B, T, H, D = GATES[case["cell"]], case["B"], case["T"], case["H"], case["D"]

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * scale).to(dtype)

    tensors = {"Wx": randn(B, T, G, H, D), "R": randn(G, H, D, D, scale=1 / math.sqrt(D)), "b": randn(G, H, D, scale=0.1)}
    return Inputs(tensors, differentiable=("Wx", "R", "b"))


def flops(case: Case, direction: Direction) -> float:
    """The recurrent products, 2 D^2 per gate, head, sequence and step (the pointwise cell
    math is not counted); the backward does twice the forward's (dy R^T and y^T dg)."""
    forward = 2.0 * GATES[case["cell"]] * case["B"] * case["T"] * case["H"] * case["D"] ** 2
    return forward if direction == "fwd" else 3.0 * forward


def min_bytes(case: Case, dtype: torch.dtype, direction: Direction) -> float:
    """Wx, R and b read once and y written once (forward); the backward also reads dy and
    writes dWx, dR and db."""
    size = torch.finfo(dtype).bits // 8
    G, B, T, H, D = GATES[case["cell"]], case["B"], case["T"], case["H"], case["D"]
    inputs = B * T * G * H * D + G * H * D * D + G * H * D
    forward = (inputs + B * T * H * D) * size
    return forward if direction == "fwd" else forward + (inputs + B * T * H * D) * size


def validate_case(case: Case) -> str | None:
    if case["cell"] not in CELLS:
        return f"cell must be one of {', '.join(CELLS)}, got {case['cell']!r}"
    for name in ("B", "T", "H", "D"):
        if not isinstance(case[name], int) or isinstance(case[name], bool) or case[name] < 1:
            return f"{name} must be a positive integer, got {case[name]!r}"
    return None


def required_features(case: Case) -> frozenset[str]:
    return frozenset({case["cell"]} | ({"multi-head"} if case["H"] > 1 else set()))


register_technique(Technique(
    name="rnn",
    summary="head-wise LSTM, GRU and sLSTM over time, input projections precomputed",
    parameters=PARAMETERS,
    make_inputs=make_inputs,
    flops=flops,
    min_bytes=min_bytes,
    required_features=required_features,
    validate_case=validate_case,
    tolerance=Tolerance(multiple=2.0, floor=1e-5),
))


@implementation("rnn", "reference", role="reference",
                dtypes=(torch.float64, torch.float32, torch.float16, torch.bfloat16),
                features=(*CELLS, "multi-head", "backward"))
def build_reference(case: Case, Wx, R, b):
    """Plain PyTorch: a loop over time steps, one einsum per gate, autograd for the backward."""
    return lambda: reference.rnn(case["cell"], Wx, R, b)


@implementation("rnn", "triton", role="triton", dtypes=TRITON_DTYPES, features=(*CELLS, "multi-head", "backward"),
                needs=(TRITON,), unsupported=lambda case, dtype: unsupported_reason(case["cell"], case["D"], dtype))
def build_triton(case: Case, Wx, R, b):
    """flashsuite's fused recurrence: forward and reverse-time loops each inside one Triton kernel."""
    return lambda: fused_rnn(case["cell"], Wx, R, b)


@implementation("rnn", "triton-split", role="triton", dtypes=TRITON_DTYPES, features=(*CELLS, "multi-head"),
                needs=(TRITON,),
                unsupported=lambda case, dtype: split_unsupported_reason(case["cell"], case["D"], dtype))
def build_triton_split(case: Case, Wx, R, b):
    """flashsuite's split recurrence: each head's hidden units spread over programs that meet
    at a barrier every step, for heads too big for one program (forward only)."""
    programs, sms = grid_programs(case["B"], case["H"], case["D"]), sm_count(Wx.device)
    if architecture() != "interpreter" and programs > sms:
        raise Unsupported(f"the split kernel needs its {programs} programs resident at once; this GPU has {sms} SMs")
    return lambda: split_rnn(case["cell"], Wx, R, b)


from implementations.rnn import peers  # noqa: E402,F401  (registers the peer libraries)
