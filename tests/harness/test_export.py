"""`bench export`: a run in pytest-benchmark's JSON format, read back by pytest-benchmark
itself (its file storage, its statistics, and its `compare` command)."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from harness import export
from tests.harness.gating_tables import row, samples, write

pytest_benchmark = pytest.importorskip("pytest_benchmark", reason="the test extra installs pytest-benchmark")


@pytest.fixture
def table(tmp_path):
    return write(tmp_path / "run.parquet", [
        row("triton", "N=64", xs=samples(1.0, n=21, seed=1)),
        row("peer", "N=64", xs=samples(1.5, n=20, seed=2)),
        row("triton", "N=128", xs=samples(2.0, n=5, seed=3), direction="fwd+bwd"),
        row("broken", "N=64", status="crashed"),
    ])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 20, 21, 200])
def test_the_statistics_describe_the_samples(n):
    data = samples(1e-3, n=n, noise=0.2, seed=n, heavy=True)
    stats = export.sample_stats(data)
    assert stats["rounds"] == n and stats["min"] == min(data) and stats["max"] == max(data)
    assert stats["median"] == pytest.approx(statistics.median(data), rel=1e-12)
    assert stats["mean"] == pytest.approx(statistics.mean(data), rel=1e-12)
    assert stats["total"] == pytest.approx(sum(data), rel=1e-12)
    assert min(data) <= stats["q1"] <= stats["median"] <= stats["q3"] <= max(data)
    assert stats["ld15iqr"] in data and stats["hd15iqr"] in data


def test_export_without_pytest_benchmark_is_refused_in_one_line(bench, table, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytest_benchmark.stats", None)  # import now raises ImportError
    code, out, err = bench("export", table)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "pytest-benchmark" in err and "flashsuite[export]" in err


def test_pytest_benchmarks_storage_loads_the_export(bench, table, tmp_path):
    from pytest_benchmark.logger import Logger
    from pytest_benchmark.storage.file import FileStorage

    out = tmp_path / "0001_run.json"
    code, _, err = bench("export", table, "-o", out)
    assert (code, err) == (0, "")
    storage = FileStorage(str(tmp_path), Logger(Logger.QUIET))
    loaded = list(storage.load_benchmarks(str(out)))  # a file it cannot read is skipped with a warning
    assert sorted(b["name"] for b in loaded) == ["fake[peer-N=64-float32-fwd]", "fake[triton-N=128-float32-fwd+bwd]",
                                                 "fake[triton-N=64-float32-fwd]"], "the crashed row is left out"
    triton = next(b for b in loaded if b["name"] == "fake[triton-N=64-float32-fwd]")
    assert triton["median"] == pytest.approx(1.0e-3) and triton["rounds"] == 21 and len(triton["data"]) == 21
    assert triton["group"] == "fake N=64 float32 fwd"
    assert triton["params"] == {"impl": "triton", "dtype": "float32", "direction": "fwd", "N": 64}
    assert triton["extra_info"]["correct"] is True and triton["extra_info"]["timing_mode"] == "cuda-events"
    data = json.loads(out.read_text())
    assert data["commit_info"]["id"] == "0123456789ab" and data["machine_info"]["gpu"] == "NVIDIA H100 80GB HBM3"
    assert data["datetime"] == "2026-11-25T14:07:25+00:00"


def test_pytest_benchmark_compare_reads_two_exports(bench, table, tmp_path):
    slower = write(tmp_path / "slower.parquet", [row("triton", "N=64", xs=samples(1.1, n=21, seed=4)),
                                                 row("peer", "N=64", xs=samples(1.5, n=20, seed=5))])
    first, second = tmp_path / "0001_base.json", tmp_path / "0002_cand.json"
    assert bench("export", table, "-o", first)[0] == 0
    assert bench("export", slower, "-o", second)[0] == 0
    result = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(first), str(second),
                             "--csv", str(tmp_path / "compared"), "--columns", "median,rounds"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "fake[triton-N=64-float32-fwd]" in result.stdout and "Failed to load" not in result.stdout + result.stderr
    with open(tmp_path / "compared.csv") as f:
        rows = list(csv.DictReader(f))
    medians = sorted(float(r["median"]) for r in rows if r["param:impl"] == "triton" and r["param:N"] == "64")
    assert medians == pytest.approx([1.0e-3, 1.1e-3])


def test_export_to_standard_output(bench, table):
    code, out, _ = bench("export", table)
    assert code == 0 and len(json.loads(out)["benchmarks"]) == 3


def test_export_of_a_committed_gpu_run():
    folder = Path(__file__).resolve().parents[2] / "results" / "decoding" / "nvidia-h100-80gb-hbm3"
    tables = sorted(folder.glob("*.parquet"))
    if not tables:
        pytest.skip("no committed decoding run here")
    data = export.pytest_benchmark(tables[0])
    from harness.results import read_table

    frame = read_table(tables[0])
    assert len(data["benchmarks"]) == int((frame.status == "ok").sum())
    json.dumps(data)  # plain JSON throughout


def test_export_refuses_what_is_not_a_table(bench, tmp_path):
    code, _, err = bench("export", tmp_path / "none.parquet")
    assert code == 2 and err == f"error: {tmp_path / 'none.parquet'}: no such file\n"
