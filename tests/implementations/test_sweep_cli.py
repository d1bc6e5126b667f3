"""sweep_cli.compile_ahead: jobs run in fresh processes, each job's error returned by its
arguments, a job that raises recorded rather than fatal, and nothing started for one worker."""

from __future__ import annotations

import os

from implementations.sweep_cli import compile_ahead


def _job(value: int) -> str:
    if value < 0:
        raise ValueError("negative")
    return "" if value % 2 == 0 else f"odd {value} in {os.getpid()}"


def test_each_job_reports_its_own_outcome_from_another_process():
    done = compile_ahead(_job, [(2,), (3,), (-1,)], workers=2)
    assert set(done) == {(2,), (3,), (-1,)}
    assert done[(2,)] == ""
    assert done[(3,)].startswith("odd 3 in ") and done[(3,)] != f"odd 3 in {os.getpid()}"
    assert done[(-1,)] == "ValueError: negative"


def test_one_worker_or_no_jobs_compile_nothing_ahead():
    assert compile_ahead(_job, [(2,)], workers=1) == {}
    assert compile_ahead(_job, [], workers=4) == {}


def test_a_gpu_fault_restarts_the_sweep_where_it_stopped(tmp_path, monkeypatch):
    """A sweep that raises ContextLost has its rows written and the command started again with
    --resume and the rest of its budget; the resumed sweep is handed those rows (numbers as
    floats), and the final CSV and summary hold every row once."""
    import math
    import sys

    import pytest

    from implementations import sweep_cli

    csv_path = str(tmp_path / "sweep.csv")
    monkeypatch.setattr(sweep_cli.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "some.tune", "--budget-s", "60", "--csv", csv_path])
    handed, summarized = [], []

    def sweep(args):
        handed.append(args.previous)
        if not args.previous:
            raise sweep_cli.ContextLost([{"impl": "a", "ms": 1.5, "note": ""},
                                         {"impl": "b", "ms": math.nan, "note": "faulted the GPU: illegal address"}])
        return [{"impl": "c", "ms": 2.5, "note": ""}]

    class Exec(Exception):
        pass

    def execv(executable, argv):
        raise Exec(argv)

    monkeypatch.setattr(sweep_cli.os, "execv", execv)
    monkeypatch.setattr(sys, "argv", ["tune", "--budget-s", "60", "--csv", csv_path])
    with pytest.raises(Exec) as restart:
        sweep_cli.sweep_main("a sweep", 60.0, sweep, summarized.append)
    argv = restart.value.args[0]
    assert argv[:6] == ["python", "-m", "some.tune", "--budget-s", "60", "--csv"]
    assert argv[-4:] == ["--resume", csv_path, "--csv", csv_path] and 0 < float(argv[-5]) <= 60

    monkeypatch.setattr(sys, "argv", ["tune", *argv[3:]])
    assert sweep_cli.sweep_main("a sweep", 60.0, sweep, summarized.append) == 0
    assert handed[1][0] == {"impl": "a", "ms": 1.5, "note": ""} and math.isnan(handed[1][1]["ms"])
    assert [row["impl"] for row in summarized[0]] == ["a", "b", "c"]
    assert [row["impl"] for row in sweep_cli.read_rows(csv_path)] == ["a", "b", "c"]
