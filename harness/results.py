"""Result rows and files.

While a run goes, each finished row is appended to a JSON Lines log and fsynced, so a
crash loses nothing finished and `--resume` can continue. At the end the log becomes a
Parquet table with a JSON sidecar (the environment, the ceilings, the run's arguments):

    results/<suite>/<device>/<utc-time>_<git-sha>.parquet   (+ .json; the .jsonl is removed)

Every row carries `schema_version`; readers refuse other versions with a clear error.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.errors import ResultFileError

SCHEMA_VERSION = 1

# Statuses: ok (correct, measured); incorrect (ran, failed the tolerance rule: not timed);
# unsupported (the case is outside the implementation's range); unavailable (a need is
# unmet here: no GPU, a missing package); error, oom, crashed (the worker process died),
# timeout.
STATUSES = ("ok", "incorrect", "unsupported", "unavailable", "error", "oom", "crashed", "timeout")

# Columns that decide whether two rows may be compared; see docs/results-schema.md.
COMPARABILITY = ("gpu", "compute_capability", "driver", "cuda", "torch", "triton", "impl_code_hash",
                 "technique", "impl", "case", "dtype", "direction")


@dataclass
class Row:
    # identity
    technique: str
    impl: str
    role: str
    case: str  # JSON of the shape parameters
    case_id: str
    dtype: str
    direction: str
    status: str = "ok"
    reason: str = ""
    elapsed_s: float | None = None  # wall time the row took, compilation and autotuning included
    # latency
    median_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    n_samples: int | None = None
    ci_rel: float | None = None
    samples_ms: list[float] = field(default_factory=list)
    timing_mode: str = ""
    stop_reason: str = ""
    is_performance_figure: bool = False
    # throughput against the ceilings measured in the same run
    flops: float | None = None
    min_bytes: float | None = None
    tflops: float | None = None
    gbps: float | None = None
    peak_tflops: float | None = None
    peak_gbps: float | None = None
    frac_of_peak: float | None = None
    exceeds_ceiling: bool | None = None
    # memory
    peak_bytes: int | None = None
    # correctness and determinism
    correct: bool | None = None
    rel_err: float | None = None
    max_abs_err: float | None = None
    ref_rel_err: float | None = None
    ref_max_abs_err: float | None = None
    n_seeds: int | None = None
    errors: str = ""  # JSON: per named output, its rel_err and max_abs_err
    rel_err_fp32: float | None = None
    precision_gap: float | None = None  # rel_err - rel_err_fp32
    bitwise_repeatable: bool | None = None
    fp32_matmul: str = ""  # "ieee" or "tf32": torch's float32 matmul mode during the measurement
    # GPU state around the measurement
    sm_clock_mhz_before: float | None = None
    sm_clock_mhz_after: float | None = None
    temp_c_before: float | None = None
    temp_c_after: float | None = None
    power_w_after: float | None = None
    throttle_reasons: str = ""
    throttled: bool | None = None
    # provenance and comparability, filled by the runner
    schema_version: int = SCHEMA_VERSION
    run_id: str = ""
    suite: str = ""
    tier: str = ""
    timestamp: str = ""
    gpu: str = ""
    device: str = ""
    compute_capability: str = ""
    driver: str = ""
    cuda: str = ""
    torch: str = ""
    triton: str = ""
    git_sha: str = ""
    git_dirty: bool | None = None
    impl_code_hash: str = ""

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.technique, self.impl, self.case_id, self.dtype, self.direction)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = tuple(f.name for f in fields(Row))
REQUIRED = ("schema_version", "suite", "technique", "impl", "role", "case", "dtype", "direction", "status",
            "reason", "median_ms", "p10_ms", "p90_ms", "n_samples", "tflops", "gbps", "frac_of_peak",
            "peak_bytes", "rel_err", "max_abs_err", "correct", "bitwise_repeatable", "gpu")


def row_from_dict(data: dict[str, Any]) -> Row:
    known = {k: v for k, v in data.items() if k in COLUMNS}
    return Row(**known)


@dataclass(frozen=True)
class RunHeader:
    """The first line of a run's log, and the sidecar of its table."""

    run_id: str
    suite: str
    tier: str
    selection: dict[str, Any]  # --impl, --dtype filters
    environment: dict[str, Any]
    ceilings: dict[str, Any]
    started: str
    schema_version: int = SCHEMA_VERSION


