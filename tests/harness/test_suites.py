from __future__ import annotations

import pytest
import torch

from harness import registry, suites
from harness.errors import UsageError
from tests.harness.helpers import fake_suite

ATTENTION_GROUP = """
[[group]]
technique = "attention"
dtypes = ["bfloat16"]
directions = ["fwd"]
[group.grid]
{grid}
"""
ATTENTION_GRID = "B = [1]\nH = [2]\nH_KV = [2]\nN = [16]\nD = [16]\ncausal = [false]"


@pytest.fixture
def write(tmp_path):
    def write(text: str, name: str = "custom"):
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        return path

    return write


def _load_error(path, tier="quick") -> str:
    with pytest.raises(UsageError) as info:
        suites.load(str(path), tier)
    return str(info.value)


# -- expansion ---------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_in_parameter_order_with_dtypes_and_directions_innermost(write):
    path = write('requires = "any"\n' + ATTENTION_GROUP.format(grid=(
        # keys deliberately out of the technique's order, one given as a scalar
        "causal = [false, true]\nD = 16\nN = [8, 16]\nH_KV = [2]\nH = [2]\nB = [1, 2]"
    )).replace('dtypes = ["bfloat16"]', 'dtypes = ["bfloat16", "fp32"]').replace(
        'directions = ["fwd"]', 'directions = ["fwd", "fwd+bwd"]'))
    suite = suites.load(str(path), "quick")
    ids = []
    for unit in suite.units:
        if unit.case.id not in ids:
            ids.append(unit.case.id)
    assert ids == [f"B={b},H=2,H_KV=2,N={n},D=16,causal={c}"
                   for b in (1, 2) for n in (8, 16) for c in ("false", "true")]
    first_case = [(u.dtype, u.direction) for u in suite.units[:4]]
    assert first_case == [(torch.bfloat16, "fwd"), (torch.bfloat16, "fwd+bwd"),
                          (torch.float32, "fwd"), (torch.float32, "fwd+bwd")]
    assert len(suite.units) == 8 * 2 * 2
    assert suite.name == "custom" and suite.requires == "any" and suite.techniques == ["attention"]


def test_defaults_and_per_group_overrides_of_seeds_and_checks(write, fake):
    text = fake_suite(n_values=(1, 2), seeds=5).replace('requires = "any"\n', 'requires = "any"\nchecks = ["repeat"]\n')
    text += ('\n[[group]]\ntechnique = "fake"\nseeds = 1\nchecks = []\n[group.grid]\nN = [3]\n')
    suite = suites.load(str(write(text)), "quick")
    assert [(u.case["N"], u.seeds, u.checks) for u in suite.units] == [(1, 5, ("repeat",)), (2, 5, ("repeat",)),
                                                                       (3, 1, ())]
    # a group with no dtypes or directions: bfloat16, forward
    assert (suite.units[2].dtype, suite.units[2].direction) == (torch.bfloat16, "fwd")


def test_suite_defaults_are_three_seeds_both_checks_and_requires_any(write, fake):
    suite = suites.load(str(write('[[group]]\ntechnique = "fake"\n[group.grid]\nN = [3]\n')), "full")
    assert suite.requires == "any"
    assert [(u.seeds, u.checks) for u in suite.units] == [(3, ("repeat", "fp32"))]


def test_quick_tier_takes_only_the_groups_listing_it(write, fake):
    text = fake_suite(n_values=(1,)) + '\n[[group]]\ntechnique = "fake"\ntiers = ["full"]\n[group.grid]\nN = [2, 3]\n'
    quick = suites.load(str(write(text)), "quick")
    full = suites.load(str(write(text)), "full")
    assert [u.case["N"] for u in quick.units] == [1]
    assert [u.case["N"] for u in full.units] == [1, 2, 3]


