"""The peers registered beside the decoding kernels (implementations/decoding/peers.py).
Their libraries need CUDA, so on the CPU this checks what they are handed: SDPA's mask for
ragged lengths and several new queries (run through SDPA's math path, which the CPU has),
and the page lists flashinfer's wrapper is planned with (against a stand-in module)."""

from __future__ import annotations

import sys
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

from harness import registry
from harness.cases import Case
from implementations.decoding import peers
from tests.implementations.decoding._support import assert_rule, make_decode
from tests.implementations.shared import reproduce


def _case(B: int, H: int, H_KV: int, Q: int, N: int, D: int, page: int = 0, ragged: bool = True) -> Case:
    values = dict(B=B, H=H, H_KV=H_KV, Q=Q, N=N, D=D, page=page, ragged=ragged)
    return Case(tuple(values.items()))


@pytest.mark.parametrize("Q", [1, 3])
def test_sdpa_with_the_peers_mask_matches_the_truth(seed, Q):
    """Ragged lengths, GQA 4:1, one or three new queries: SDPA given the peers' mask (math
    path, float64 on the CPU) is the decoding attention."""
    lengths, N = [29, 17, 40], 43
    d = make_decode(seed, lengths, 8, 2, Q, 32, torch.float64, capacity=N)
    mask = peers._mask(_case(3, 8, 2, Q, N, 32), d.cache_lens, d.q.device)
    assert mask is not None and mask.shape == (3, 1, Q, N)
    out = F.scaled_dot_product_attention(d.q, d.k, d.v, attn_mask=mask, enable_gqa=True)
    assert_rule(out, d, f"SDPA with the peers' mask, Q={Q}; {reproduce(seed)}")


def test_no_mask_when_every_sequence_fills_the_cache_with_one_query():
    lens = torch.tensor([64, 64], dtype=torch.int32)
    assert peers._mask(_case(2, 4, 4, 1, 64, 16, ragged=False), lens, lens.device) is None
    assert peers._mask(_case(2, 4, 4, 2, 64, 16, ragged=False), lens, lens.device) is not None


class _FakeWrapper:
    planned: dict = {}

    def __init__(self, workspace, layout):
        _FakeWrapper.planned = {"layout": layout}

    def plan(self, indptr, indices, last_page_len, heads, kv_heads, head_dim, page_size, **kwargs):
        _FakeWrapper.planned.update(indptr=indptr.tolist(), indices=indices.tolist(),
                                    last_page_len=last_page_len.tolist(), page_size=page_size,
                                    heads=(heads, kv_heads, head_dim))

    def run(self, q, kv):
        return torch.zeros_like(q)


@pytest.fixture
def fake_flashinfer(monkeypatch):
    module = ModuleType("flashinfer")
    module.BatchDecodeWithPagedKVCacheWrapper = _FakeWrapper
    monkeypatch.setitem(sys.modules, "flashinfer", module)
    return _FakeWrapper


def test_flashinfer_is_planned_with_each_sequences_pages(fake_flashinfer):
    """Sequences of 20, 8 and 17 tokens in pages of 8: 3, 1 and 3 pages, the last ones
    holding 4, 8 and 1 tokens; the pages are the table's, in order."""
    d = make_decode(1, [20, 8, 17], 4, 2, 1, 16, torch.float16, page=8, capacity=24)
    out = peers.build_flashinfer(_case(3, 4, 2, 1, 24, 16, page=8), *d.args)()
    table = d.block_table.tolist()
    assert fake_flashinfer.planned == {
        "layout": "NHD", "indptr": [0, 3, 4, 7], "indices": table[0][:3] + table[1][:1] + table[2][:3],
        "last_page_len": [4, 8, 1], "page_size": 8, "heads": (4, 2, 16)}
    assert out.shape == d.q.shape


def test_flashinfer_reads_a_contiguous_cache_as_one_page_per_sequence(fake_flashinfer):
    d = make_decode(1, [20, 11], 4, 4, 1, 16, torch.float16, capacity=24)
    peers.build_flashinfer(_case(2, 4, 4, 1, 24, 16), *d.args)
    assert fake_flashinfer.planned == {"layout": "HND", "indptr": [0, 1, 2], "indices": [0, 1],
                                       "last_page_len": [20, 11], "page_size": 24, "heads": (4, 4, 16)}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what is reported on a machine without CUDA")
@pytest.mark.parametrize("name", ["sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-math", "flashinfer"])
def test_peers_say_what_they_need_on_a_cpu(name):
    registry.load_all()
    impl = {i.name: i for i in registry.implementations("decoding")}[name]
    assert impl.role == "peer" and "CUDA" in impl.missing_needs()
