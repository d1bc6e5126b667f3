"""`python -m implementations.fftconv.tune --offline sm90`: every candidate plan's kernels
compiled for the H100 without one (implementations/sweep_cli.py), in a child process without
TRITON_INTERPRET, since this process's kernels are the interpreter's."""

from __future__ import annotations

import csv
import subprocess
import sys

from implementations.fftconv import tune
from tests.child_process import run_compiling


def test_the_offline_sweep_compiles_every_candidate(tmp_path):
    table = tmp_path / "resources.csv"
    done = run_compiling("-m", "implementations.fftconv.tune", "--offline", "sm90", "--lengths", "512", "--csv", str(table))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(table.open()))
    names = {f"N512 {tune._name(plan)}" for plan in tune.candidates(512)}
    assert names and {row["candidate"] for row in rows} == names and all(row["kernel"] == "_fused_kernel" for row in rows)
    assert all(int(row["registers"]) > 0 and row["error"] == "" for row in rows)
    assert f"of {len(names)} candidates compile without spills" in done.stdout


def test_the_offline_sweep_refuses_an_unknown_target():
    done = run_compiling("-m", "implementations.fftconv.tune", "--offline", "gfx90a", "--lengths", "128")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: unknown target 'gfx90a'")


def test_the_plan_check_needs_a_gpu():
    """`python -m implementations.fftconv.check_plans` runs every plan on a GPU; here it says so in one line."""
    done = subprocess.run([sys.executable, "-m", "implementations.fftconv.check_plans"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: check_plans runs the plans on a CUDA GPU; none is visible"
