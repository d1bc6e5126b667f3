"""End to end: `bench run` on the fake technique, in this process and in worker processes,
and `--resume` after an interruption."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness import registry, report, suites
from harness.errors import UsageError
from harness.results import COLUMNS, RunLog, read_table
from harness.runner import Runner, RunOptions, plan
from tests.harness.helpers import fake_suite

ORDER = ["reference", "good", "unwritten", "crashes", "narrow", "needs_gpu", "nondeterministic", "oom", "raises",
         "refuses", "wrong"]
FAILED = ("incorrect", "error", "oom", "crashed", "timeout")

# N=64: "oom" runs out of memory, "crashes" is clean
FWD_FP32_N64 = {
    "reference": "ok", "good": "ok", "unwritten": "incorrect", "crashes": "ok", "narrow": "unsupported",
    "needs_gpu": "unavailable", "nondeterministic": "ok", "oom": "oom", "raises": "error",
    "refuses": "unsupported", "wrong": "incorrect",
}
FWD_BWD_FP32_N64 = {name: "unsupported" for name in ORDER} | {"reference": "ok", "good": "ok",
                                                              "needs_gpu": "unavailable"}
FWD_BF16_N64 = FWD_FP32_N64 | {"nondeterministic": "unsupported", "wrong": "unsupported"}
# N=13: "crashes" kills its process, "oom" is clean
FWD_FP32_N13 = FWD_FP32_N64 | {"crashes": "crashed", "oom": "ok"}

IN_PROCESS_SUITE = fake_suite(n_values=(64,), dtypes=("float32",), directions=("fwd", "fwd+bwd")) + """
[[group]]
technique = "fake"
dtypes = ["bfloat16"]
directions = ["fwd"]
[group.grid]
N = [64]
"""


def _statuses(frame: pd.DataFrame, case_id: str, dtype: str, direction: str) -> dict[str, str]:
    unit = frame[(frame.case_id == case_id) & (frame.dtype == dtype) & (frame.direction == direction)]
    assert list(unit.impl) == ORDER, "rows of a unit come in registry order, every implementation once"
    return dict(zip(unit.impl, unit.status))


def _only_table(results_dir: Path, suite: str) -> Path:
    tables = list((results_dir / suite / "cpu-interpreter").glob("*.parquet"))
    assert len(tables) == 1, tables
    assert not list(results_dir.rglob("*.jsonl")), "the run log is removed once the table is written"
    return tables[0]


GIT_SHA = "0123456789ab"


@pytest.fixture(scope="module")
def in_process_run(tmp_path_factory):
    """One in-process run of IN_PROCESS_SUITE (module-scoped: it is read by several tests):
    (exit code, what the console printed, what went to stdout, the table's path, the table)."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("in_process")
    try:
        from rich.console import Console

        from harness import cli

        mp.setenv("FLASHSUITE_PLUGINS", "tests.fake_technique")
        mp.setenv("FLASHSUITE_GIT_SHA", GIT_SHA)
        mp.setenv("FLASHSUITE_GIT_DIRTY", "0")
        mp.setattr(suites, "SUITES_DIR", tmp / "suites")
        console = Console(width=400, color_system=None, record=True, file=io.StringIO())
        mp.setattr(cli, "console", console)
        (tmp / "suites").mkdir()
        (tmp / "suites" / "fakesuite.toml").write_text(IN_PROCESS_SUITE)
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code = cli.main(["run", "fakesuite", "--no-isolate", "--results", str(tmp / "results")])
    finally:
        mp.undo()
    table = _only_table(tmp / "results", "fakesuite")
    return code, console.export_text(), stdout.getvalue(), table, read_table(table)


def test_a_run_with_failed_rows_exits_one_and_reports_the_table(in_process_run):
    code, output, _, table, frame = in_process_run
    assert code == 1
    assert f"wrote {table} (33 rows, 7 failed)" in output


def test_in_process_run_off_a_terminal_prints_one_line_per_row(in_process_run):
    *_, stdout, _, frame = in_process_run
    lines = [line for line in stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == [f"[{i}/33" for i in range(1, 34)]
    assert lines[0].startswith("[1/33] fake N=64 float32 fwd reference: ok ")
    assert any(re.match(r"\[\d+/33\] fake N=64 float32 fwd raises: error \(.* s\) RuntimeError: fake failure", line)
               for line in lines)


def test_in_process_run_gives_each_implementation_its_expected_status(in_process_run):
    *_, frame = in_process_run
    assert len(frame) == 3 * len(ORDER)
    assert _statuses(frame, "N=64", "float32", "fwd") == FWD_FP32_N64
    assert _statuses(frame, "N=64", "float32", "fwd+bwd") == FWD_BWD_FP32_N64
    assert _statuses(frame, "N=64", "bfloat16", "fwd") == FWD_BF16_N64


def test_in_process_run_gives_reasons_for_what_did_not_run(in_process_run):
    *_, frame = in_process_run
    fwd = frame[(frame.dtype == "float32") & (frame.direction == "fwd")].set_index("impl")
    assert fwd.reason["raises"] == "RuntimeError: fake failure in the closure"
    assert fwd.reason["oom"] == "fake: CUDA out of memory. Tried to allocate 1 PiB"
    assert fwd.reason["refuses"] == "fake refuses N=64"
    assert fwd.reason["narrow"] == "N=64 is above 4"
    assert fwd.reason["needs_gpu"] == "needs a CUDA GPU; none is visible"
    assert fwd.reason["wrong"].startswith("out: rel_err ")
    assert fwd.reason["wrong"].endswith("1 failing output(s) over 2 seeds; not timed") or \
        fwd.reason["wrong"].endswith("2 failing output(s) over 2 seeds; not timed")
    bwd = frame[frame.direction == "fwd+bwd"].set_index("impl")
    assert bwd.reason["wrong"] == "wrong has no backward pass"
    bf16 = frame[frame.dtype == "bfloat16"].set_index("impl")
    assert bf16.reason["wrong"].startswith("wrong does not support dtype bfloat16")


def test_incorrect_rows_carry_their_errors_and_are_not_timed(in_process_run):
    *_, frame = in_process_run
    fwd = frame[(frame.dtype == "float32") & (frame.direction == "fwd")].set_index("impl")
    for name in ("wrong", "unwritten"):
        row = fwd.loc[name]
        assert row.correct == False  # noqa: E712  (a numpy bool)
        assert pd.isna(row.median_ms) and pd.isna(row.n_samples) and len(row.samples_ms) == 0
        assert row.n_seeds == 2
    assert math.isnan(fwd.rel_err["unwritten"]), "the unwritten element reads NaN"
    assert 1e-4 < fwd.rel_err["wrong"] < 1e-2
    assert fwd.max_abs_err["wrong"] > 0.01
    assert json.loads(fwd.errors["wrong"])["out"]["max_abs_err"] == pytest.approx(fwd.max_abs_err["wrong"])


def test_correct_rows_are_timed_in_wall_clock_and_not_performance_figures(in_process_run):
    *_, frame = in_process_run
    ok = frame[frame.status == "ok"]
    assert len(ok) == 4 + 2 + 3  # fwd fp32: reference, good, crashes, nondeterministic; fwd+bwd: the first two;
    #                              bf16: the first three
    for _, row in ok.iterrows():
        samples = list(row.samples_ms)
        assert 3 <= row.n_samples == len(samples) <= 5
        assert row.median_ms == pytest.approx(statistics.median(samples))
        assert row.p10_ms <= row.median_ms <= row.p90_ms
        assert row.timing_mode == "wall-clock" and not row.is_performance_figure
        assert pd.isna(row.tflops) and pd.isna(row.gbps) and pd.isna(row.frac_of_peak)
        assert row.correct == True  # noqa: E712
        assert row.n_seeds == 2
        assert row.rel_err <= 2 * row.ref_rel_err + 1e-5


def test_work_counts_come_from_the_technique(in_process_run, fake):
    *_, frame = in_process_run
    ok = frame[frame.status == "ok"]
    for _, row in ok.iterrows():
        dtype = registry.parse_dtype(row["dtype"])  # (row.dtype would be the Series' own dtype)
        assert row.flops == fake.flops(_case(64), row.direction)
        assert row.min_bytes == fake.min_bytes(_case(64), dtype, row.direction)
    assert set(ok[ok.direction == "fwd"].flops) == {128.0}
    assert set(ok[ok.direction == "fwd+bwd"].flops) == {192.0}


def _case(n):
    from harness.cases import Case

    return Case.of(N=n)


def test_determinism_is_checked_bitwise(in_process_run):
    *_, frame = in_process_run
    fwd = frame[(frame.dtype == "float32") & (frame.direction == "fwd")].set_index("impl")
    assert fwd.bitwise_repeatable["good"] == True  # noqa: E712
    assert fwd.bitwise_repeatable["reference"] == True  # noqa: E712
    assert fwd.bitwise_repeatable["nondeterministic"] == False  # noqa: E712
    assert fwd.status["nondeterministic"] == "ok"
    bwd = frame[frame.direction == "fwd+bwd"].set_index("impl")
    assert bwd.bitwise_repeatable["good"] == True  # noqa: E712


def test_fp32_gap_is_measured_for_low_precision_only(in_process_run):
    *_, frame = in_process_run
    good = frame[frame.impl == "good"].set_index(["dtype", "direction"])
    bf16 = good.loc[("bfloat16", "fwd")]
    assert bf16.rel_err_fp32 < 1e-6 < bf16.rel_err
    assert bf16.precision_gap == pytest.approx(bf16.rel_err - bf16.rel_err_fp32)
    assert pd.isna(good.loc[("float32", "fwd")].rel_err_fp32)


def test_every_row_carries_the_runs_provenance(in_process_run):
    *_, table, frame = in_process_run
    assert list(frame.columns) == list(COLUMNS)
    assert frame.run_id.nunique() == 1 and table.stem == frame.run_id.iloc[0]
    assert frame.run_id.iloc[0].endswith(f"_{GIT_SHA}")
    assert set(frame.git_sha) == {GIT_SHA} and set(frame.git_dirty) == {False}
    measured = frame[frame.status.isin(["ok", "incorrect", "error", "oom"])]
    assert (measured.elapsed_s >= 0).all() and measured.elapsed_s.notna().all()
    assert set(frame.suite) == {"fakesuite"} and set(frame.tier) == {"quick"}
    assert set(frame.device) == {"cpu-interpreter"} and set(frame.schema_version) == {1}
    assert (frame.timestamp != "").all() and (frame.impl_code_hash != "").all()
    sidecar = json.loads(table.with_suffix(".json").read_text())
    assert sidecar["rows"] == 33 and sidecar["suite"] == "fakesuite"
    assert sidecar["environment"]["interpreter"] is True
    assert isinstance(sidecar["selection"]["base_seed"], int)


def test_bench_show_prints_the_table_and_markdown(in_process_run, bench, wide_console):
    *_, table, frame = in_process_run
    code, out, err = bench("show", table)
    assert code == 0 and err == ""
    assert "nondeterministic" in out and "differs" in out
    assert "not run here: needs_gpu: needs a CUDA GPU; none is visible" in out
    code, out, err = bench("show", table, "--markdown")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("| technique | case | dtype | dir | impl | status |")
    assert len(lines) == 2 + len(frame[frame.status != "unavailable"])


def test_bench_show_into_a_pipe_is_not_folded(in_process_run):
    """Off a terminal (a CI log, a GPU machine's pipe; COLUMNS unset) the table takes the width
    its columns need: rich's default of 80 folded each cell to one or two characters."""
    *_, table, frame = in_process_run
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    shown = subprocess.run([sys.executable, "-m", "harness.cli", "show", str(table)], capture_output=True,
                           text=True, env=env, check=True).stdout
    header = next(line for line in shown.splitlines() if "technique" in line)
    assert "median ms" in header and "p10-p90 ms" in header, header
    first = report.summarize(frame).iloc[0]
    assert any(first.case in line and first.impl in line for line in shown.splitlines()), shown


# -- process isolation -------------------------------------------------------------------------


def test_isolated_run_records_a_crash_and_measures_the_rest(fake, suite_dir, tmp_path, bench, wide_console):
    suite_dir("crashy", fake_suite(n_values=(fake.CRASH_N, 64)))
    code, out, err = bench("run", "crashy", "--results", tmp_path / "results")
    assert code == 1, err  # the crash is a failed row
    frame = read_table(_only_table(tmp_path / "results", "crashy"))
    assert len(frame) == 2 * len(ORDER)
    assert _statuses(frame, "N=13", "float32", "fwd") == FWD_FP32_N13
    assert _statuses(frame, "N=64", "float32", "fwd") == FWD_FP32_N64
    crashed = frame[frame.status == "crashed"].iloc[0]
    assert (crashed.impl, crashed.case_id) == ("crashes", "N=13")
    assert crashed.reason == "the worker process was killed by SIGSEGV"
    after = frame[(frame.case_id == "N=13") & frame.impl.isin(ORDER[ORDER.index("crashes") + 1:])]
    assert (after.status == "ok").sum() == 2 and after.median_ms.notna().sum() == 2  # nondeterministic, oom
    assert re.search(r"^\[\d+/22\] fake N=13 float32 fwd crashes: crashed .*the worker process was killed by SIGSEGV$",
                     out, re.MULTILINE), out


def test_an_implementation_past_the_unit_timeout_is_a_timeout_row_and_the_run_goes_on(fake, suite_dir, tmp_path, bench,
                                                                                       wide_console):
    suite_dir("hangs", fake_suite(n_values=(fake.HANG_N,)))
    started = time.monotonic()
    code, out, err = bench("run", "hangs", "--results", tmp_path / "results", "--impl", "reference,crashes,oom",
                           "--unit-timeout", "10")
    assert code == 1, err  # the timeout is a failed row
    assert time.monotonic() - started < 120
    frame = read_table(_only_table(tmp_path / "results", "hangs"))
    statuses = dict(zip(frame.impl, frame.status))
    assert statuses == {"reference": "ok", "crashes": "timeout", "oom": "ok"}, statuses
    assert frame[frame.impl == "crashes"].iloc[0].reason == "no result within 10 s"


# -- resume ------------------------------------------------------------------------------------

RESUME_SUITE = fake_suite(n_values=(8, 16), dtypes=("float32",))
RESUME_IMPLS = ("reference", "good", "nondeterministic", "wrong")


@pytest.fixture
def pinned_revision(monkeypatch):
    """The same code revision for the interrupted run and its resume, whatever happens to the
    checkout meanwhile (a resume across revisions is refused)."""
    monkeypatch.setenv("FLASHSUITE_GIT_SHA", GIT_SHA)
    monkeypatch.setenv("FLASHSUITE_GIT_DIRTY", "0")


def _interrupted_run(results_dir: Path, suite: str, after_rows: int) -> Path:
    def on_row(row, done, total):
        if done == after_rows:
            raise KeyboardInterrupt

    options = RunOptions(suite=suite, impls=RESUME_IMPLS, results_dir=results_dir, isolate=False)
    with pytest.raises(KeyboardInterrupt):
        Runner(options, on_row=on_row).run()
    logs = list(results_dir.rglob("*.jsonl"))
    assert len(logs) == 1 and not list(results_dir.rglob("*.parquet"))
    return logs[0]


def test_resume_finishes_an_interrupted_run_keeping_its_rows(fake, suite_dir, pinned_revision, tmp_path, bench,
                                                            wide_console):
    suite_dir("resumable", RESUME_SUITE)
    results_dir = tmp_path / "results"
    log = _interrupted_run(results_dir, "resumable", after_rows=5)
    header, before = RunLog(log).read()
    assert len(before) == 5

    # a resume keeps the run's own selection and refuses a new one
    code, _, err = bench("run", "resumable", "--resume", "--impl", "good", "--results", results_dir)
    assert code == 2 and err.startswith("error: --resume continues a run with its own tier and selection")

    code, out, err = bench("run", "resumable", "--resume", "--no-isolate", "--results", results_dir)
    assert code == 1, err  # the run includes the `wrong` implementation: its rows fail
    table = _only_table(results_dir, "resumable")
    assert table.stem == log.stem == header.run_id
    frame = read_table(table)
    keys = list(zip(frame.technique, frame.impl, frame.case_id, frame.dtype, frame.direction))
    expected = {("fake", impl, f"N={n}", "float32", "fwd") for impl in RESUME_IMPLS for n in (8, 16)}
    assert len(keys) == len(set(keys)) == 8 and set(keys) == expected
    assert frame.run_id.nunique() == 1
    for row in before:
        kept = frame[(frame.impl == row.impl) & (frame.case_id == row.case_id)].iloc[0]
        assert kept.timestamp == row.timestamp
        assert kept.status == row.status and kept.reason == row.reason
        assert list(kept.samples_ms) == row.samples_ms
        if row.median_ms is not None:
            assert kept.median_ms == row.median_ms
    statuses = dict(zip(zip(frame.impl, frame.case_id), frame.status))
    assert statuses[("wrong", "N=16")] == "incorrect" and statuses[("good", "N=16")] == "ok"


def test_close_writes_an_unfinished_runs_table_naming_the_rows_it_lacks(fake, suite_dir, pinned_revision, tmp_path,
                                                                       bench, wide_console):
    suite_dir("resumable", RESUME_SUITE)
    log = _interrupted_run(tmp_path / "results", "resumable", after_rows=3)
    _, before = RunLog(log).read()
    code, out, err = bench("close", log)
    assert code == 0, err
    table = log.with_suffix(".parquet")
    assert table.exists() and not log.exists() and f"wrote {table} (5 planned rows not measured)" in out
    frame = read_table(table)
    assert list(frame.impl) == [row.impl for row in before] and list(frame.timestamp) == [r.timestamp for r in before]
    closed = json.loads(table.with_suffix(".json").read_text())["closed_early"]
    measured = {(r.impl, r.case_id) for r in before}
    expected = sorted(f"fake {impl} N={n} float32 fwd" for impl in RESUME_IMPLS for n in (8, 16)
                      if (impl, f"N={n}") not in measured)
    assert closed["measured"] == 3 and closed["planned"] == 8 and sorted(closed["not_measured"]) == expected
    assert all(f"not measured: {key}" in out for key in expected)


def test_close_refuses_what_is_not_a_runs_log(tmp_path, bench):
    code, _, err = bench("close", tmp_path / "run.parquet")
    assert code == 2 and err == f"error: {tmp_path / 'run.parquet'}: not a run's log (an unfinished run's .jsonl under results/)\n"


def test_resume_of_a_given_log_of_another_suite_is_refused(fake, suite_dir, pinned_revision, tmp_path, bench):
    suite_dir("resumable", RESUME_SUITE)
    suite_dir("other", RESUME_SUITE)
    log = _interrupted_run(tmp_path / "results", "resumable", after_rows=1)
    code, _, err = bench("run", "other", "--resume", log, "--results", tmp_path / "results")
    assert code == 2
    assert err == f"error: {log} is a run of suite 'resumable', not 'other'\n"


def test_resume_at_another_code_revision_is_refused(fake, suite_dir, monkeypatch, tmp_path, bench):
    suite_dir("resumable", RESUME_SUITE)
    monkeypatch.setenv("FLASHSUITE_GIT_SHA", "aaaaaaaaaaaa")
    monkeypatch.setenv("FLASHSUITE_GIT_DIRTY", "0")
    log = _interrupted_run(tmp_path / "results", "resumable", after_rows=1)
    monkeypatch.setenv("FLASHSUITE_GIT_SHA", "bbbbbbbbbbbb")
    monkeypatch.setenv("FLASHSUITE_GIT_DIRTY", "1")
    code, _, err = bench("run", "resumable", "--resume", "--results", tmp_path / "results")
    assert code == 2
    assert err == ("error: this run was measured at git aaaaaaaaaaaa, the checkout is at bbbbbbbbbbbb (dirty): "
                   "one table must come from one version of the code\n")
    assert log.exists(), "a refused resume leaves the log for a later one"


def test_resume_after_a_torn_final_line_finishes_the_run(fake, suite_dir, pinned_revision, tmp_path, bench):
    suite_dir("resumable", RESUME_SUITE)
    log = _interrupted_run(tmp_path / "results", "resumable", after_rows=3)
    with open(log, "a") as f:
        f.write('{"kind": "row", "technique": "fake", "im')
    code, _, err = bench("run", "resumable", "--resume", log, "--no-isolate", "--results", tmp_path / "results")
    assert code == 1, err  # `wrong` fails; the run finishes
    assert len(read_table(_only_table(tmp_path / "results", "resumable"))) == 8


def test_a_suite_given_as_a_path_runs(fake, tmp_path, bench):
    path = tmp_path / "by_path.toml"
    path.write_text(fake_suite(n_values=(8,)))
    code, _, err = bench("run", path, "--no-isolate", "--impl", "reference,good", "--results", tmp_path / "results")
    assert code == 0, err
    frame = read_table(_only_table(tmp_path / "results", "by_path"))
    assert list(frame.status) == ["ok", "ok"]


# -- planning ----------------------------------------------------------------------------------


def test_plan_applies_impl_and_dtype_filters_in_registry_order(fake, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(fake_suite(n_values=(8, 16), dtypes=("float32", "bfloat16")))
    suite = suites.load(str(path), "quick")
    planned = plan(suite, impls=("unwritten", "reference"), dtypes=("bf16",))
    assert [(p.unit.case.id, p.unit.dtype, p.impls) for p in planned] == [
        ("N=8", registry.parse_dtype("bf16"), ("reference", "unwritten")),
        ("N=16", registry.parse_dtype("bf16"), ("reference", "unwritten")),
    ]
    everything = plan(suite)
    assert len(everything) == 4 and all(p.impls == tuple(ORDER) for p in everything)


def test_plan_leaves_out_what_a_group_excludes(fake, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(fake_suite(n_values=(8,)) + '\n[[group]]\ntechnique = "fake"\ndtypes = ["float32"]\n'
                    'exclude = ["crashes", "wrong"]\n[group.grid]\nN = [16]\n')
    suite = suites.load(str(path), "quick")
    assert [u.exclude for u in suite.units] == [(), ("crashes", "wrong")]
    planned = plan(suite)
    assert planned[0].impls == tuple(ORDER)
    assert planned[1].impls == tuple(n for n in ORDER if n not in ("crashes", "wrong"))
    assert [p.impls for p in plan(suite, impls=("wrong",))] == [("wrong",)]


def test_plan_case_filter_keeps_the_matching_cases_and_refuses_what_matches_nothing(fake, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(fake_suite(n_values=(8, 16, 160)))
    suite = suites.load(str(path), "quick")
    assert [p.unit.case.id for p in plan(suite, cases=("N=16",))] == ["N=16"]  # not N=160
    assert [p.unit.case.id for p in plan(suite, cases=(" N = 160 ",))] == ["N=160"]
    with pytest.raises(UsageError, match=r"^--case names 'D', not a parameter of suite 'p' \(parameters: N\)$"):
        plan(suite, cases=("D=64",))
    with pytest.raises(UsageError, match=r"^no case of suite 'p' matches N=32$"):
        plan(suite, cases=("N=32",))
    with pytest.raises(UsageError, match=r"^--case takes KEY=VALUE"):
        plan(suite, cases=("N",))
