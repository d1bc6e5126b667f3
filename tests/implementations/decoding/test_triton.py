"""The Triton decoding kernel (implementations/decoding/triton_decoding.py), both variants
("split-kv": FlashDecoding; "async-softmax": FlashDecoding++ with its fallback), run in
Triton's interpreter against the independent float64 truth under the harness's rule.

The interpreter's tiling is BLOCK_N = 16 keys. Lengths below are one key (1), one short of
and one past a block (15, 17), exact multiples (16, 64) and several blocks with a remainder
(33, 77, 130); the cache always has room past the longest sequence, and every slot past a
sequence's length holds 1e4 (GARBAGE), which must not reach the output.

Regression tests for bugs these tests found: the async variant's row sum of unrounded p
(a one-key row came out v * round(p) / p), shapes the launcher did not check, and block
tables and cache lengths read as if unit-stride.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from harness.correctness import bitwise_equal, poisoned_allocations
from implementations.decoding import triton_decoding as td
from implementations.decoding.triton_decoding import CONFIGS, decode_attention
from tests.implementations.decoding._support import assert_rule, describe, make_decode, rule_verdict, truth
from tests.implementations.shared import pairwise_cases, reproduce, stub_kernel, uncovered_pairs

# NumPy's overflow / invalid-value warnings from the interpreter are expected: the unified-max
# pass overflows exp before the fallback discards it, and masked rows compute -inf - -inf.
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

VARIANTS = td.VARIANTS
BLOCK_N = CONFIGS["interpreter"].block_n

# The pairwise axes.
LAYOUTS = {"contiguous": 0, "page16": 16, "page8": 8, "page5": 5}
LENGTHS = {"130-17-1": (130, 17, 1), "15-77": (15, 77), "16-64-33": (16, 64, 33), "1-130-15": (1, 130, 15)}
SPLITS = {"splits1": 1, "splits5": 5, "splits13": 13, "heuristic": None}  # 13 > 130 / 16: empty chunks
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GQA = {"ratio1": (4, 4), "ratio4": (8, 2), "ratio8": (8, 1)}  # (H, H_KV)
QUERIES = {"Q1": 1, "Q3": 3, "Q8": 8}
AXES = {"layout": LAYOUTS, "lengths": LENGTHS, "splits": SPLITS, "dtype": DTYPES, "gqa": GQA, "Q": QUERIES}
HEAD_DIMS = (16, 32, 64)  # cycled over the cases


CASES = pairwise_cases(AXES)


def _case_id(c) -> str:
    return "-".join(c[a] for a in AXES)


def _case_inputs(seed: int, index: int, c: dict[str, str]):
    H, H_KV = GQA[c["gqa"]]
    Q = QUERIES[c["Q"]]
    lengths = [max(length, Q) for length in LENGTHS[c["lengths"]]]  # every cache holds the Q new tokens
    return make_decode(seed, lengths, H, H_KV, Q, HEAD_DIMS[index % 3], DTYPES[c["dtype"]], page=LAYOUTS[c["layout"]])


def test_interpreter_tile_is_16_keys():
    assert BLOCK_N == 16, "the lengths in this file are chosen around 16-key tiles"


def test_case_list_is_pairwise():
    assert not uncovered_pairs(CASES, AXES), f"value pairs never tested: {uncovered_pairs(CASES, AXES)}"
    assert len(CASES) <= 20, f"{len(CASES)} cases: the greedy covering array grew"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("index,case", list(enumerate(CASES)), ids=[_case_id(c) for c in CASES])
def test_within_rule(seed, index, case, variant):
    """Ragged lengths, garbage (1e4) past each, both layouts, every page size, split counts
    from one to more than the tiles: within the rule; with ordinary scores the async
    variant never falls back."""
    d = _case_inputs(seed, index, case)
    splits = SPLITS[case["splits"]]
    context = f"{variant}, {describe(d)}, num_splits={splits}; {reproduce(seed)}"
    out, fallbacks = decode_attention(*d.args, variant=variant, num_splits=splits, return_fallbacks=True)
    assert_rule(out, d, context)
    B, H_KV = d.q.shape[0], d.k.shape[2] if d.block_table is not None else d.k.shape[1]
    assert fallbacks.dtype == torch.int32 and fallbacks.shape[0] == B * H_KV, f"fallbacks {tuple(fallbacks.shape)}"
    if splits is not None:
        assert fallbacks.shape[1] == splits
    assert fallbacks.sum() == 0, f"fell back on ordinary scores: {fallbacks.tolist()}; {context}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("config", ["sm90", "other"])
def test_gpu_tilings_within_rule(seed, config, variant):
    """The GPUs' key tiles (64 on Hopper, 32 elsewhere) forced through `config`, with pages of
    8 and 5 tokens (neither divides the tile) and lengths around the tile sizes."""
    page = {"sm90": 5, "other": 8}[config]
    d = make_decode(seed, [130, 65, 31], 8, 2, 2, 32, torch.bfloat16, page=page)
    out = decode_attention(*d.args, variant=variant, num_splits=3, config=CONFIGS[config])
    assert_rule(out, d, f"{variant}, config {CONFIGS[config]}, {describe(d)}; {reproduce(seed)}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_custom_sm_scale(seed, variant):
    """sm_scale replaces 1/sqrt(D) (and the async window is in units of the scaled scores)."""
    d = make_decode(seed, [40, 17], 4, 2, 3, 32, torch.float32, page=8)
    out, fallbacks = decode_attention(*d.args, variant=variant, sm_scale=0.4, num_splits=2, return_fallbacks=True)
    assert_rule(out, d, f"{variant}, sm_scale=0.4; {reproduce(seed)}", scale=0.4)
    assert fallbacks.sum() == 0
    assert not rule_verdict(out, d)[0], "the custom scale made no difference"


@pytest.mark.parametrize("variant,dtype", [
    ("split-kv", torch.bfloat16), ("split-kv", torch.float16), ("split-kv", torch.float32),
    ("async-softmax", torch.float32), ("async-softmax", torch.bfloat16), ("async-softmax", torch.float16),
], ids=["split-kv-bf16", "split-kv-fp16", "split-kv-fp32", "async-fp32", "async-bf16", "async-fp16"])
def test_one_visible_key_is_exact(seed, variant, dtype):
    """Caches of one token: the output is that token's value. The reference gets it exactly
    (softmax of one score is 1), so the rule leaves only the floor; FlashDecoding's online
    softmax does too (p = exp(s - max) = 1), and the async variant once did not (its row sum
    took p unrounded while P @ V took it rounded to the dtype)."""
    d = make_decode(seed, [1, 1, 1], 8, 2, 1, 64, dtype)
    out = decode_attention(*d.args, variant=variant)
    assert_rule(out, d, f"{variant}, {describe(d)}; {reproduce(seed)}")


# --- garbage past the lengths, strided inputs -------------------------------------------------


@pytest.mark.parametrize("variant,page", [("split-kv", 0), ("async-softmax", 5), ("split-kv", 16)])
def test_garbage_past_length_does_not_leak(seed, variant, page):
    """The same call with the slots past each length (and the spare pages) holding random
    values, 1e4, -1e4 or NaN gives bitwise the same output."""
    outs = {}
    for garbage in (None, 1e4, -1e4, float("nan")):
        d = make_decode(seed, [77, 1, 18], 8, 2, 1, 16, torch.float16, page=page, garbage=garbage)
        outs[garbage] = decode_attention(*d.args, variant=variant, num_splits=4)
    first = outs[None]
    for garbage, out in outs.items():
        assert torch.equal(out, first), f"garbage {garbage} changed the output; {reproduce(seed)}"


@pytest.mark.parametrize("variant,layout", [("split-kv", "transposed"), ("async-softmax", "paged-sliced")])
def test_strided_views_match_contiguous(seed, variant, layout):
    """q a transposed [B, Q, H, D]; k, v a transposed [B, N, H_KV, D] cache, or pages sliced
    out of wider ones with a block table cut from a wider one: bitwise the contiguous result."""
    d = make_decode(seed, [45, 20], 8, 2, 3, 32, torch.bfloat16, page=0 if layout == "transposed" else 8)
    q = d.q.transpose(1, 2).contiguous().transpose(1, 2)
    table = d.block_table
    if layout == "transposed":
        k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (d.k, d.v))
    else:
        k, v = (torch.cat([t, torch.zeros_like(t)], dim=-1)[..., :t.shape[-1]] for t in (d.k, d.v))
        table = torch.cat([table, torch.zeros_like(table)], dim=1)[:, :table.shape[1]]
        assert not table.is_contiguous()
    assert not any(t.is_contiguous() for t in (q, k, v))
    got = decode_attention(q, k, v, d.cache_lens, table, variant=variant, num_splits=3)
    want = decode_attention(*d.args, variant=variant, num_splits=3)
    assert torch.equal(got, want), f"{layout}: results differ; {reproduce(seed)}"


# --- the async variant's fallback --------------------------------------------------------------


@pytest.mark.parametrize("dtype,q_scale", [(torch.bfloat16, 30.0), (torch.float16, 8.0), (torch.float32, 30.0)],
                         ids=["bf16", "fp16", "fp32"])
def test_async_falls_back_on_large_scores_and_stays_correct(seed, dtype, q_scale):
    """q scaled up so scaled scores leave the safe window (beyond 60 in bf16/fp32, beyond
    10 in fp16): chunks fall back, and the result is still within the rule."""
    d = make_decode(seed, [77, 17, 40], 8, 2, 3, 32, dtype, page=8)
    d = d.with_q((d.q.float() * q_scale).to(dtype))
    context = f"async-softmax, q x{q_scale}, {describe(d)}; {reproduce(seed)}"
    out, fallbacks = decode_attention(*d.args, variant="async-softmax", num_splits=3, return_fallbacks=True)
    assert fallbacks.sum() > 0, f"no chunk fell back; {context}"
    assert_rule(out, d, context)


def _chunk_is_nonempty(lengths, splits: int) -> torch.Tensor:
    """[B, splits]: the kernel's chunking (documented in the kernel): sequence b's chunk is
    ceil(ceil(L / splits) / BLOCK_N) tiles long, so late chunks of short sequences are empty."""
    rows = []
    for length in lengths:
        chunk = -(-(-(-length // splits)) // BLOCK_N) * BLOCK_N
        rows.append([s * chunk < length for s in range(splits)])
    return torch.tensor(rows, dtype=torch.int32)


@pytest.mark.parametrize("dtype,phi", [(torch.bfloat16, -100.0), (torch.float16, -100.0), (torch.float16, 100.0),
                                       (torch.float32, 100.0)], ids=["bf16-over", "fp16-over", "fp16-under", "fp32-under"])
def test_async_unified_max_far_from_the_scores_falls_back_everywhere(seed, dtype, phi):
    """A unified max 100 below the scores (exp would overflow) or 100 above (exp would
    underflow): every non-empty chunk falls back, no empty one does, and the fallback is the
    online softmax, so the output is bitwise FlashDecoding's."""
    lengths, splits = [130, 17, 50], 7
    d = make_decode(seed, lengths, 4, 2, 2, 16, dtype, page=16)
    out, fallbacks = decode_attention(*d.args, variant="async-softmax", unified_max=phi, num_splits=splits,
                                      return_fallbacks=True)
    expected = _chunk_is_nonempty(lengths, splits).repeat_interleave(2, dim=0)  # rows are (sequence, KV head)
    assert torch.equal(fallbacks, expected), f"fallbacks {fallbacks.tolist()}, expected {expected.tolist()}"
    assert torch.equal(out, decode_attention(*d.args, variant="split-kv", num_splits=splits)), reproduce(seed)
    assert_rule(out, d, f"async-softmax, unified_max={phi}, {describe(d)}; {reproduce(seed)}")


