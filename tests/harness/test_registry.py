from __future__ import annotations

import pytest
import torch

from harness import registry
from harness.cases import Case
from harness.registry import Implementation, Technique


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in the test are forgotten afterwards."""
    monkeypatch.setattr(registry, "_TECHNIQUES", dict(registry._TECHNIQUES))
    monkeypatch.setattr(registry, "_IMPLEMENTATIONS", dict(registry._IMPLEMENTATIONS))


def _impl(fake, name: str) -> Implementation:
    return next(i for i in registry.implementations("fake") if i.name == name)


# -- listing -----------------------------------------------------------------------------------


def test_implementations_are_listed_reference_first_then_triton_then_peers_each_by_name(fake):
    names = [impl.name for impl in registry.implementations("fake")]
    assert names == ["reference", "good", "unwritten", "crashes", "narrow", "needs_gpu", "nondeterministic",
                     "oom", "raises", "refuses", "wrong"]
    roles = [impl.role for impl in registry.implementations("fake")]
    assert roles == sorted(roles, key=registry.ROLES.index)


def test_attention_lists_its_reference_first_and_flashsuite_triton_kernel_second():
    registry.load_all()
    impls = registry.implementations("attention")
    assert [impls[0].name, impls[1].name] == ["reference", "triton"]
    assert {i.role for i in impls[2:]} == {"peer"}


def test_implementations_of_unknown_technique_is_empty_and_technique_lookup_names_the_registered(fake):
    assert registry.implementations("nope") == []
    with pytest.raises(KeyError) as info:
        registry.technique("nope")
    message = info.value.args[0]
    assert message.startswith("unknown technique 'nope' (registered: ")
    assert "attention" in message and "fake" in message


def test_technique_names_are_sorted_and_include_plugins(fake):
    names = registry.technique_names()
    assert names == sorted(names)
    assert {"attention", "fake"} <= set(names)


def test_reference_returns_the_single_reference_implementation(fake):
    assert registry.reference("fake").name == "reference"
    assert registry.reference("fake").role == "reference"


def test_reference_refuses_a_technique_with_two_or_zero_references(fake, scratch_registry):
    registry.implementation("fake", "second-reference", role="reference", dtypes=(torch.float32,))(lambda case, x: None)
    with pytest.raises(ValueError, match="exactly one reference implementation, has 2"):
        registry.reference("fake")
    with pytest.raises(ValueError, match="has 0"):
        registry.reference("no-such-technique")


def test_summary_is_first_docstring_line_of_the_builder(fake):
    assert _impl(fake, "reference").summary == "Plain PyTorch."
    assert _impl(fake, "unwritten").summary == "Allocates its output uninitialized and never writes element 0."


def test_load_all_imports_comma_separated_plugins_and_ignores_blanks(monkeypatch, scratch_registry):
    import sys

    monkeypatch.setenv("FLASHSUITE_PLUGINS", " tests.fake_technique , ,")
    registry._TECHNIQUES.pop("fake", None)
    for key in [k for k in registry._IMPLEMENTATIONS if k[0] == "fake"]:
        del registry._IMPLEMENTATIONS[key]
    monkeypatch.delitem(sys.modules, "tests.fake_technique", raising=False)
    registry.load_all()
    assert "fake" in registry.technique_names()
    assert len(registry.implementations("fake")) == 11


# -- registering -------------------------------------------------------------------------------


def test_implementation_rejects_an_unknown_role():
    with pytest.raises(ValueError, match="role must be one of"):
        registry.implementation("fake", "x", role="kernel", dtypes=(torch.float32,))


def test_registering_another_builder_under_a_taken_name_fails_but_the_same_builder_is_idempotent(fake, scratch_registry):
    def build(case, x):
        return lambda: x

    registry.implementation("fake", "twice", role="peer", dtypes=(torch.float32,))(build)
    registry.implementation("fake", "twice", role="peer", dtypes=(torch.float32,))(build)
    with pytest.raises(ValueError, match="fake/twice is registered twice"):
        registry.implementation("fake", "twice", role="peer", dtypes=(torch.float32,))(lambda case, x: (lambda: x))


def test_registering_a_different_technique_under_a_taken_name_fails(fake, scratch_registry):
    registry.register_technique(fake.TECHNIQUE)  # the same definition again is fine
    other = Technique(name="fake", summary="another", parameters=("N",), make_inputs=fake.make_inputs,
                      flops=fake.flops, min_bytes=fake.min_bytes)
    with pytest.raises(ValueError, match="technique 'fake' is registered twice"):
        registry.register_technique(other)


# -- why_not -----------------------------------------------------------------------------------


def test_why_not_names_the_dtype_and_the_accepted_dtypes(fake):
    reason = _impl(fake, "good").why_not(fake.TECHNIQUE, Case.of(N=8), torch.float64, "fwd")
    assert reason == "good does not support dtype float64 (accepted: bfloat16, float16, float32)"


def test_why_not_reports_a_missing_backward_for_fwd_bwd_only(fake):
    wrong = _impl(fake, "wrong")
    assert wrong.why_not(fake.TECHNIQUE, Case.of(N=8), torch.float32, "fwd") is None
    assert wrong.why_not(fake.TECHNIQUE, Case.of(N=8), torch.float32, "fwd+bwd") == "wrong has no backward pass"
    assert _impl(fake, "good").why_not(fake.TECHNIQUE, Case.of(N=8), torch.float32, "fwd+bwd") is None


def test_why_not_checks_the_dtype_before_the_backward(fake):
    reason = _impl(fake, "wrong").why_not(fake.TECHNIQUE, Case.of(N=8), torch.bfloat16, "fwd+bwd")
    assert reason.startswith("wrong does not support dtype bfloat16")


def test_why_not_reports_a_feature_the_case_requires(fake):
    big = Case.of(N=fake.BIG_N)
    assert _impl(fake, "unwritten").why_not(fake.TECHNIQUE, big, torch.float32, "fwd") == "unwritten does not support big"
    assert _impl(fake, "good").why_not(fake.TECHNIQUE, big, torch.float32, "fwd") is None


def test_why_not_ends_with_the_implementations_own_unsupported_rule(fake):
    narrow = _impl(fake, "narrow")
    assert narrow.why_not(fake.TECHNIQUE, Case.of(N=64), torch.float32, "fwd") == "N=64 is above 4"
    assert narrow.why_not(fake.TECHNIQUE, Case.of(N=4), torch.float32, "fwd") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the reason given without a GPU")
def test_missing_needs_reports_no_gpu_and_none_for_an_implementation_without_needs(fake):
    assert _impl(fake, "needs_gpu").missing_needs() == "needs a CUDA GPU; none is visible"
    assert _impl(fake, "good").missing_needs() is None


def test_package_need_reports_a_missing_module():
    from harness.needs import package

    assert package("torch").check() is None
    assert package("no_such_module_xyz", "no-such-pip").check() == "needs the no-such-pip package, which is not importable"


# -- dtypes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, dtype", [
    ("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16), ("fp16", torch.float16), ("half", torch.float16),
    ("float16", torch.float16), ("fp32", torch.float32), ("float32", torch.float32), ("fp64", torch.float64),
    ("float64", torch.float64),
])
def test_parse_dtype_accepts_names_and_aliases(text, dtype):
    assert registry.parse_dtype(text) is dtype


@pytest.mark.parametrize("text", ["fp8", "float", "int32", ""])
def test_parse_dtype_rejects_unknown_names_listing_the_accepted(text):
    with pytest.raises(ValueError) as info:
        registry.parse_dtype(text)
    assert str(info.value) == (f"unknown dtype {text!r} (accepted: bfloat16, float16, float32, float64, "
                               "or bf16, fp16, fp32, fp64)")


def test_dtype_name_drops_the_torch_prefix():
    assert [registry.dtype_name(d) for d in (torch.bfloat16, torch.float16, torch.float32, torch.float64)] == \
        ["bfloat16", "float16", "float32", "float64"]


# -- cases -------------------------------------------------------------------------------------


def test_case_id_keeps_declaration_order_and_writes_booleans_lowercase():
    case = Case.of(B=4, H=16, N=4096, D=128, causal=True)
    assert case.id == "B=4,H=16,N=4096,D=128,causal=true"
    assert list(case.keys()) == ["B", "H", "N", "D", "causal"]


def test_case_json_round_trip_and_lookup():
    case = Case.of(N=7, causal=False, scale=0.5, name="x")
    again = Case.from_json(case.to_json())
    assert again == case and hash(again) == hash(case)
    assert again["scale"] == 0.5 and again.get("missing", 3) == 3
    with pytest.raises(KeyError, match="case N=7,causal=false,scale=0.5,name=x has no parameter 'D'"):
        case["D"]
