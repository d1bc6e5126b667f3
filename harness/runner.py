"""`bench run`: plan a suite, measure it in a worker process, log every row, write the table.

The plan is a list of units (technique, case, dtype, direction), each with the
implementations that take part. Rows are appended to the run's log as they arrive; if
the worker dies the implementation in flight gets a `crashed` row and a fresh worker
takes the rest; if the runner itself dies, `--resume` skips every row already logged.
"""

from __future__ import annotations

import collections
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import torch

from harness import registry, suites
from harness.cases import format_value
from harness.errors import UsageError
from harness.results import Row, RunHeader, RunLog, finalize, utc_now
from harness.suites import Suite, Unit
from harness.worker import Session, WorkerProcess, WorkerSettings


@dataclass(frozen=True)
class RunOptions:
    suite: str
    tier: str | None = None  # None: quick, or the resumed run's tier
    impls: tuple[str, ...] = ()  # empty: every implementation
    dtypes: tuple[str, ...] = ()  # empty: the suite's dtypes
    cases: tuple[str, ...] = ()  # "K=V" filters on case parameters, e.g. ("D=64", "causal=true")
    resume: Path | bool = False  # True: the newest unfinished log of this suite and device
    results_dir: Path = Path("results")
    isolate: bool = True  # measure in a child process (False: in this process, for debugging)
    unit_timeout_s: float = 1800.0  # per implementation, compilation and autotuning included


@dataclass(frozen=True)
class PlannedUnit:
    unit: Unit
    impls: tuple[str, ...]


def device_for(suite: Suite) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if suite.requires == "cuda":
        raise UsageError(f"suite {suite.name!r} needs a CUDA GPU (its shapes are sized for one) and none is visible; "
                         "`bench run smoke` runs the kernels in Triton's interpreter on this machine")
    return torch.device("cpu")


def plan(suite: Suite, impls: Iterable[str] = (), dtypes: Iterable[str] = (),
         cases: Iterable[str] = (), here: bool = True) -> list[PlannedUnit]:
    """Expand the suite against the registry, applying the --impl, --dtype and --case
    filters; refuse a filter that names nothing, or an explicitly named implementation that
    cannot run at any of the suite's cases, or (with `here`) on this machine."""
    try:
        wanted_dtypes = {registry.parse_dtype(d) for d in dtypes} if dtypes else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    units = [u for u in suite.units if wanted_dtypes is None or u.dtype in wanted_dtypes]
    if not units:
        have = sorted({registry.dtype_name(u.dtype) for u in suite.units})
        raise UsageError(f"suite {suite.name!r} has no cases in dtype {', '.join(dtypes)} (its dtypes: {', '.join(have)})")
    units = _matching(units, list(cases), suite.name)
    # Names repeat across techniques ("reference", "triton"): look an implementation up with its technique.
    by_technique = {t: {impl.name: impl for impl in registry.implementations(t)} for t in suite.techniques}
    known = {name for table in by_technique.values() for name in table}
    unknown = [name for name in impls if name not in known]
    if unknown:
        raise UsageError(f"unknown implementation {unknown[0]!r} for suite {suite.name!r} "
                         f"(available: {', '.join(sorted(known))})")
    for name in impls if here else ():
        reason = next(filter(None, (table[name].missing_needs() for table in by_technique.values() if name in table)), None)
        if reason:
            raise UsageError(f"implementation {name!r} cannot run here: it {reason}")
    planned = []
    runnable = collections.Counter()
    for unit in units:
        tech = registry.technique(unit.technique)
        names = tuple(impl.name for impl in registry.implementations(unit.technique)
                      if (not impls or impl.name in impls) and impl.name not in unit.exclude)
        for name in names:
            if by_technique[unit.technique][name].why_not(tech, unit.case, unit.dtype, unit.direction) is None:
                runnable[name] += 1
        if names:
            planned.append(PlannedUnit(unit, names))
    for name in impls:
        if not runnable[name]:
            example = next((p.unit for p in planned if name in p.impls), None)
            if example is None:
                raise UsageError(f"implementation {name!r} is excluded from every case of suite {suite.name!r}")
            reason = by_technique[example.technique][name].why_not(registry.technique(example.technique), example.case,
                                                                   example.dtype, example.direction)
            raise UsageError(f"implementation {name!r} supports none of the selected cases (e.g. {example.case.id}: {reason})")
    return planned


def _matching(units: list[Unit], filters: list[str], suite_name: str) -> list[Unit]:
    """The units whose case has every KEY=VALUE of `filters` (values written as in case ids)."""
    wanted = {}
    for text in filters:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise UsageError(f"--case takes KEY=VALUE (e.g. D=64 or causal=true), got {text!r}")
        wanted[key.strip()] = value.strip()
    parameters = {key for unit in units for key in unit.case.keys()}
    unknown = sorted(set(wanted) - parameters)
    if unknown:
        raise UsageError(f"--case names {unknown[0]!r}, not a parameter of suite {suite_name!r} "
                         f"(parameters: {', '.join(sorted(parameters))})")
    kept = [u for u in units
            if all(key in u.case.keys() and format_value(u.case[key]) == value for key, value in wanted.items())]
    if not kept:
        raise UsageError(f"no case of suite {suite_name!r} matches {', '.join(filters)}")
    return kept