@pytest.mark.parametrize("dtype,phi", [(torch.float16, 5.0), (torch.bfloat16, -40.0), (torch.float32, 40.0)],
                         ids=["fp16", "bf16", "fp32"])
def test_async_unified_max_inside_the_window(seed, dtype, phi):
    """A unified max away from 0 but with every chunk's largest score inside the safe window:
    no fallback, the unified-max path really runs (not bitwise FlashDecoding), within the rule."""
    d = make_decode(seed, [130, 77], 4, 2, 1, 32, dtype, page=8)  # every non-empty chunk has >= 13 keys
    out, fallbacks = decode_attention(*d.args, variant="async-softmax", unified_max=phi, num_splits=4,
                                      return_fallbacks=True)
    context = f"async-softmax, unified_max={phi}, {describe(d)}; {reproduce(seed)}"
    assert fallbacks.sum() == 0, f"fell back: {fallbacks.tolist()}; {context}"
    assert not torch.equal(out, decode_attention(*d.args, variant="split-kv", num_splits=4)), context
    assert_rule(out, d, context)


def _plant_hot_key(d, b: int, kv_head: int, head: int, t: int, score: float):
    """Make token t of sequence b, KV head kv_head, a key whose scaled score with query head
    `head`'s first query is `score` (k = score * sqrt(D) * q / |q|^2)."""
    q = d.q[b, head, 0].double()
    key = score * math.sqrt(q.numel()) * q / q.dot(q)
    k = d.k.clone()
    if d.block_table is None:
        k[b, kv_head, t] = key.to(d.dtype)
    else:
        page, slot = d.slot(b, t)
        k[page, slot, kv_head] = key.to(d.dtype)
    return replace(d, k=k)


