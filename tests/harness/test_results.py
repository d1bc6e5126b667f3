from __future__ import annotations

import json
import math
from dataclasses import replace

import pandas as pd
import pytest

from harness import results
from harness.errors import ResultFileError, UsageError
from harness.results import COLUMNS, REQUIRED, SCHEMA_VERSION, Row, RunHeader, RunLog, finalize, read_table


def _header(**changes) -> RunHeader:
    header = RunHeader(run_id="20250101T000000Z_abc", suite="fakesuite", tier="quick",
                       selection={"impls": ["good"], "dtypes": [], "base_seed": 7},
                       environment={"gpu": "cpu (x86_64)", "device": "cpu-interpreter", "interpreter": True},
                       ceilings={"tflops": {}, "gbps": None}, started="20250101T000000Z")
    return replace(header, **changes)


def _row(impl: str = "good", n: int = 8, **changes) -> Row:
    row = Row(technique="fake", impl=impl, role="triton", case=json.dumps({"N": n}), case_id=f"N={n}",
              dtype="float32", direction="fwd", median_ms=1.5, p10_ms=1.0, p90_ms=2.0, n_samples=3,
              samples_ms=[1.0, 1.5, 2.0], correct=True, rel_err=1e-7, bitwise_repeatable=True,
              timestamp=f"2025-01-01T00:00:0{n % 10}Z", suite="fakesuite", gpu="cpu (x86_64)")
    return replace(row, **changes)


@pytest.fixture
def log(tmp_path):
    return RunLog.create(tmp_path / "suite" / "cpu-interpreter" / "run.jsonl", _header())


# -- the run log -------------------------------------------------------------------------------


def test_run_log_round_trips_the_header_and_rows(log):
    rows = [_row("good", 8), _row("wrong", 8, status="incorrect", reason="off", median_ms=None, samples_ms=[]),
            _row("good", 16, rel_err=math.pi)]
    for row in rows:
        log.append(row)
    header, read = RunLog(log.path).read()
    assert header == _header()
    assert read == rows


def test_run_log_writes_one_json_line_per_record_header_first(log):
    log.append(_row())
    lines = log.path.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["kind"] == "header" and json.loads(lines[1])["kind"] == "row"
    assert json.loads(lines[0])["schema_version"] == SCHEMA_VERSION


def test_run_log_keeps_the_latest_row_of_a_key(log):
    log.append(_row("good", 8, status="crashed", median_ms=None))
    log.append(_row("good", 16))
    log.append(_row("good", 8, status="ok", median_ms=3.0))
    _, rows = log.read()
    assert len(rows) == 2
    assert {r.case_id: (r.status, r.median_ms) for r in rows} == {"N=8": ("ok", 3.0), "N=16": ("ok", 1.5)}


def test_run_log_drops_a_torn_final_line(log):
    log.append(_row("good", 8))
    log.append(_row("good", 16))
    full = log.path.read_text()
    last = full.splitlines()[-1]
    log.path.write_text(full[: len(full) - len(last) // 2 - 1])  # the process died mid-write of the last row
    header, rows = log.read()
    assert header == _header()
    assert [r.case_id for r in rows] == ["N=8"]


def test_run_log_with_a_corrupt_middle_line_is_refused(log):
    log.append(_row("good", 8))
    log.append(_row("good", 16))
    lines = log.path.read_text().splitlines()
    lines[1] = lines[1][:20]
    log.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultFileError, match=r"run\.jsonl: line 2 is not JSON; the log is corrupt"):
        log.read()


def test_run_log_without_a_header_is_refused(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"kind": "row", **_row().to_dict()}) + "\n")
    with pytest.raises(ResultFileError, match="no run header; not a flashsuite run log"):
        RunLog(path).read()


def test_run_log_of_another_schema_version_is_refused(tmp_path):
    log = RunLog.create(tmp_path / "x.jsonl", _header(schema_version=99))
    with pytest.raises(ResultFileError, match=r"schema version 99 is not supported \(this flashsuite reads version 1\)"):
        log.read()


def test_result_file_errors_are_usage_errors():
    assert issubclass(ResultFileError, UsageError)