class Runner:
    def __init__(self, options: RunOptions, on_row: Callable[[Row, int, int], None] = lambda row, done, total: None,
                 on_begin: Callable[[PlannedUnit, str], None] = lambda planned, impl: None):
        self.options = options
        self.on_row = on_row
        self.on_begin = on_begin
        self.worker: WorkerProcess | LocalWorker | None = None

    def run(self) -> Path:
        """Measure the suite; return the finished table's path."""
        use_interpreter_without_gpu()
        registry.load_all()
        try:
            log, header, planned, done = self._open_log()
            total = sum(len(p.impls) for p in planned)
            finished = sum(1 for p in planned for name in p.impls if _key(p.unit, name) in done)
            settings = WorkerSettings(self.device_type, header.selection["base_seed"], header.ceilings)
            for item in planned:
                remaining = [name for name in item.impls if _key(item.unit, name) not in done]
                while remaining:
                    for row in self._measure(item, remaining, settings):
                        log.append(self._complete(row, header))
                        remaining.remove(row.impl)
                        finished += 1
                        self.on_row(row, finished, total)
        finally:
            self._stop_worker()
        return finalize(log)

    # -- the log -------------------------------------------------------------------------------

    def _open_log(self) -> tuple[RunLog, RunHeader, list[PlannedUnit], set]:
        """The run's log and header, its plan, and the keys of the rows already logged."""
        opts = self.options
        if opts.resume:
            log = self._log_to_resume()
            header, rows = log.read()
            if header.suite != Path(opts.suite).stem:
                raise UsageError(f"{log.path} is a run of suite {header.suite!r}, not {opts.suite!r}")
            if opts.tier or opts.impls or opts.dtypes or opts.cases:
                raise UsageError("--resume continues a run with its own tier and selection; "
                                 "drop --tier, --impl, --dtype and --case")
            self.device_type = "cuda" if header.environment.get("interpreter") is False else "cpu"
            self._check_same_device(header)
            self._check_same_code(header)
            suite = suites.load(header.selection.get("suite_file") or header.suite, header.tier)
            planned = plan(suite, header.selection.get("impls", ()), header.selection.get("dtypes", ()),
                           header.selection.get("cases", ()))
            return log, header, planned, {row.key for row in rows}
        tier = opts.tier or "quick"
        suite = suites.load(opts.suite, tier)
        device = device_for(suite)
        self.device_type = device.type
        planned = plan(suite, opts.impls, opts.dtypes, opts.cases)  # refuses bad filters before any work
        dtypes = sorted({registry.dtype_name(u.dtype) for u in suite.units})
        base_seed = random.SystemRandom().randrange(2**31)
        self.worker = self._start_worker(WorkerSettings(device.type, base_seed))
        self.worker.send("prepare", dtypes)
        reply = self.worker.receive(self.options.unit_timeout_s)
        if not reply or reply[0] != "prepared":
            raise RuntimeError(f"the worker could not start: {reply[1] if reply else 'no answer'}")
        environment, ceilings = reply[1]
        started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        run_id = f"{started}_{environment['git_sha']}"
        header = RunHeader(run_id=run_id, suite=suite.name, tier=tier,
                           selection={"impls": list(opts.impls), "dtypes": list(opts.dtypes), "cases": list(opts.cases),
                                      "base_seed": base_seed,
                                      "suite_file": opts.suite if opts.suite.endswith(".toml") else ""},
                           environment=environment, ceilings=ceilings, started=started)
        path = opts.results_dir / suite.name / environment["device"] / f"{run_id}.jsonl"
        return RunLog.create(path, header), header, planned, set()

    def _log_to_resume(self) -> RunLog:
        resume = self.options.resume
        if isinstance(resume, Path):
            if not resume.exists():
                raise UsageError(f"nothing to resume: {resume} does not exist")
            return RunLog(resume)
        logs = sorted((self.options.results_dir / Path(self.options.suite).stem).glob("*/*.jsonl"),
                      key=lambda p: p.stat().st_mtime)
        here = "cuda" if torch.cuda.is_available() else "cpu-interpreter"
        logs = [p for p in logs if (p.parent.name == "cpu-interpreter") == (here == "cpu-interpreter")]
        if not logs:
            raise UsageError(f"nothing to resume: no unfinished run of suite {self.options.suite!r} "
                             f"under {self.options.results_dir}")
        return RunLog(logs[-1])

    def _check_same_device(self, header: RunHeader) -> None:
        if self.device_type == "cuda" and not torch.cuda.is_available():
            raise UsageError("this run was measured on a GPU and none is visible here; resume it on the same machine")
        if self.device_type == "cuda":
            name = torch.cuda.get_device_properties(0).name
            if name != header.environment.get("gpu"):
                raise UsageError(f"this run was measured on {header.environment.get('gpu')}, this machine has {name}")

    def _check_same_code(self, header: RunHeader) -> None:
        from harness.environment import git_revision

        sha, dirty = git_revision()
        then = header.environment.get("git_sha"), header.environment.get("git_dirty")
        if (sha, dirty) != then:
            raise UsageError(f"this run was measured at git {then[0]}{' (dirty)' if then[1] else ''}, the checkout is at "
                             f"{sha}{' (dirty)' if dirty else ''}: one table must come from one version of the code")

    def _complete(self, row: Row, header: RunHeader) -> Row:
        env = header.environment
        return replace(row, run_id=header.run_id, suite=header.suite, tier=header.tier, gpu=env["gpu"],
                       device=env["device"], compute_capability=env["compute_capability"], driver=env["driver"],
                       cuda=env["cuda"], torch=env["torch"], triton=env["triton"], git_sha=env["git_sha"],
                       git_dirty=env["git_dirty"])

    # -- the worker ----------------------------------------------------------------------------

    def _measure(self, item: PlannedUnit, impls: list[str], settings: WorkerSettings) -> Iterable[Row]:
        """Rows for `impls` at this unit; a dead or hung worker yields a row for the
        implementation in flight and stops, and the caller asks again for the rest."""
        if self.worker is None:
            self.worker = self._start_worker(settings)
        self.worker.send("unit", (item.unit, impls))
        in_flight, since = impls[0], time.perf_counter()
        while True:
            message = self.worker.receive(self.options.unit_timeout_s)
            if message is None:
                self._stop_worker()
                yield self._failure(item, in_flight, "timeout", f"no result within {self.options.unit_timeout_s:.0f} s",
                                    time.perf_counter() - since)
                return
            kind, payload = message
            if kind == "begin":
                in_flight, since = payload, time.perf_counter()
                self.on_begin(item, payload)
            elif kind == "row":
                yield payload
            elif kind == "poisoned":
                self._stop_worker()  # the CUDA context is unusable: a fresh process takes the rest
                return
            elif kind == "died":
                self.worker = None
                yield self._failure(item, in_flight, "crashed", str(payload), time.perf_counter() - since)
                return
            elif kind == "done":
                return

    def _failure(self, item: PlannedUnit, impl_name: str, status: str, reason: str, elapsed_s: float) -> Row:
        impl = next(i for i in registry.implementations(item.unit.technique) if i.name == impl_name)
        return Row(technique=item.unit.technique, impl=impl_name, role=impl.role, case=item.unit.case.to_json(),
                   case_id=item.unit.case.id, dtype=registry.dtype_name(item.unit.dtype), direction=item.unit.direction,
                   status=status, reason=reason, elapsed_s=round(elapsed_s, 2), timestamp=utc_now())

    def _start_worker(self, settings: WorkerSettings):
        return WorkerProcess(settings) if self.options.isolate else LocalWorker(settings)

    def _stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


