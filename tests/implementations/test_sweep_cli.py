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
