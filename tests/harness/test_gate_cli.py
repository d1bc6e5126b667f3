"""`bench compare`, `bench gate` and `bench promote` on synthetic tables: exit codes, the
refusals (exit 2, one line), the markdown summary for the job page, the baseline folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.results import COLUMNS
from tests.harness.gating_tables import DEVICE, row, samples, write

CASES = ("N=64", "N=128", "N=256")


def _rows(slow: dict[str, float] | None = None, **changes):
    """Three cases by two implementations; `slow` scales an implementation's samples."""
    slow = slow or {}
    out = []
    for i, case in enumerate(CASES):
        for j, impl in enumerate(("triton", "peer")):
            xs = samples(1.0 + i, seed=10 * i + j + (100 if slow else 0))
            out.append(row(impl, case, xs=[x * slow.get(impl, 1.0) for x in xs], **changes))
    return out


@pytest.fixture
def runs(tmp_path):
    """Baseline and candidate tables in results folders laid out as `bench run` lays them out."""
    base = write(tmp_path / "base" / "fakesuite" / DEVICE / "20260101T000000Z_aaaa.parquet", _rows())
    same = write(tmp_path / "cand" / "fakesuite" / DEVICE / "20260102T000000Z_bbbb.parquet", _rows())
    slow = write(tmp_path / "slow" / "fakesuite" / DEVICE / "20260103T000000Z_cccc.parquet", _rows({"triton": 1.10}))
    return base, same, slow


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_gate_passes_a_run_against_an_equal_one(bench, runs, wide_console, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    base, same, _ = runs
    code, out, err = bench("gate", "--baseline", base, "--candidate", same)
    assert (code, err) == (0, "")
    assert "gate: PASS: 0 failing of 6 cases (6 same)" in out


def test_gate_fails_a_10_percent_slower_implementation(bench, runs, wide_console, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    base, _, slow = runs
    code, out, err = bench("gate", "--baseline", base, "--candidate", slow, "--json", tmp_path / "gate.json")
    assert (code, err) == (1, "")
    assert "gate: FAIL: 3 failing of 6 cases (3 slower, 3 same)" in out
    assert f"summary appended to {summary}" in out
    verdicts = {(c["impl"], c["case_id"]): c["verdict"] for c in json.loads((tmp_path / "gate.json").read_text())["cases"]}
    assert verdicts == {(impl, case): "slower" if impl == "triton" else "same" for impl in ("triton", "peer")
                        for case in CASES}


def test_the_markdown_summary_names_the_outcome_the_rule_and_the_failing_cases(bench, runs, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    base, _, slow = runs
    bench("gate", "--baseline", base, "--candidate", slow)
    text = summary.read_text()
    assert text.startswith("earlier step\n## flashsuite gate: FAIL\n"), "appended, as GitHub expects"
    assert "3 failing of 6 cases: 3 slower, 3 same." in text
    assert "Rule: ratio of medians, 95% exact bootstrap interval; slower when the interval lies above 1 and the " \
           "ratio above 1.05" in text
    assert f"| fakesuite | `{base}` (git 0123456789ab) | `{slow}` (git 0123456789ab) | NVIDIA H100 80GB HBM3 |" in text
    flagged = [line for line in text.split("<details>")[0].splitlines() if line.startswith("| **slower**")]
    assert len(flagged) == 3 and all("| triton |" in line and "| 1.100 |" in line for line in flagged)
    assert "<details><summary>all 6 cases</summary>" in text


def test_gate_writes_no_step_summary_outside_github(bench, runs, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    base, _, slow = runs
    code, out, _ = bench("gate", "--baseline", base, "--candidate", slow, "--summary", tmp_path / "s.md")
    assert code == 1 and "summary appended" not in out
    assert (tmp_path / "s.md").read_text().startswith("## flashsuite gate: FAIL")


def test_a_wider_band_lets_the_slower_run_pass(bench, runs, wide_console):
    base, _, slow = runs
    code, out, _ = bench("gate", "--baseline", base, "--candidate", slow, "--max-slowdown", "15%")
    assert code == 0 and "6 same" in out


def test_a_correctness_regression_fails_even_when_faster(bench, tmp_path, wide_console):
    base = write(tmp_path / "b.parquet", _rows())
    rows = _rows({"triton": 0.5})
    rows[0] = row("triton", "N=64", status="incorrect")
    cand = write(tmp_path / "c.parquet", rows)
    code, out, _ = bench("gate", "--baseline", base, "--candidate", cand)
    assert code == 1 and "1 wrong" in out and "2 faster" in out


def test_gate_on_folders_pairs_suites_and_reports_a_suite_without_baseline(bench, runs, tmp_path, wide_console):
    base, _, slow = runs
    write(slow.parents[2] / "othersuite" / DEVICE / "20260103T000000Z_cccc.parquet", _rows(suite="othersuite"))
    code, out, _ = bench("gate", "--baseline", base.parents[2], "--candidate", slow.parents[2])
    assert code == 1
    assert "othersuite: no baseline of suite 'othersuite' under" in out


def test_the_baseline_folder_uses_the_newest_table_unless_baseline_names_one(bench, runs, tmp_path, wide_console):
    base, same, slow = runs
    folder = base.parent
    newer = write(folder / "20260201T000000Z_dddd.parquet", _rows({"triton": 0.5}))
    code, out, _ = bench("gate", "--baseline", base.parents[2], "--candidate", same)
    assert code == 1 and str(newer) in out, "against the newest table the candidate is 2x slower"
    code, out, _ = bench("promote", base, "--results", base.parents[2])
    assert code == 0 and (folder / "BASELINE").read_text() == base.name + "\n"
    code, out, _ = bench("gate", "--baseline", base.parents[2], "--candidate", same)
    assert code == 0 and "6 same" in out


def test_promote_copies_a_run_and_names_it(bench, runs, tmp_path, wide_console):
    _, same, _ = runs
    code, out, err = bench("promote", same, "--results", tmp_path / "committed")
    dest = tmp_path / "committed" / "fakesuite" / DEVICE / same.name
    assert (code, err) == (0, "")
    assert dest.exists() and dest.with_suffix(".json").exists()
    assert (dest.parent / "BASELINE").read_text() == same.name + "\n"
    assert "git add" in out


def test_promote_refuses_a_run_with_failed_rows(bench, tmp_path):
    table = write(tmp_path / "r" / "fakesuite" / DEVICE / "x.parquet", [row(status="crashed")])
    code, _, err = bench("promote", table, "--results", tmp_path / "committed")
    assert code == 2
    assert _one_error_line(err).endswith("a baseline should be a clean run (--force promotes it anyway)")
    assert not (tmp_path / "committed").exists()
    code, _, _ = bench("promote", table, "--results", tmp_path / "committed", "--force")
    assert code == 0


# -- compare ----------------------------------------------------------------------------------------


def test_compare_lists_cases_of_only_one_run_and_sorts_by_effect(bench, tmp_path):
    base_rows = _rows()
    cand_rows = _rows({"triton": 1.3})[1:] + [row("triton", "N=512", xs=samples(5.0))]
    cand_rows[0] = row("peer", "N=64", xs=samples(0.8))  # 20% faster
    base = write(tmp_path / "b.parquet", base_rows)
    cand = write(tmp_path / "c.parquet", cand_rows)
    code, out, err = bench("compare", base, cand, "--markdown")
    assert (code, err) == (0, "")
    body = [line for line in out.splitlines() if "| fake |" in line]
    verdicts = [line.split(" | ")[0].strip("| *") for line in body]
    assert verdicts == ["slower", "slower", "faster", "same", "same", "only in candidate", "only in baseline"]
    assert "| 1.300 |" in body[0] and "| 0.800 |" in body[2]


def test_compare_shows_memory_determinism_and_status_changes(bench, tmp_path):
    base = write(tmp_path / "b.parquet", [row("triton", "N=64"), row("peer", "N=64")])
    cand = write(tmp_path / "c.parquet", [row("triton", "N=64", peak_bytes=2 << 20, bitwise_repeatable=False),
                                          row("peer", "N=64", status="incorrect")])
    code, out, _ = bench("compare", base, cand, "--markdown")
    assert code == 0
    triton = next(line for line in out.splitlines() if "| triton |" in line)
    peer = next(line for line in out.splitlines() if "| peer |" in line)
    assert "**nondeterministic**" in triton and "bitwise -> differs" in triton and "+100.0%" in triton
    assert "**wrong**" in peer and "ok -> incorrect" in peer


def test_compare_of_the_committed_attention_runs(bench, wide_console):
    folder = Path(__file__).resolve().parents[2] / "results" / "attention" / "nvidia-h100-80gb-hbm3"
    tables = sorted(folder.glob("*.parquet"))
    if len(tables) < 2:
        pytest.skip("the two committed attention runs are not here")
    code, out, err = bench("compare", tables[0], tables[1])
    assert (code, err) == (0, "")
    assert "1 inconclusive, 1 faster, 28 same" in out


# -- refusals -------------------------------------------------------------------------------------------


def _refused(bench, *argv) -> str:
    code, out, err = bench(*argv)
    assert code == 2, (code, out, err)
    return _one_error_line(err)


def test_different_gpus_are_refused_unless_forced(bench, tmp_path, wide_console):
    base = write(tmp_path / "b.parquet", _rows())
    cand = write(tmp_path / "c.parquet", _rows(gpu="NVIDIA H200"), gpu="NVIDIA H200")
    line = _refused(bench, "gate", "--baseline", base, "--candidate", cand)
    assert line == (f"error: {base} and {cand} are not comparable: the baseline's GPU is NVIDIA H100 80GB HBM3, "
                    "the candidate's NVIDIA H200 (--force compares them anyway)")
    code, out, _ = bench("gate", "--baseline", base, "--candidate", cand, "--force")
    assert code == 0 and "GPU is NVIDIA H100 80GB HBM3, the candidate's NVIDIA H200 (forced)" in out


def test_different_suites_are_refused(bench, tmp_path):
    base = write(tmp_path / "b.parquet", _rows())
    cand = write(tmp_path / "c.parquet", _rows(suite="other"))
    line = _refused(bench, "compare", base, cand)
    assert "the baseline's suite is fakesuite, the candidate's other (--force compares them anyway)" in line


def test_a_baseline_folder_of_another_gpu_is_refused(bench, runs, tmp_path):
    base, _, _ = runs
    cand = write(tmp_path / "h200" / "fakesuite" / "nvidia-h200" / "x.parquet", _rows(gpu="NVIDIA H200"),
                 gpu="NVIDIA H200", device="nvidia-h200")
    line = _refused(bench, "gate", "--baseline", base.parents[2], "--candidate", cand.parents[2])
    assert line == (f"error: no baseline of suite 'fakesuite' on nvidia-h200 under {base.parents[2]} (it has {DEVICE}); "
                    "timings of different GPUs are not comparable (--force compares them anyway)")


def test_another_schema_version_is_refused_unless_forced(bench, runs, tmp_path, wide_console):
    base, same, _ = runs
    frame = pd.read_parquet(same)
    frame["schema_version"] = 2
    other = tmp_path / "v2.parquet"
    frame.to_parquet(other)
    line = _refused(bench, "gate", "--baseline", base, "--candidate", other)
    assert line == (f"error: {other}: schema version 2 is not supported (this flashsuite reads version 1) "
                    "(--force compares it anyway)")
    code, out, _ = bench("gate", "--baseline", base, "--candidate", other, "--force")
    assert code == 0 and "schema version is 1, the candidate's 2 (forced)" in out


@pytest.mark.parametrize("make, expected", [
    (lambda t: t / "absent.parquet", "{p}: no such file or folder"),
    (lambda t: (t / "notes.txt", (t / "notes.txt").write_text("hi"))[0],
     "{p}: not a result table (expected a .parquet table or a folder of them)"),
    (lambda t: ((t / "empty").mkdir(), t / "empty")[1], "{p}: no result table (*.parquet) in it"),
    (lambda t: (t / "junk.parquet", (t / "junk.parquet").write_bytes(b"junk"))[0], "{p}: not a readable Parquet file ("),
    (lambda t: (t / "foreign.parquet", pd.DataFrame({"x": [1]}).to_parquet(t / "foreign.parquet"))[0],
     "{p}: not a flashsuite result table (missing columns: "),
])
def test_bad_candidates_are_refused_in_one_line(bench, runs, tmp_path, make, expected):
    base, _, _ = runs
    path = make(tmp_path)
    line = _refused(bench, "gate", "--baseline", base, "--candidate", path)
    assert line.startswith("error: " + expected.format(p=path))


def test_nothing_in_common_is_refused(bench, runs, tmp_path):
    base, _, _ = runs
    other = write(tmp_path / "o" / "other" / DEVICE / "x.parquet", _rows(suite="other"))
    line = _refused(bench, "gate", "--baseline", base.parents[2], "--candidate", other.parents[2])
    assert line == (f"error: nothing to compare: no suite of {other.parents[2]} has a baseline under "
                    f"{base.parents[2]} (baseline suites: fakesuite)")


def test_a_baseline_file_naming_a_missing_table_is_refused(bench, runs):
    base, same, _ = runs
    (base.parent / "BASELINE").write_text("gone.parquet\n")
    line = _refused(bench, "gate", "--baseline", base.parents[2], "--candidate", same)
    assert line == f"error: {base.parent / 'BASELINE'} names 'gone.parquet', which is not a table in {base.parent}"


@pytest.mark.parametrize("value, message", [
    ("5", "'5' is ambiguous: write a percentage (e.g. 5%) or a fraction below 1"),
    ("fast", "'fast' is not a percentage (e.g. 5%) or a fraction (e.g. 0.05)"),
])
def test_a_bad_threshold_is_refused(bench, runs, value, message):
    base, same, _ = runs
    line = _refused(bench, "gate", "--baseline", base, "--candidate", same, "--max-slowdown", value)
    assert line.startswith(f"error: argument --max-slowdown: {message}")


def test_gate_needs_both_runs(bench):
    line = _refused(bench, "gate", "--baseline", "x.parquet")
    assert line.startswith("error: the following arguments are required: --candidate")


def test_rows_without_a_sidecar_still_compare(bench, tmp_path, wide_console):
    base = write(tmp_path / "b.parquet", _rows(), sidecar=False)
    cand = write(tmp_path / "c.parquet", _rows(), sidecar=False)
    code, out, _ = bench("gate", "--baseline", base, "--candidate", cand)
    assert code == 0 and "6 same" in out


def test_synthetic_tables_have_every_column():
    assert set(row().to_dict()) == set(COLUMNS)