def test_appending_after_a_torn_final_line_keeps_the_log_readable(log):
    log.append(_row("good", 8))
    with open(log.path, "a") as f:
        f.write('{"kind": "row", "technique": "fa')  # torn: no newline
    log.read()  # what --resume does first: the torn line is dropped
    log.append(_row("good", 16))
    log.append(_row("good", 32))
    _, rows = log.read()
    assert [r.case_id for r in rows] == ["N=8", "N=16", "N=32"]


# -- the table ---------------------------------------------------------------------------------


def test_finalize_writes_parquet_and_sidecar_and_removes_the_log(log):
    rows = [_row("good", 8), _row("reference", 8, role="reference", samples_ms=[]), _row("good", 16)]
    for row in rows:
        log.append(row)
    table = finalize(log)
    assert table == log.path.with_suffix(".parquet")
    assert table.exists() and not log.path.exists()
    sidecar = json.loads(table.with_suffix(".json").read_text())
    assert sidecar["rows"] == 3
    assert sidecar["finished"] == rows[-1].timestamp
    assert sidecar["run_id"] == _header().run_id and sidecar["selection"]["base_seed"] == 7
    assert results.read_sidecar(table) == sidecar
    frame = read_table(table)
    assert list(frame.columns) == list(COLUMNS)
    assert list(frame.impl) == ["good", "reference", "good"]
    assert list(frame.case_id) == ["N=8", "N=8", "N=16"]
    assert [list(s) for s in frame.samples_ms] == [[1.0, 1.5, 2.0], [], [1.0, 1.5, 2.0]]
    assert list(frame.median_ms) == [1.5, 1.5, 1.5]
    assert set(frame.schema_version) == {SCHEMA_VERSION}


def test_finalize_of_a_run_without_rows_gives_an_empty_table_finished_when_started(log):
    table = finalize(log)
    assert len(read_table(table)) == 0
    assert json.loads(table.with_suffix(".json").read_text())["finished"] == _header().started


def test_read_table_reads_a_run_log_in_progress(log):
    log.append(_row("good", 8))
    frame = read_table(log.path)
    assert list(frame.columns) == list(COLUMNS) and list(frame.impl) == ["good"]


def test_read_table_refuses_a_missing_file(tmp_path):
    with pytest.raises(ResultFileError, match="absent.parquet: no such file"):
        read_table(tmp_path / "absent.parquet")


def test_read_table_refuses_a_file_that_is_not_parquet(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ResultFileError, match=r"table\.csv: not a result table \(expected a \.parquet table or a "
                                              r"\.jsonl run log\)"):
        read_table(path)


def test_read_table_refuses_a_corrupt_parquet_in_one_line(tmp_path):
    path = tmp_path / "table.parquet"
    path.write_bytes(b"PAR1 this is not really parquet \x00\x01\x02\nsecond line PAR1")
    with pytest.raises(ResultFileError) as info:
        read_table(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable Parquet file (")
    assert "\n" not in message


def test_read_table_refuses_a_foreign_parquet_naming_missing_columns(tmp_path):
    path = tmp_path / "foreign.parquet"
    pd.DataFrame({"a": [1, 2], "status": ["x", "y"]}).to_parquet(path)
    with pytest.raises(ResultFileError) as info:
        read_table(path)
    assert str(info.value) == (f"{path}: not a flashsuite result table (missing columns: schema_version, suite, "
                               "technique, impl, role, case)")


def test_read_table_refuses_another_schema_version(tmp_path):
    path = tmp_path / "future.parquet"
    pd.DataFrame([_row(schema_version=99).to_dict()], columns=list(COLUMNS)).to_parquet(path)
    assert set(REQUIRED) <= set(COLUMNS)
    with pytest.raises(ResultFileError) as info:
        read_table(path)
    assert str(info.value) == f"{path}: schema version 99 is not supported (this flashsuite reads version 1)"


def test_read_sidecar_is_empty_when_missing_and_refuses_a_corrupt_one(tmp_path):
    table = tmp_path / "t.parquet"
    assert results.read_sidecar(table) == {}
    table.with_suffix(".json").write_text("{not json")
    with pytest.raises(ResultFileError, match=r"t\.json: corrupt sidecar"):
        results.read_sidecar(table)


def test_row_key_identifies_technique_impl_case_dtype_and_direction():
    assert _row().key == ("fake", "good", "N=8", "float32", "fwd")
    assert _row(direction="fwd+bwd").key != _row().key
    assert results.row_from_dict({**_row().to_dict(), "unknown_column": 1}) == _row()