@pytest.mark.parametrize("name", suites.available())
def test_every_shipped_suite_has_a_quick_tier_that_is_a_nonempty_subset_of_full(name):
    quick = suites.load(name, "quick")
    full = suites.load(name, "full")
    assert quick.units
    assert set(quick.units) <= set(full.units)
    assert len(set(full.units)) == len(full.units), "a unit is listed twice"


def test_shipped_suites_are_found_by_name_and_the_attention_suite_requires_cuda():
    assert {"attention", "smoke"} <= set(suites.available())
    assert suites.load("attention", "quick").requires == "cuda"
    assert suites.load("smoke", "quick").requires == "any"
    assert len(suites.load("attention", "full").units) > len(suites.load("attention", "quick").units)


# -- errors ------------------------------------------------------------------------------------


def test_unknown_suite_name_lists_the_available_suites():
    message = _load_error("nope")
    assert message == (f"unknown suite 'nope' (available: {', '.join(suites.available())}; "
                       "or a path to a .toml file)")
    assert "attention" in message and "smoke" in message


def test_missing_suite_file_is_reported(tmp_path):
    assert _load_error(tmp_path / "absent.toml") == f"suite file {tmp_path / 'absent.toml'} does not exist"


def test_unknown_tier_is_refused(write, fake):
    assert _load_error(write(fake_suite()), tier="medium") == "unknown tier 'medium' (accepted: quick, full)"


def test_invalid_toml_is_reported_with_the_file(write):
    path = write("[[group]\ntechnique = ")
    message = _load_error(path)
    assert message.startswith(f"suite file {path} is not valid TOML: ")
    assert "\n" not in message


def test_unknown_technique_is_reported_with_the_group(write, fake):
    message = _load_error(write('[[group]]\ntechnique = "nope"\n[group.grid]\nN = [1]\n'))
    assert message.startswith("suite custom, group 1: unknown technique 'nope' (registered: ")


def test_group_without_technique_is_reported(write):
    assert "group 1: unknown technique None" in _load_error(write('[[group]]\n[group.grid]\nN = [1]\n'))


def test_missing_grid_parameter_is_named(write):
    grid = ATTENTION_GRID.replace("D = [16]\n", "")
    message = _load_error(write(ATTENTION_GROUP.format(grid=grid)))
    assert message == ("suite custom, group 1: grid must set exactly attention's parameters B, H, H_KV, N, D, causal; "
                       "missing D")


def test_extra_grid_parameter_is_named(write):
    message = _load_error(write(ATTENTION_GROUP.format(grid=ATTENTION_GRID + "\nQ = [3]")))
    assert message.endswith("grid must set exactly attention's parameters B, H, H_KV, N, D, causal; unknown Q")


def test_missing_and_extra_grid_parameters_are_both_named_in_the_second_group(write, fake):
    text = fake_suite() + '\n[[group]]\ntechnique = "fake"\n[group.grid]\nM = [3]\n'
    assert _load_error(write(text)) == "suite custom, group 2: grid must set exactly fake's parameters N; missing N; unknown M"


@pytest.mark.parametrize("direction", ["bwd", "fwd + bwd", "FWD"])
def test_bad_direction_is_refused_listing_the_accepted(write, fake, direction):
    message = _load_error(write(fake_suite(directions=("fwd", direction))))
    assert message == f"suite custom, group 1: direction {direction!r} not offered by fake (accepted: fwd, fwd+bwd)"


def test_unknown_dtype_in_a_group_is_refused(write, fake):
    message = _load_error(write(fake_suite(dtypes=("float32", "fp8"))))
    assert message.startswith("suite custom, group 1: unknown dtype 'fp8' (accepted: ")


def test_unknown_tier_in_a_group_is_refused(write, fake):
    message = _load_error(write(fake_suite().replace('tiers = ["quick", "full"]', 'tiers = ["quick", "nightly"]')))
    assert message.startswith("suite custom, group 1: tiers must be among quick, full")


def test_a_case_the_technique_rejects_is_refused_with_its_reason(write, fake):
    message = _load_error(write(fake_suite(n_values=(4, 0))))
    assert message == "suite custom, group 1: case N=0: N must be a positive integer, got 0"


