"""`python -m implementations.fftconv.tune --offline sm90`: every candidate plan's kernels
compiled for the H100 without one (implementations/sweep_cli.py), in a child process without
TRITON_INTERPRET, since this process's kernels are the interpreter's."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from implementations.fftconv import tune

ROOT = Path(__file__).resolve().parents[3]


def test_the_offline_sweep_compiles_every_candidate(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    table = tmp_path / "resources.csv"
    done = subprocess.run([sys.executable, "-m", "implementations.fftconv.tune", "--offline", "sm90", "--lengths", "512",
                           "--csv", str(table)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(table.open()))
    names = {f"N512 {tune._name(plan)}" for plan in tune.candidates(512)}
    assert names and {row["candidate"] for row in rows} == names and all(row["kernel"] == "_row_kernel" for row in rows)
    assert all(int(row["registers"]) > 0 and row["error"] == "" for row in rows)
    assert f"of {len(names)} candidates compile without spills" in done.stdout


def test_the_offline_sweep_refuses_an_unknown_target():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "implementations.fftconv.tune", "--offline", "gfx90a", "--lengths", "128"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: unknown target 'gfx90a'")
