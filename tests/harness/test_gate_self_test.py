"""ci/gate-self-test.sh, the gate's calibration on a machine: the suite twice, once more with
extra work injected into one implementation, and the two gates, on the fake technique."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.child_process import ROOT

SUITE = """description = "fake, for the gate's self-test"
requires = "any"
seeds = 1
checks = ["repeat"]

[[group]]
technique = "fake"
tiers = ["quick", "full"]
dtypes = ["float32"]
directions = ["fwd"]
exclude = ["unwritten", "wrong", "raises", "oom", "crashes", "refuses", "needs_gpu", "narrow", "nondeterministic"]
[group.grid]
N = [16384]  # under glibc's mmap threshold and torch's intra-op grain: no fresh pages or thread wake-ups a call
"""


def _self_test(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GATE_SELF_TEST_DIR": str(tmp_path / "out"),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(["bash", str(ROOT / "ci" / "gate-self-test.sh"), *argv], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)


def test_the_slowed_run_fails_its_gate_and_both_gates_are_kept(fake, tmp_path):
    # 10x the work, not 10%, on a small N (SUITE): the CPU's wall clock moves a call between
    # runs, and with the interpreter's 5 samples the median's interval reaches the slowest
    # sample, so a baseline sample slower than the slowed run makes the gate inconclusive.
    suite = tmp_path / "selftest.toml"
    suite.write_text(SUITE)
    done = _self_test(tmp_path, str(suite), "quick", "fake/good", "9.0")
    assert "fake/good slowed by 9.0: exit 1 (expected 1)" in done.stdout, done.stderr[-2000:]
    slowed = json.loads((tmp_path / "out" / "slowed.json").read_text())
    verdicts = {case["impl"]: case["verdict"] for case in slowed["cases"]}
    assert verdicts["good"] == "slower" and verdicts["reference"] == "only in baseline"
    same = json.loads((tmp_path / "out" / "same.json").read_text())
    assert {case["impl"] for case in same["cases"]} == {"reference", "good"}
    assert (tmp_path / "out" / "same.md").read_text() and (tmp_path / "out" / "slowed.md").read_text()
    assert done.returncode == (0 if "the same code twice: exit 0" in done.stdout else 1)

    again = _self_test(tmp_path, str(suite), "quick", "fake/good", "9.0")  # as after a runner's time limit
    assert all(f"out/{name}: kept" in again.stdout for name in "abs"), again.stdout
    assert "fake/good slowed by 9.0: exit 1 (expected 1)" in again.stdout


def test_a_target_without_an_implementation_is_refused(tmp_path):
    done = _self_test(tmp_path, "attention", "quick", "triton")
    assert done.returncode == 2 and done.stderr.strip() == "error: TECHNIQUE/IMPL expected, got 'triton'"
