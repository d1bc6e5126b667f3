"""`bench` on bad input: exit code 2, one line on stderr starting with "error:", no traceback,
and no files left behind."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from harness import suites
from harness.results import COLUMNS, Row
from tests.harness.helpers import fake_suite

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals of a machine without a GPU")


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("error: "), err
    return lines[0]


def _refused(bench, *argv) -> str:
    code, out, err = bench(*argv)
    assert code == 2, (code, out, err)
    return _one_error_line(err)


@pytest.fixture
def results_dir(tmp_path):
    folder = tmp_path / "results"
    yield folder
    assert not folder.exists() or not any(folder.rglob("*")), "bad input must not leave files behind"


# -- bench run ---------------------------------------------------------------------------------


def test_unknown_suite(bench, results_dir):
    line = _refused(bench, "run", "nope", "--results", results_dir)
    assert line == f"error: unknown suite 'nope' (available: {', '.join(suites.available())}; or a path to a .toml file)"


def test_unknown_impl(bench, results_dir):
    line = _refused(bench, "run", "smoke", "--impl", "nope", "--results", results_dir)
    assert line.startswith("error: unknown implementation 'nope' for suite 'smoke' (available: ")
    assert "triton" in line and "sdpa-math" in line


def test_unknown_impl_among_known_ones_given_comma_separated(bench, results_dir):
    line = _refused(bench, "run", "smoke", "--impl", "triton,nope", "--impl", "reference", "--results", results_dir)
    assert line.startswith("error: unknown implementation 'nope'")


def test_unknown_dtype(bench, results_dir):
    try:
        code, _, err = bench("run", "smoke", "--dtype", "fp8", "--results", results_dir)
    except ValueError as e:
        pytest.fail(f"escaped cli.main: {e!r}")
    assert code == 2
    assert _one_error_line(err).startswith("error: unknown dtype 'fp8' (accepted: ")


def test_a_dtype_the_suite_does_not_have(bench, results_dir):
    line = _refused(bench, "run", "smoke", "--dtype", "fp64", "--results", results_dir)
    assert line == "error: suite 'smoke' has no cases in dtype fp64 (its dtypes: bfloat16, float16, float32)"


@no_gpu
def test_a_suite_that_requires_cuda_without_a_gpu(bench, results_dir):
    line = _refused(bench, "run", "attention", "--results", results_dir)
    assert line.startswith("error: suite 'attention' needs a CUDA GPU (its shapes are sized for one) and none is visible")
    assert "bench run smoke" in line


@no_gpu
def test_an_explicitly_requested_gpu_only_implementation_without_a_gpu(bench, results_dir):
    line = _refused(bench, "run", "smoke", "--impl", "sdpa-flash", "--results", results_dir)
    assert line == "error: implementation 'sdpa-flash' cannot run here: it needs a CUDA GPU; none is visible"


@no_gpu
def test_an_explicitly_requested_gpu_only_fake_implementation(bench, fake, tmp_path, results_dir):
    path = tmp_path / "fake.toml"
    path.write_text(fake_suite())
    line = _refused(bench, "run", path, "--impl", "good,needs_gpu", "--results", results_dir)
    assert line == "error: implementation 'needs_gpu' cannot run here: it needs a CUDA GPU; none is visible"


def test_an_explicitly_requested_implementation_that_supports_none_of_the_cases(bench, fake, tmp_path, results_dir):
    path = tmp_path / "fake.toml"
    path.write_text(fake_suite(n_values=(64, 128)))
    line = _refused(bench, "run", path, "--impl", "narrow", "--results", results_dir)
    assert line == "error: implementation 'narrow' supports none of the selected cases (e.g. N=64: N=64 is above 4)"


def test_an_implementation_refused_only_by_the_dtype_filter(bench, fake, tmp_path, results_dir):
    path = tmp_path / "fake.toml"
    path.write_text(fake_suite(dtypes=("float32", "bfloat16")))
    line = _refused(bench, "run", path, "--impl", "wrong", "--dtype", "bf16", "--results", results_dir)
    assert line == ("error: implementation 'wrong' supports none of the selected cases "
                    "(e.g. N=64: wrong does not support dtype bfloat16 (accepted: float32))")


def test_an_explicitly_requested_implementation_that_every_group_excludes(bench, fake, tmp_path, results_dir):
    path = tmp_path / "fake.toml"
    path.write_text(fake_suite().replace('tiers = ["quick", "full"]\n', 'tiers = ["quick", "full"]\nexclude = ["good"]\n'))
    line = _refused(bench, "run", path, "--impl", "good", "--results", results_dir)
    assert line == "error: implementation 'good' is excluded from every case of suite 'fake'"


def test_the_triton_attention_kernel_at_an_unsupported_head_dim(bench, tmp_path, results_dir):
    path = tmp_path / "d96.toml"
    path.write_text('requires = "any"\n[[group]]\ntechnique = "attention"\ndtypes = ["bfloat16"]\n'
                    "[group.grid]\nB = [1]\nH = [2]\nH_KV = [2]\nN = [32]\nD = [96]\ncausal = [false, true]\n")
    line = _refused(bench, "run", path, "--impl", "triton", "--results", results_dir)
    assert line == ("error: implementation 'triton' supports none of the selected cases (e.g. B=1,H=2,H_KV=2,N=32,"
                    "D=96,causal=false: head dim 96 is not supported (accepted: 16, 32, 64, 128, 256))")


def test_a_bad_suite_file(bench, tmp_path, results_dir):
    path = tmp_path / "bad.toml"
    path.write_text("[[group]\n")
    line = _refused(bench, "run", path, "--results", results_dir)
    assert line.startswith(f"error: suite file {path} is not valid TOML: ")


def test_resume_with_nothing_to_resume(bench, results_dir):
    line = _refused(bench, "run", "smoke", "--resume", "--results", results_dir)
    assert line == f"error: nothing to resume: no unfinished run of suite 'smoke' under {results_dir}"


def test_resume_of_a_log_that_does_not_exist(bench, tmp_path, results_dir):
    missing = tmp_path / "gone.jsonl"
    line = _refused(bench, "run", "smoke", "--resume", missing, "--results", results_dir)
    assert line == f"error: nothing to resume: {missing} does not exist"


def test_resume_with_a_new_tier_is_refused(bench, fake, suite_dir, tmp_path):
    from harness.results import RunHeader, RunLog

    suite_dir("resumable", fake_suite())
    log = RunLog.create(tmp_path / "results" / "resumable" / "cpu-interpreter" / "r.jsonl",
                        RunHeader("r", "resumable", "quick", {"impls": [], "dtypes": [], "base_seed": 1},
                                  {"interpreter": True}, {}, "r"))
    line = _refused(bench, "run", "resumable", "--resume", "--tier", "full", "--results", tmp_path / "results")
    assert line.startswith("error: --resume continues a run with its own tier and selection")
    assert log.path.exists()


# -- bench show --------------------------------------------------------------------------------


def test_show_a_missing_file(bench, tmp_path):
    line = _refused(bench, "show", tmp_path / "absent.parquet")
    assert line == f"error: {tmp_path / 'absent.parquet'}: no such file"


def test_show_a_corrupt_file(bench, tmp_path):
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(b"\x00garbage\nmore garbage\n" * 10)
    line = _refused(bench, "show", path)
    assert line.startswith(f"error: {path}: not a readable Parquet file (")


def test_show_a_corrupt_run_log(bench, tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text('{"kind": "header"\n{}\n')
    line = _refused(bench, "show", path)
    assert line == f"error: {path}: line 1 is not JSON; the log is corrupt"


def test_show_a_foreign_parquet(bench, tmp_path):
    path = tmp_path / "foreign.parquet"
    pd.DataFrame({"x": [1.0, 2.0]}).to_parquet(path)
    line = _refused(bench, "show", path)
    assert line.startswith(f"error: {path}: not a flashsuite result table (missing columns: schema_version, ")


def test_show_a_table_of_schema_version_99(bench, tmp_path):
    path = tmp_path / "v99.parquet"
    row = Row(technique="fake", impl="good", role="triton", case='{"N": 8}', case_id="N=8", dtype="float32",
              direction="fwd", schema_version=99)
    pd.DataFrame([row.to_dict()], columns=list(COLUMNS)).to_parquet(path)
    line = _refused(bench, "show", path)
    assert line == f"error: {path}: schema version 99 is not supported (this flashsuite reads version 1)"


def test_show_a_file_that_is_not_a_table(bench, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    line = _refused(bench, "show", path)
    assert line.endswith("not a result table (expected a .parquet table or a .jsonl run log)")


# -- argparse ----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, expected", [
    (["run", "smoke", "--bogus"], "error: unrecognized arguments: --bogus"),
    (["frobnicate"], "error: argument name: invalid choice: 'frobnicate'"),
    (["run", "smoke", "--tier", "medium"], "error: argument --tier: invalid choice: 'medium'"),
    (["run", "smoke", "--unit-timeout", "0"], "error: argument --unit-timeout: expected a number of seconds above 0, got '0'"),
    (["run", "smoke", "--unit-timeout", "soon"], "error: argument --unit-timeout: expected a number of seconds above 0"),
    (["run"], "error: the following arguments are required: suite"),
    ([], "error: the following arguments are required: name"),
])
def test_argparse_errors_are_one_line_and_exit_2(bench, argv, expected):
    line = _refused(bench, *argv)
    assert line.startswith(expected)
    assert line.endswith("--help`)")


# -- what works --------------------------------------------------------------------------------


def test_list_shows_every_implementation_and_why_it_is_unavailable(bench, fake, wide_console):
    code, out, err = bench("list")
    assert code == 0 and err == ""
    lines = [line for line in out.splitlines() if " fake " in f" {line} "]
    assert len(lines) == 11
    needs_gpu = next(line for line in lines if "needs_gpu" in line)
    if not torch.cuda.is_available():
        assert "no: needs a CUDA GPU; none is visible" in needs_gpu
    good = next(line for line in lines if " good " in line)
    assert "yes" in good and "backward, big" in good
    assert f"suites: {', '.join(suites.available())}" in out