class RunLog:
    """Append-only JSON Lines log of one run: a header line, then one line per row."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, path: Path, header: RunHeader) -> RunLog:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = cls(path)
        log._append({"kind": "header", **asdict(header)})
        return log

    def append(self, row: Row) -> None:
        self._append({"kind": "row", **row.to_dict()})

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=_json_default, allow_nan=True)
        self._drop_torn_tail()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _drop_torn_tail(self) -> None:
        """Cut a last line the writer did not finish (every finished record ends in a newline),
        so a row appended on resume starts on a line of its own."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
        with open(self.path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)

    def read(self) -> tuple[RunHeader, list[Row]]:
        """The header and the rows; a torn last line (the process died mid-write) is dropped."""
        header, rows = None, []
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    break
                raise ResultFileError(f"{self.path}: line {number} is not JSON; the log is corrupt") from None
            kind = record.pop("kind", None)
            if kind == "header":
                _check_version(self.path, record.get("schema_version"))
                header = RunHeader(**{k: record[k] for k in RunHeader.__dataclass_fields__ if k in record})
            elif kind == "row":
                rows.append(row_from_dict(record))
        if header is None:
            raise ResultFileError(f"{self.path}: no run header; not a flashsuite run log")
        latest = {row.key: row for row in rows}  # a resumed run may have rewritten a row
        return header, list(latest.values())


def finalize(log: RunLog, **sidecar_extra: Any) -> Path:
    """Write the Parquet table and its JSON sidecar next to the log, then remove the log."""
    import pandas as pd

    header, rows = log.read()
    table = log.path.with_suffix(".parquet")
    frame = pd.DataFrame([row.to_dict() for row in rows], columns=list(COLUMNS))
    frame.to_parquet(table, index=False)
    sidecar = {**asdict(header), "rows": len(rows), "finished": rows[-1].timestamp if rows else header.started,
               **sidecar_extra}
    table.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, default=_json_default) + "\n")
    log.path.unlink()
    return table


def read_table(path: Path):
    """Load a result table (.parquet, or a run's .jsonl log) as a DataFrame; raise
    ResultFileError on anything that is not a flashsuite table of this schema version."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise ResultFileError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        _, rows = RunLog(path).read()
        return pd.DataFrame([row.to_dict() for row in rows], columns=list(COLUMNS))
    if path.suffix != ".parquet":
        raise ResultFileError(f"{path}: not a result table (expected a .parquet table or a .jsonl run log)")
    try:
        frame = pd.read_parquet(path)
    except Exception as e:
        raise ResultFileError(f"{path}: not a readable Parquet file ({type(e).__name__}: {_first_line(e)})") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ResultFileError(f"{path}: not a flashsuite result table (missing columns: {', '.join(missing[:6])})")
    versions = sorted(set(frame["schema_version"].dropna().astype(int)))
    for version in versions:
        _check_version(path, version)
    return frame


def read_sidecar(table: Path) -> dict[str, Any]:
    sidecar = Path(table).with_suffix(".json")
    if not sidecar.exists():
        return {}
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as e:
        raise ResultFileError(f"{sidecar}: corrupt sidecar ({e})") from None


def unfinished_logs(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob("*.jsonl"))


def utc_now() -> str:
    """A row's timestamp: UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _check_version(path: Path, version: Any) -> None:
    if version != SCHEMA_VERSION:
        raise ResultFileError(
            f"{path}: schema version {version} is not supported (this flashsuite reads version {SCHEMA_VERSION})")


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