class LocalWorker:
    """The worker's protocol served in this process (`--no-isolate`): same messages, no
    protection against crashes."""

    def __init__(self, settings: WorkerSettings):
        self.session = Session(settings)
        self.inbox: collections.deque = collections.deque()

    def send(self, request: str, payload: object) -> None:
        if request == "prepare":
            self.inbox.append(("prepared", self.session.prepare(payload)))
        else:
            unit, impl_names = payload
            self.session.run_unit(unit, impl_names, lambda kind, p: self.inbox.append((kind, p)))

    def receive(self, timeout_s: float) -> tuple[str, object] | None:
        return self.inbox.popleft() if self.inbox else None

    def stop(self) -> None:
        self.inbox.clear()


def _key(unit: Unit, impl: str) -> tuple[str, str, str, str, str]:
    return (unit.technique, impl, unit.case.id, registry.dtype_name(unit.dtype), unit.direction)


def close_early(path: Path) -> tuple[Path, list[str]]:
    """The table of a run that will not be finished (its machine gone, its time spent), from
    its log as far as it got, and the planned rows it lacks ("technique impl case dtype
    direction"), which its sidecar names under `closed_early`. Nothing is measured."""
    if path.suffix != ".jsonl" or not path.is_file():
        raise UsageError(f"{path}: not a run's log (an unfinished run's .jsonl under results/)")
    log = RunLog(path)
    header, rows = log.read()
    registry.load_all()
    suite = suites.load(header.selection.get("suite_file") or header.suite, header.tier)
    planned = plan(suite, header.selection.get("impls", ()), header.selection.get("dtypes", ()),
                   header.selection.get("cases", ()), here=False)
    done = {row.key for row in rows}
    missing = [" ".join(key) for p in planned for name in p.impls if (key := _key(p.unit, name)) not in done]
    table = finalize(log, closed_early={"measured": len(rows), "planned": len(rows) + len(missing),
                                        "not_measured": missing})
    return table, missing


def use_interpreter_without_gpu() -> None:
    """Before any kernel module is imported: with no GPU, Triton runs in its interpreter
    (the worker also applies the interpreter's bfloat16 fix, see harness/interpreter.py)."""
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
