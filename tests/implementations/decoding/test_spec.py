"""The decoding technique as the harness sees it (implementations/decoding/__init__.py):
its registration, the ragged cache lengths, make_inputs, the work counts, the case checks,
the features a case requires, and the registered builders run end to end."""

from __future__ import annotations

import pytest
import torch

from harness import registry
from harness.cases import Case
from implementations import decoding
from tests.implementations.decoding._support import Decode, assert_rule
from tests.implementations.shared import reproduce

# NumPy warnings from the interpreter (empty chunks take log2(0)) are expected.
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

CPU = torch.device("cpu")
BASE = dict(B=2, H=4, H_KV=4, Q=1, N=16, D=16, page=0, ragged=False)


def case(**overrides) -> Case:
    return Case.from_mapping({**BASE, **overrides})


@pytest.fixture(scope="module")
def impls() -> dict[str, registry.Implementation]:
    registry.load_all()
    return {impl.name: impl for impl in registry.implementations("decoding")}


def test_the_technique_is_registered_forward_only():
    registry.load_all()
    tech = registry.technique("decoding")
    assert tech.parameters == ("B", "H", "H_KV", "Q", "N", "D", "page", "ragged")
    assert tech.directions == ("fwd",) and tech.outputs == ("out",)
    assert (tech.tolerance.multiple, tech.tolerance.floor) == (2.0, 1e-5)


def test_implementations(impls):
    names = [impl.name for impl in registry.implementations("decoding")]
    assert names[:3] == ["reference", "triton-async-softmax", "triton-split-kv"]
    assert registry.reference("decoding").name == "reference"
    assert torch.float64 in impls["reference"].dtypes
    for name in ("triton-split-kv", "triton-async-softmax"):
        impl = impls[name]
        assert impl.role == "triton" and impl.summary
        assert impl.dtypes == {torch.bfloat16, torch.float16, torch.float32}
        assert impl.features == {"gqa", "paged", "ragged", "multi-query"}
    assert all(impls[n].role == "peer" for n in names[3:]) and "flashinfer" in names


# --- cache lengths -----------------------------------------------------------------------------


def test_cache_lengths_by_hand():
    assert decoding.cache_lengths(case(B=4, N=130, ragged=True)) == [130, 109, 87, 65]
    assert decoding.cache_lengths(case(B=2, N=77, ragged=True)) == [77, 39]
    assert decoding.cache_lengths(case(B=3, N=130, ragged=False)) == [130] * 3
    assert decoding.cache_lengths(case(B=1, N=130, ragged=True)) == [130]


@pytest.mark.parametrize("B,N", [(2, 16), (3, 130), (8, 17), (16, 8192), (9, 16)])
def test_ragged_lengths_spread_from_N_to_about_half(B, N):
    lengths = decoding.cache_lengths(case(B=B, N=N, ragged=True))
    assert len(lengths) == B and lengths[0] == N and lengths[-1] == N - N // 2
    assert all(a > b for a, b in zip(lengths, lengths[1:])), f"not strictly decreasing: {lengths}"


