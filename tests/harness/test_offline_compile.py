"""`bench kernels` and harness/offline_compile.py: Triton kernels compiled for sm_90 on a
machine with no GPU, with the registers, spills and shared memory ptxas reports.

This process runs kernels in Triton's interpreter (tests/conftest.py), so its kernels cannot
be compiled; the compiling happens in child processes without TRITON_INTERPRET, on the
technique in tests/triton_plugin."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from harness import offline_compile
from harness.errors import UsageError
from tests.child_process import run_compiling

SUITE = """
description = "y = 2x + 1, compiled"
seeds = 1
[[group]]
technique = "affine"
tiers = ["quick"]
dtypes = ["float32"]
[group.grid]
R = [8, 64]
C = [128]

[[group]]
technique = "affine"
tiers = ["quick"]
dtypes = ["float32"]
[group.grid]
R = [8]
C = [256]
"""


def _child(*argv: str) -> subprocess.CompletedProcess:
    return run_compiling(*argv, FLASHSUITE_PLUGINS="tests.triton_plugin")


@pytest.fixture(scope="module")
def kernels_lines(tmp_path_factory) -> list[str]:
    suite = tmp_path_factory.mktemp("suite") / "affine.toml"
    suite.write_text(SUITE)
    done = _child("-m", "harness.cli", "kernels", str(suite), "--target", "sm90", "--impl", "triton,triton-one-warp")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def _fields(line: str) -> dict[str, str]:
    return dict(part.split(": ", 1) for part in line.split("  ") if ": " in part)


def test_each_autotuning_config_left_by_its_pruning_hook_is_compiled_once(kernels_lines):
    rows = [_fields(line) for line in kernels_lines if "kernel: _affine_rows" in line]
    assert sorted((r["warps"], r["constants"]) for r in rows) == [
        ("4", "C=128 BLOCK_R=1"), ("8", "C=128 BLOCK_R=2"), ("8", "C=256 BLOCK_R=2")]  # C=256 pruned to 8 warps
    assert all(r["spill st/ld B"] == "0/0" and 0 < int(r["registers"]) <= 255 for r in rows)


def test_a_kernel_that_spills_is_flagged_and_one_that_fits_is_not(kernels_lines):
    rows = {_fields(line)["constants"]: _fields(line) for line in kernels_lines if "kernel: _affine_whole" in line}
    assert set(rows) == {"R=8 C=128", "R=64 C=128", "R=8 C=256"}
    assert rows["R=8 C=128"]["spill st/ld B"] == "0/0"
    stores, loads = map(int, rows["R=64 C=128"]["spill st/ld B"].split("/"))
    assert stores > 0 and loads > 0 and rows["R=64 C=128"]["registers"] == "255"  # 8192 floats in 32 threads
    assert kernels_lines[-1] == "1 kernel(s) spill registers to local memory"


CAPTURE = """
import json, torch
from harness import offline_compile
from implementations.triton_support import architecture
import tests.triton_plugin as plugin

x, y = torch.ones(8, 128), torch.zeros(8, 128)
before = architecture()
with offline_compile.capture("sm80") as launches:
    inside = architecture()
    plugin._affine_whole[(1,)](x, y, R=8, C=128, num_warps=1)
after = architecture()
fits = offline_compile.compile_launch(launches[0], "sm80")
offline_compile.SHARED_LIMIT_BYTES["sm80"] = -1  # now any block is over the limit
over = offline_compile.compile_launch(launches[0], "sm80")
print(json.dumps({"before": before, "inside": inside, "after": after, "untouched": bool((y == 0).all()),
                  "launches": [launch.name for launch in launches], "fits": fits[0].error,
                  "over": over[0].error, "registers": fits[0].registers, "warps": fits[0].num_warps}))
"""


def test_capture_records_launches_without_running_them_and_picks_the_targets_tilings():
    done = _child("-c", CAPTURE)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["launches"] == ["_affine_whole"] and found["untouched"], "the kernel was recorded, not run"
    assert (found["before"], found["inside"], found["after"]) == ("interpreter", "sm80", "interpreter")
    assert found["fits"] == "" and found["registers"] > 0 and found["warps"] == 1
    assert found["over"].startswith("needs 0 KiB of shared memory, sm80 has")


def test_an_unknown_target_is_refused_with_the_accepted_ones():
    with pytest.raises(UsageError, match="unknown target 'sm91' .accepted: sm90, sm100, sm80, sm8x"):
        with offline_compile.capture("sm91"):
            pass


def test_capture_refuses_the_interpreter():
    assert os.environ.get("TRITON_INTERPRET") == "1"
    with pytest.raises(UsageError, match="unset TRITON_INTERPRET"):
        with offline_compile.capture("sm90"):
            pass


def test_bench_kernels_refuses_an_unknown_target_in_one_line(bench):
    code, out, err = bench("kernels", "rnn", "--target", "h100")
    assert code == 2 and out == "" and err.strip() == "error: unknown target 'h100' (accepted: sm90, sm100, sm80, sm8x)"