@pytest.mark.parametrize("dtype,page", [(torch.bfloat16, 0), (torch.float16, 8), (torch.float32, 5)],
                         ids=["bf16-contiguous", "fp16-page8", "fp32-page5"])
def test_async_fallback_only_where_a_chunk_leaves_the_window(seed, dtype, page):
    """One key with a scaled score of 100 in chunk 1 of (sequence 0, KV head 1): exactly
    that chunk falls back, the others keep the unified max, and the mix is within the rule."""
    lengths, splits = [77, 40], 5  # chunks of 16 keys: the hot key (token 20) is in chunk 1
    d = make_decode(seed, lengths, 8, 2, 2, 32, dtype, page=page)
    d = _plant_hot_key(d, b=0, kv_head=1, head=4, t=20, score=100.0)  # heads 4..7 read KV head 1
    out, fallbacks = decode_attention(*d.args, variant="async-softmax", num_splits=splits, return_fallbacks=True)
    expected = torch.zeros(2 * 2, splits, dtype=torch.int32)
    expected[0 * 2 + 1, 1] = 1
    assert torch.equal(fallbacks, expected), f"fallbacks {fallbacks.tolist()}; {reproduce(seed)}"
    assert_rule(out, d, f"async-softmax, mixed fallback, {describe(d)}; {reproduce(seed)}")


