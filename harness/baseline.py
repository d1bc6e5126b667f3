"""Which table is the baseline, and promoting a run to it.

A folder of results holds tables as `<suite>/<device>/<utc-time>_<sha>.parquet`. In each
`<suite>/<device>/` folder the baseline is the table named by the folder's `BASELINE` file
(one line: the table's file name), or, without that file, the newest table (names start
with the UTC time). `bench promote TABLE` copies a finished run there and points `BASELINE`
at it; committing the two files makes it the baseline CI gates against.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import results
from harness.errors import UsageError

POINTER = "BASELINE"
FAILED = ("incorrect", "error", "oom", "crashed", "timeout")


@dataclass(frozen=True)
class Table:
    path: Path
    suite: str
    device: str


def describe(path: Path) -> Table:
    """The table's suite and device (from its sidecar, else its rows, else its folders)."""
    sidecar = results.read_sidecar(path)
    suite = sidecar.get("suite") or path.parent.parent.name
    device = sidecar.get("environment", {}).get("device") or path.parent.name
    return Table(path, suite, device)


def tables(path: Path) -> list[Table]:
    """A table given by name, or each (suite, device) folder's baseline under a folder."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix != ".parquet":
            raise UsageError(f"{path}: not a result table (expected a .parquet table or a folder of them)")
        return [describe(path)]
    found = []
    for folder in sorted({p.parent for p in path.rglob("*.parquet")}):
        chosen = chosen_in(folder)
        if chosen is not None:
            found.append(describe(chosen))
    return found


def chosen_in(folder: Path) -> Path | None:
    """The table `BASELINE` names in this folder, or its newest table."""
    pointer = folder / POINTER
    if pointer.exists():
        name = pointer.read_text().strip()
        table = folder / name
        if not name or not table.exists():
            raise UsageError(f"{pointer} names {name!r}, which is not a table in {folder}")
        return table
    candidates = sorted(folder.glob("*.parquet"))
    return candidates[-1] if candidates else None


def promote(table: Path, results_dir: Path, force: bool = False) -> tuple[Path, Path]:
    """Copy a finished table (and its sidecar) to results_dir/<suite>/<device>/ and point the
    folder's BASELINE at it; returns (the table there, the pointer)."""
    table = Path(table)
    if table.suffix != ".parquet":
        raise UsageError(f"{table}: only a finished run's .parquet table can become a baseline")
    frame = results.read_table(table)
    failed = frame[frame["status"].isin(FAILED)]
    if len(failed) and not force:
        first = failed.iloc[0]
        raise UsageError(f"{table} has {len(failed)} failed row(s) (e.g. {first['impl']} {first['case_id']}: "
                         f"{first['status']}); a baseline should be a clean run (--force promotes it anyway)")
    if not table.with_suffix(".json").exists():
        raise UsageError(f"{table}: its sidecar {table.with_suffix('.json').name} is missing; "
                         "a baseline needs the run's environment")
    info = describe(table)
    folder = Path(results_dir) / info.suite / info.device
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / table.name
    for src in (table, table.with_suffix(".json")):
        target = folder / src.name
        if src.resolve() != target.resolve():
            shutil.copyfile(src, target)
    pointer = folder / POINTER
    pointer.write_text(dest.name + "\n")
    return dest, pointer