@pytest.mark.parametrize("line, expected", [
    ('requires = "gpu"', "suite custom: requires must be 'cuda' or 'any', got 'gpu'"),
    ("seeds = 0", "suite custom: seeds must be a positive integer, got 0"),
    ('seeds = "3"', "suite custom: seeds must be a positive integer, got '3'"),
    ("seeds = true", "suite custom: seeds must be a positive integer, got True"),
    ('checks = ["repeat", "speed"]', "suite custom: unknown checks ['speed'] (accepted: repeat, fp32)"),
])
def test_bad_top_level_settings_are_refused(write, fake, line, expected):
    text = fake_suite().replace('requires = "any"\nseeds = 2\n', line + "\n")
    assert _load_error(write(text)) == expected


def test_exclude_of_an_unknown_implementation_is_refused(write, fake):
    text = fake_suite().replace('tiers = ["quick", "full"]\n', 'tiers = ["quick", "full"]\nexclude = ["good", "nope"]\n')
    message = _load_error(write(text))
    assert message.startswith("suite custom, group 1: exclude names unknown implementation 'nope' (available: ")
    assert "narrow" in message


def test_a_suite_without_groups_is_refused(write):
    assert _load_error(write('description = "empty"\n')) == "suite custom: no [[group]] of cases"


def test_group_level_seeds_are_validated_like_the_top_level(write, fake):
    text = fake_suite().replace('tiers = ["quick", "full"]\n', 'tiers = ["quick", "full"]\nseeds = 0\n')
    assert "seeds must be a positive integer" in _load_error(write(text))


def test_group_level_checks_are_validated_like_the_top_level(write, fake):
    text = fake_suite().replace('tiers = ["quick", "full"]\n', 'tiers = ["quick", "full"]\nchecks = ["repaet"]\n')
    assert "unknown checks" in _load_error(write(text))


# -- timing ------------------------------------------------------------------------------------


def test_timing_defaults_to_events_and_a_group_may_ask_for_cuda_graphs(write, fake):
    text = fake_suite(n_values=(1,)).replace('seeds = 2\n', 'seeds = 2\ntiming = "cuda-graph"\n')
    text += '\n[[group]]\ntechnique = "fake"\ntiming = "events"\n[group.grid]\nN = [2]\n'
    suite = suites.load(str(write(text)), "quick")
    assert [(u.case["N"], u.timing) for u in suite.units] == [(1, "cuda-graph"), (2, "events")]
    assert suites.load(str(write(fake_suite())), "quick").units[0].timing == "events"


def test_unknown_timing_is_refused_listing_the_accepted(write, fake):
    text = fake_suite().replace('seeds = 2\n', 'seeds = 2\ntiming = "graphs"\n')
    assert _load_error(write(text)) == "suite custom: unknown timing 'graphs' (accepted: events, cuda-graph)"


def test_cuda_graph_timing_of_a_backward_is_refused(write, fake):
    text = fake_suite(directions=("fwd", "fwd+bwd")).replace('tiers = ["quick", "full"]\n',
                                                             'tiers = ["quick", "full"]\ntiming = "cuda-graph"\n')
    assert "timing 'cuda-graph' times forward passes only" in _load_error(write(text))


@pytest.mark.parametrize("name", suites.available())
def test_every_shipped_suite_plans_with_each_techniques_own_implementations(name):
    """Implementation names repeat across techniques ("reference", "triton"): planning a
    suite of several techniques must ask each unit's own technique's implementation (it once
    asked rnn's triton about an attention case and raised)."""
    from harness.runner import plan

    full = suites.load(name, "full")
    planned = plan(full)
    assert planned
    for unit in planned:
        names = [impl.name for impl in registry.implementations(unit.unit.technique)]
        assert set(unit.impls) <= set(names)
    if len(full.techniques) > 1:
        assert plan(full, impls=("reference",))