# --- determinism, coverage of the output ----------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_deterministic(seed, variant):
    """Two calls give the same bits (output and fallback flags), with a fallback in the mix."""
    d = make_decode(seed, [77, 40], 8, 2, 3, 32, torch.bfloat16, page=5)
    d = _plant_hot_key(d, b=0, kv_head=1, head=4, t=20, score=100.0)
    first = decode_attention(*d.args, variant=variant, num_splits=5, return_fallbacks=True)
    second = decode_attention(*d.args, variant=variant, num_splits=5, return_fallbacks=True)
    assert bitwise_equal(first, second), f"two runs differ; {reproduce(seed)}"


def test_a_kept_workspace_serves_call_after_call(seed):
    """One workspace through calls of both variants and several split counts, a fallback
    among them: each output is the fresh-buffer call's, bit for bit, and the buffer is left
    zeroed (a counter left behind would make the next call combine too early, or never)."""
    d = make_decode(seed, [77, 40], 8, 2, 3, 32, torch.bfloat16, page=5)
    d = _plant_hot_key(d, b=0, kv_head=1, head=4, t=20, score=100.0)
    workspace = torch.zeros(td.workspace_size(2, 2), dtype=torch.int32)
    for variant, splits in [("split-kv", 5), ("async-softmax", 5), ("async-softmax", 3), ("split-kv", 1)]:
        fresh = decode_attention(*d.args, variant=variant, num_splits=splits, return_fallbacks=True)
        kept = decode_attention(*d.args, variant=variant, num_splits=splits, return_fallbacks=True,
                                workspace=workspace)
        assert bitwise_equal(fresh, kept), f"{variant}, {splits} splits: the kept workspace changed the output"
        assert not workspace[:4].any(), f"{variant}, {splits} splits: arrival counters left at {workspace[:4].tolist()}"


@pytest.mark.parametrize("workspace,match", [
    (torch.zeros(2 * 2 * 6 - 1, dtype=torch.int32), r"at least 24 elements"),
    (torch.zeros(64, dtype=torch.int64), r"zeroed int32 tensor"),
])
def test_a_workspace_too_small_or_not_int32_is_refused(workspace, match):
    d = make_decode(0, [16, 9], 4, 2, 1, 32, torch.float32)
    with pytest.raises(ValueError, match=match):
        decode_attention(*d.args, num_splits=5, workspace=workspace)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_output_element_written(seed, variant):
    """With every torch.empty* NaN-filled (the output, the partials), no NaN survives, even
    with more chunks than tiles (empty chunks write a zero-weight partial)."""
    d = make_decode(seed, [33, 3], 4, 1, 3, 16, torch.float16)
    with poisoned_allocations():
        assert torch.empty(4).isnan().all(), "poisoned_allocations() did not poison torch.empty"
        out = decode_attention(*d.args, variant=variant, num_splits=6)
    assert not out.isnan().any(), f"{int(out.isnan().sum())} elements never written; {reproduce(seed)}"