# --- make_inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("page", [0, 16, 5])
def test_make_inputs_shapes_and_determinism(seed, page):
    tech = registry.technique("decoding")
    c = case(B=3, H=8, H_KV=2, Q=2, N=37, D=32, page=page, ragged=True)
    first = tech.make_inputs(c, torch.bfloat16, CPU, seed).tensors
    again = tech.make_inputs(c, torch.bfloat16, CPU, seed).tensors
    other = tech.make_inputs(c, torch.bfloat16, CPU, seed + 1).tensors
    assert set(first) == ({"q", "k", "v", "cache_lens"} | ({"block_table"} if page else set()))
    assert all(torch.equal(first[n], again[n]) for n in first), f"not deterministic; {reproduce(seed)}"
    assert not torch.equal(first["k"], other["k"]), "the seed made no difference"
    assert first["q"].shape == (3, 8, 2, 32) and first["q"].dtype == torch.bfloat16
    assert first["cache_lens"].dtype == torch.int32 and first["cache_lens"].tolist() == decoding.cache_lengths(c)
    if page:
        per_seq = -(-37 // page)
        assert first["k"].shape == first["v"].shape == (3 * per_seq, page, 2, 32)
        table = first["block_table"]
        assert table.shape == (3, per_seq) and table.dtype == torch.int32
        assert sorted(table.flatten().tolist()) == list(range(3 * per_seq)), "pages are not a permutation"
    else:
        assert first["k"].shape == first["v"].shape == (3, 2, 37, 32)


def test_make_inputs_tables_are_shuffled(seed):
    """The allocator's order is random: over a few seeds some table is not the identity."""
    tech = registry.technique("decoding")
    c = case(B=2, N=64, page=8)
    tables = [tech.make_inputs(c, torch.float32, CPU, seed + i).tensors["block_table"] for i in range(3)]
    assert any(not torch.equal(t.flatten(), torch.arange(16, dtype=torch.int32)) for t in tables)


# --- work counts --------------------------------------------------------------------------------


def test_flops_by_hand():
    # lengths [10, 5]; query i of 3 sees L - 2 + i keys: 8 + 9 + 10 and 3 + 4 + 5 = 39 pairs
    c = case(B=2, H=4, H_KV=2, Q=3, N=10, D=16, ragged=True)
    assert decoding.flops(c, "fwd") == 4 * 4 * 16 * 39
    assert decoding.flops(case(B=1, H=2, Q=1, N=7, D=32), "fwd") == 4 * 2 * 32 * 7


@pytest.mark.parametrize("dtype,size", [(torch.bfloat16, 2), (torch.float32, 4)])
def test_min_bytes_by_hand(dtype, size):
    c = case(B=2, H=4, H_KV=2, Q=3, N=10, D=16, ragged=True, page=16)  # lengths [10, 5]; the page is free
    kv = 2 * (10 + 5) * 2 * 16
    q_and_out = 2 * 2 * 4 * 3 * 16
    assert decoding.min_bytes(c, dtype, "fwd") == (kv + q_and_out) * size + 4 * 2


# --- case checks and features -----------------------------------------------------------------------


def test_validate_case_accepts_a_good_case():
    assert decoding.validate_case(case(B=4, H=8, H_KV=2, Q=8, N=16, page=5, ragged=True)) is None


@pytest.mark.parametrize("overrides,message", [
    (dict(Q=9), "Q=9 new tokens per sequence; decoding cases take 1 to 8"),
    (dict(H=6, H_KV=4), "H=6 must be a multiple of H_KV=4"),
    (dict(B=2, N=8, Q=5, ragged=True), "every cache must hold the Q=5 new tokens; the shortest holds 4"),
    (dict(N=4, Q=5), "every cache must hold the Q=5 new tokens; the shortest holds 4"),
    (dict(page=-1), "page must be 0 (contiguous cache) or a page size in tokens, got -1"),
    (dict(page=True), "page must be 0 (contiguous cache) or a page size in tokens, got True"),
    (dict(page=1.5), "page must be 0 (contiguous cache) or a page size in tokens, got 1.5"),
    (dict(ragged=1), "ragged must be true or false, got 1"),
    (dict(D=0), "D must be a positive integer, got 0"),
    (dict(B=True), "B must be a positive integer, got True"),
    (dict(N="8"), "N must be a positive integer, got '8'"),
], ids=["Q>8", "H%H_KV", "shortest<Q-ragged", "N<Q", "page<0", "page-bool", "page-float", "ragged-int", "D=0",
        "B-bool", "N-str"])
def test_validate_case_refusals(overrides, message):
    assert decoding.validate_case(case(**overrides)) == message


@pytest.mark.parametrize("overrides,features", [
    (dict(), set()),
    (dict(B=1, ragged=True), set()),  # one sequence is never ragged
    (dict(B=2, ragged=True), {"ragged"}),
    (dict(H_KV=2), {"gqa"}),
    (dict(H_KV=1), {"gqa"}),
    (dict(page=16), {"paged"}),
    (dict(Q=2), {"multi-query"}),
    (dict(H_KV=1, page=5, Q=8, ragged=True), {"gqa", "paged", "multi-query", "ragged"}),
])
def test_required_features(overrides, features):
    assert decoding.required_features(case(**overrides)) == features


def test_triton_unsupported_reasons(impls):
    tech = registry.technique("decoding")
    triton = impls["triton-split-kv"]
    assert "head dim 96" in triton.why_not(tech, case(D=96), torch.bfloat16, "fwd")
    assert "at most 128" in triton.why_not(tech, case(H=32, H_KV=1, Q=8), torch.bfloat16, "fwd")
    assert "does not support dtype float64" in triton.why_not(tech, case(), torch.float64, "fwd")
    assert triton.why_not(tech, case(H=16, H_KV=1, Q=8, page=5, ragged=True), torch.bfloat16, "fwd") is None


# --- the registered builders, end to end --------------------------------------------------------------


@pytest.mark.parametrize("name", ["reference", "triton-split-kv", "triton-async-softmax"])
def test_builders_within_rule(impls, seed, name):
    """The harness's path: make_inputs, the builder, the closure; within the rule."""
    tech = registry.technique("decoding")
    c = case(B=3, H=8, H_KV=2, Q=3, N=45, D=32, page=5, ragged=True)
    tensors = tech.make_inputs(c, torch.bfloat16, CPU, seed).tensors
    out = impls[name].build(c, **tensors)()
    d = Decode(tensors["q"], tensors["k"], tensors["v"], tensors["cache_lens"], tensors["block_table"])
    assert_rule(out, d, f"{name} on {c.id}; {reproduce(seed)}")