def test_choose_splits():
    """The heuristic fills the GPU but never makes a chunk shorter than a tile or more than MAX_SPLITS."""
    assert td.choose_splits(4, 1 << 20, 64, 132, 4) == min(132, td.MAX_SPLITS)  # 4 x 132 programs wanted
    assert td.choose_splits(4, 4096, 64, 132, 4) == min(64, td.MAX_SPLITS)  # one tile per chunk
    assert td.choose_splits(4, 100, 64, 132, 4) == 2
    assert td.choose_splits(1000, 4096, 64, 132, 4) == 1
    assert td.choose_splits(1, 1 << 30, 64, 1000, 4) == td.MAX_SPLITS
    assert td.choose_splits(1, 1, 16, 8, 1) == 1
    # Above 16 chunks the count rounds down to a power of two (33 -> 32); below it does not (3 stays 3).
    assert td.choose_splits(8, 1 << 20, 32, 132, 2) == 32
    assert td.choose_splits(128, 1 << 20, 32, 132, 2) == 3


# --- the checks can fail ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_rule_rejects_a_dropped_last_key(seed, dtype):
    """Every query one key short (cache_lens - 1) fails the check the real call passes."""
    d = make_decode(seed, [17, 9], 4, 2, 2, 16, dtype, garbage=None)
    want = truth(d)
    for variant in VARIANTS:
        right = decode_attention(*d.args, variant=variant)
        assert rule_verdict(right, d, want)[0], f"{variant}: the right call fails; {reproduce(seed)}"
        wrong = decode_attention(d.q, d.k, d.v, d.cache_lens - 1, variant=variant)
        ok, line = rule_verdict(wrong, d, want)
        assert not ok, f"{variant}: a result missing the last key passed ({line}); {reproduce(seed)}"
        with pytest.raises(AssertionError, match="outside the tolerance rule"):
            assert_rule(wrong, d, "dropped last key", want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_rule_rejects_unified_max_without_fallback(monkeypatch, seed, dtype):
    """With the safe window widened to everything, the async variant never falls back; a
    score of 200 then overflows exp against the unified max of 0 and the rule rejects it."""
    d = make_decode(seed, [40, 17], 8, 2, 1, 32, dtype)
    d = _plant_hot_key(d, b=0, kv_head=1, head=4, t=20, score=200.0)
    monkeypatch.setitem(td.SAFE_WINDOW, dtype, (-math.inf, math.inf))
    out, fallbacks = decode_attention(*d.args, variant="async-softmax", num_splits=2, return_fallbacks=True)
    assert fallbacks.sum() == 0
    ok, line = rule_verdict(out, d)
    assert not ok, f"overflowed softmax passed ({line}); {reproduce(seed)}"
    monkeypatch.undo()
    out, fallbacks = decode_attention(*d.args, variant="async-softmax", num_splits=2, return_fallbacks=True)
    assert fallbacks.sum() == 1
    assert_rule(out, d, f"the same call with the window restored; {reproduce(seed)}")


# --- bad inputs -----------------------------------------------------------------------------------


def _t(*shape, dtype=torch.float16):
    return torch.randn(*shape).to(dtype)


LENS2 = torch.tensor([16, 9], dtype=torch.int32)


@pytest.mark.parametrize("args,kwargs,match", [
    pytest.param((_t(2, 4, 1, 32), _t(2, 2, 16, 32), _t(2, 2, 16, 32), LENS2), dict(variant="flash"),
                 r"unknown variant 'flash'", id="unknown-variant"),
    pytest.param((_t(2, 4, 32), _t(2, 2, 16, 32), _t(2, 2, 16, 32), LENS2), {}, r"expected q \[B, H, Q, D\]",
                 id="3d-q"),
    pytest.param((_t(2, 4, 1, 32), _t(2, 2, 16, 32), _t(2, 2, 17, 32), LENS2), {}, r"k, v of one 4-d shape",
                 id="k-v-shapes-differ"),
    pytest.param((_t(2, 4, 1, 32), _t(2, 3, 16, 32), _t(2, 3, 16, 32), LENS2), {}, r"H must be a multiple of H_KV",
                 id="H-not-multiple-of-H_KV"),
    pytest.param((_t(2, 4, 1, 32), _t(6, 8, 3, 32), _t(6, 8, 3, 32), LENS2, torch.zeros(2, 3, dtype=torch.int32)),
                 {}, r"H must be a multiple of H_KV", id="paged-H-not-multiple-of-H_KV"),
    pytest.param((_t(2, 4, 1, 64), _t(2, 2, 16, 32), _t(2, 2, 16, 32), LENS2), {}, r"do not match q",
                 id="kv-head-dim-not-q"),
    pytest.param((_t(2, 4, 1, 32), _t(2, 2, 16, 32, dtype=torch.bfloat16), _t(2, 2, 16, 32)), {},
                 r"must share a dtype", id="mixed-dtypes"),
    pytest.param((_t(2, 4, 1, 32, dtype=torch.float64), _t(2, 2, 16, 32, dtype=torch.float64),
                  _t(2, 2, 16, 32, dtype=torch.float64), LENS2), {}, r"dtype torch.float64 is not supported",
                 id="float64"),
    pytest.param((_t(2, 4, 1, 96), _t(2, 2, 16, 96), _t(2, 2, 16, 96), LENS2), {}, r"head dim 96 is not supported",
                 id="head-dim-96"),
    pytest.param((_t(2, 4, 1, 8), _t(2, 2, 16, 8), _t(2, 2, 16, 8), LENS2), {}, r"head dim 8 is not supported",
                 id="head-dim-8"),
    pytest.param((_t(1, 32, 8, 16), _t(1, 1, 16, 16), _t(1, 1, 16, 16), LENS2[:1]), {}, r"256 rows; at most 128",
                 id="too-many-rows-per-kv-head"),
    pytest.param((_t(2, 4, 1, 32), _t(2, 2, 16, 32), _t(2, 2, 16, 32), torch.tensor([16, 9, 3])), {},
                 r"cache_lens must have shape \(2,\)", id="cache-lens-shape"),
])
def test_bad_inputs_raise_value_error(args, kwargs, match):
    if len(args) == 3:
        args = (*args, LENS2)
    with pytest.raises(ValueError, match=match):
        decode_attention(*args, **kwargs)


@pytest.fixture
def no_launch(monkeypatch):
    """The kernel replaced by a stub that launches nothing, so an unvalidated input that
    would read out of bounds never runs."""
    return stub_kernel(monkeypatch, td, "_split_kv_kernel")


@pytest.mark.parametrize("case", ["contiguous-batch", "table-batch", "zero-splits"])
def test_unvalidated_inputs_raise_value_error(no_launch, case):
    """Inputs the launcher once accepted: a contiguous cache of another batch
    size than q (out-of-bounds reads), a block table with another number of rows than q
    has sequences, and num_splits=0 (nothing launched, the output left uninitialized)."""
    q, lens = _t(2, 4, 1, 32), LENS2
    with pytest.raises(ValueError):
        if case == "contiguous-batch":
            decode_attention(q, _t(1, 2, 16, 32), _t(1, 2, 16, 32), lens)
        elif case == "table-batch":
            decode_attention(q, _t(4, 8, 2, 32), _t(4, 8, 2, 32), lens, torch.zeros(1, 2, dtype=torch.int32))
        else:
            decode_attention(q, _t(2, 2, 16, 32), _t(2, 2, 16, 32), lens, num_splits=0)


@pytest.mark.parametrize("which", ["block_table", "cache_lens"])
def test_strided_table_and_lengths(seed, which):
    """A block table whose columns are not adjacent in memory (a transposed copy) and cache
    lengths that are a strided view: the kernel once indexed both as if their last stride were 1."""
    d = make_decode(seed, [48, 20], 4, 2, 1, 16, torch.float32, page=8)
    lens, table = d.cache_lens, d.block_table
    if which == "block_table":
        table = table.t().contiguous().t()
    else:
        lens = torch.stack([lens, torch.zeros_like(lens)], dim=1)[:, 0]
    assert torch.equal(table, d.block_table) and torch.equal(lens, d.cache_lens)
    out = decode_attention(d.q, d.k, d.v, lens, table, variant="split-kv", num_splits=2)
    assert_rule(out, d, f"strided {which}; {reproduce(seed)}")
