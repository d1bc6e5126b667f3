"""The `bench` command: list, run, close, show, env, compare, gate, export, promote, kernels.

Bad input (an unknown suite, implementation or dtype, a case no selected kernel
supports, no GPU for a GPU-only implementation, a corrupt or foreign result file, two
runs that cannot be compared) prints one line starting with "error:" and exits with 2,
never a traceback. `bench run` exits with 1 when a row failed (incorrect, error, oom,
crashed, timeout), 0 when none did; `bench gate` exits with 1 when a case regressed
(docs/gating.md), 0 when none did.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console

from harness.errors import UsageError

# Off a terminal (a CI log, a GPU machine's pipe) rich would squeeze every table into 80
# columns, one or two characters a cell; there a table takes the width its columns need, up
# to LOG_WIDTH. A terminal, or COLUMNS set, keeps rich's own width.
LOG_WIDTH = 250
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else LOG_WIDTH)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished rows are in the run's .jsonl log; `bench run SUITE --resume` continues",
              file=sys.stderr)
        return 130


def cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness import registry, suites
    from harness.runner import use_interpreter_without_gpu

    use_interpreter_without_gpu()
    registry.load_all()
    table = Table(title="techniques and implementations")
    for column in ("technique", "implementation", "role", "dtypes", "features", "available here"):
        table.add_column(column, overflow="fold")
    for name in registry.technique_names():
        for impl in registry.implementations(name):
            reason = impl.missing_needs()
            dtypes = ", ".join(sorted(registry.dtype_name(d) for d in impl.dtypes))
            table.add_row(name, impl.name, impl.role, dtypes, ", ".join(sorted(impl.features)),
                          "yes" if reason is None else f"no: {reason}", style=None if reason is None else "dim")
    console.print(table)
    console.print(f"suites: {', '.join(suites.available())}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harness import results
    from harness.runner import Runner, RunOptions

    resume: Path | bool = Path(args.resume) if args.resume not in (None, True) else bool(args.resume)
    options = RunOptions(suite=args.suite, tier=args.tier, impls=tuple(_split(args.impl)),
                         dtypes=tuple(_split(args.dtype)), cases=tuple(_split(args.case)), resume=resume,
                         results_dir=Path(args.results),
                         isolate=not args.no_isolate,
                         **({"unit_timeout_s": args.unit_timeout} if args.unit_timeout else {}))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(f"{args.suite}: preparing (environment, ceilings)", total=None)

        def on_begin(planned, impl: str) -> None:
            u = planned.unit
            progress.update(task, description=f"{u.technique} {u.case.id} {u.dtype} {u.direction}: {impl}")

        def on_row(row, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)
            if not console.is_terminal:  # a log file gets one line per row instead of a bar
                timing = f" {row.median_ms:.3f} ms" if row.median_ms is not None else ""
                print(f"[{done}/{total}] {row.technique} {row.case_id} {row.dtype} {row.direction} {row.impl}: "
                      f"{row.status}{timing} ({row.elapsed_s} s) {row.reason}", flush=True)
            elif row.status not in ("ok", "unavailable", "unsupported"):
                progress.console.print(f"[red]{row.impl} {row.case_id} {row.dtype} {row.direction}: "
                                       f"{row.status}: {row.reason}")

        table = Runner(options, on_row=on_row, on_begin=on_begin).run()
    frame = results.read_table(table)
    _print_summary(frame, str(table))
    failed = frame[~frame.status.isin(["ok", "unavailable", "unsupported"])]
    console.print(f"wrote {table} ({len(frame)} rows, {len(failed)} failed)")
    return 1 if len(failed) else 0  # a CI job fails on a wrong or broken kernel; the table is written either way


def cmd_close(args: argparse.Namespace) -> int:
    from harness.runner import close_early

    table, missing = close_early(Path(args.log))
    console.print(f"wrote {table} ({'every planned row' if not missing else f'{len(missing)} planned rows not measured'})",
                  soft_wrap=True)
    for key in missing:
        console.print(f"[dim]not measured: {key}", soft_wrap=True)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from harness import report, results

    frame = results.read_table(Path(args.file))
    wanted = _split(args.impl)
    if wanted:
        unknown = sorted(set(wanted) - set(frame["impl"]))
        if unknown:
            raise UsageError(f"{args.file} has no rows of implementation {unknown[0]!r} "
                             f"(it has: {', '.join(sorted(set(frame['impl'])))})")
        frame = frame[frame["impl"].isin(wanted)]
    if args.markdown:
        print(report.markdown(report.summarize(frame)), end="")
    else:
        sidecar = results.read_sidecar(Path(args.file))
        env = sidecar.get("environment", {})
        title = f"{args.file}"
        if env:
            title += f"\n{env.get('gpu')} | torch {env.get('torch')} | triton {env.get('triton')} | git {env.get('git_sha')}"
        _print_summary(frame, title)
    return 0


def _print_summary(frame, title: str) -> None:
    from harness import report

    console.print(report.rich_table(report.summarize(frame), title=title))
    for line in report.unavailable(frame):
        console.print(f"[dim]not run here: {line}")


def cmd_kernels(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.kernels import suite_kernels

    columns = ("technique", "impl", "kernel", "first case", "warps", "stages", "registers", "spill st/ld B",
               "shared KiB", "constants", "error")
    table = Table(title=f"{args.suite} ({args.tier}): Triton kernels compiled for {args.target}")
    for column in columns:
        table.add_column(column, overflow="fold")
    spilling = 0
    for row in suite_kernels(args.suite, args.tier, args.target, _split(args.impl), _split(args.dtype),
                             _split(args.case)):
        r = row.resources
        spilling += r.spills
        cells = (row.technique, row.impl, r.kernel, f"{row.case_id} {row.dtype} {row.direction}",
                 str(r.num_warps), str(r.num_stages), str(r.registers), f"{r.spill_store_bytes}/{r.spill_load_bytes}",
                 f"{r.shared_bytes / 1024:.0f}", " ".join(f"{k}={v}" for k, v in r.constants.items()), r.error)
        if console.is_terminal:
            table.add_row(*cells, style="red" if r.spills or r.error else None)
        else:  # a log: one line per kernel
            print("  ".join(f"{name}: {cell}" for name, cell in zip(columns, cells) if cell), flush=True)
    if console.is_terminal:
        console.print(table)
    print(f"{spilling} kernel(s) spill registers to local memory")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    import torch
    from rich.table import Table

    from harness import environment

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = environment.capture(device).to_dict()
    state = environment.gpu_state(device)
    table = Table(title="environment")
    table.add_column("key")
    table.add_column("value", overflow="fold")
    for key, value in env.items():
        table.add_row(key, str(value))
    if device.type == "cuda":
        table.add_row("sm clock (MHz)", f"{state.sm_clock_mhz} of max {state.sm_clock_max_mhz}")
        table.add_row("temperature (C)", str(state.temp_c))
        table.add_row("throttle reasons", ", ".join(state.throttle_reasons) or "none")
    console.print(table)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness import compare, gate, verdict_report

    rule = _rule(args)
    pairs = compare.pairs(Path(args.baseline), Path(args.candidate), rule, args.force)
    if args.json:
        gate.write_json(gate.Outcome(pairs, rule), Path(args.json))
    if args.markdown:
        print(verdict_report.markdown(pairs, "flashsuite compare", rule.describe()), end="")
        return 0
    for pair in pairs:
        _print_cases(pair, pair.cases)
    return 0


def _print_cases(pair, cases) -> None:
    """A rich table on a terminal; one line per case in a log (a CI job's output)."""
    from harness import verdict_report

    if console.is_terminal:
        console.print(verdict_report.rich_table(pair, cases))
    else:
        console.print(verdict_report.heading(pair), markup=False, highlight=False, soft_wrap=True)
        for text in verdict_report.plain_lines(cases):
            console.print(text, markup=False, highlight=False, soft_wrap=True)
    for note in pair.notes:
        console.print(f"{pair.suite}: {note}", markup=False, highlight=False, soft_wrap=True, style="dim")


def cmd_gate(args: argparse.Namespace) -> int:
    from harness import gate, verdict_report

    rule = _rule(args)
    outcome = gate.run(Path(args.baseline), Path(args.candidate), rule, args.force)
    if args.confirm:
        from harness import confirm

        def on_row(row, done: int, total: int) -> None:
            timing = f" {row.median_ms:.4g} ms" if row.median_ms is not None else ""
            print(f"[confirm {done}/{total}] {row.technique} {row.case_id} {row.dtype} {row.direction} {row.impl}: "
                  f"{row.status}{timing}", flush=True)

        flagged = sum(len(cases) for _, cases in confirm.flagged(outcome))
        if flagged:
            console.print(f"re-measuring {flagged} slower case(s) to confirm them")
        fresh, tables = confirm.remeasure(outcome, Path(args.confirm_results) if args.confirm_results else None,
                                          isolate=not args.no_isolate, force=args.force, on_row=on_row)
        gate.rejudge(outcome, fresh, tables)
    for pair in outcome.pairs:
        _print_cases(pair, pair.cases if args.all else [c for c in pair.cases if c.verdict in verdict_report.NOTEWORTHY])
    text = gate.markdown(outcome)
    written = gate.write_step_summary(text)
    if args.summary:
        Path(args.summary).write_text(text)
    if args.json:
        gate.write_json(outcome, Path(args.json))
    failing = outcome.failing
    verdict = "PASS" if outcome.passed else "FAIL"
    console.print(f"gate: {verdict}: {len(failing)} failing of {len(outcome.cases)} cases "
                  f"({verdict_report.count_text(outcome.cases) or 'none'})"
                  + (f"; summary appended to {written}" if written else ""))
    return outcome.exit_code


def cmd_export(args: argparse.Namespace) -> int:
    from harness import export

    text = export.write(Path(args.file), Path(args.output) if args.output else None)
    if args.output:
        count = text.count('"fullname"')
        console.print(f"wrote {args.output} ({count} benchmarks, {args.format} format)")
    else:
        print(text, end="")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from harness import baseline

    dest, pointer = baseline.promote(Path(args.file), Path(args.results), args.force)
    console.print(f"baseline: {dest} (named in {pointer})")
    console.print(f"to make it the baseline CI gates against: git add {dest} {dest.with_suffix('.json')} {pointer} "
                  "&& git commit")
    return 0


def _rule(args: argparse.Namespace):
    from harness.compare import Rule

    return Rule(max_slowdown=args.max_slowdown, confidence=args.confidence, max_clock_diff=args.max_clock_diff,
                throttle=args.throttle, min_samples=args.min_samples, max_memory_growth=args.max_memory_growth,
                gate_peers=args.gate_peers)


def _fraction(text: str) -> float:
    """'5%' or '0.05' -> 0.05; a bare number of 1 or more is ambiguous and refused."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage (e.g. 5%) or a fraction (e.g. 0.05)") from None
    if not text.endswith("%") and value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is ambiguous: write a percentage (e.g. {text}%) or a fraction below 1")
    if not 0 <= value < 10:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (0% to 1000%)")
    return value


def _confidence(text: str) -> float:
    value = _fraction(text)
    if not 0.5 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a confidence lies between 50% and 100% (e.g. 95%)")
    return value


def _rule_options(p: argparse.ArgumentParser) -> None:
    from harness.compare import THROTTLE_POLICIES, Rule

    p.add_argument("--max-slowdown", type=_fraction, default=Rule.max_slowdown, metavar="PCT",
                   help="the band of no change: slower only above 1+PCT (default 5%%)")
    p.add_argument("--confidence", type=_confidence, default=Rule.confidence, metavar="PCT",
                   help="of the ratio's bootstrap interval (default 95%%)")
    p.add_argument("--max-clock-diff", type=_fraction, default=Rule.max_clock_diff, metavar="PCT",
                   help="SM clocks of two rows further apart make a change invalid (default 2%%)")
    p.add_argument("--throttle", choices=THROTTLE_POLICIES, default=Rule.throttle,
                   help="throttle reasons that make a change invalid: hardware (thermal, hardware slowdown; default), "
                        "any (also the software power cap), ignore")
    p.add_argument("--min-samples", type=int, default=Rule.min_samples, help="fewer samples make a row invalid (default 5)")
    p.add_argument("--max-memory-growth", type=_fraction, default=None, metavar="PCT",
                   help="fail a case whose peak memory grew by more (default: memory is reported, never fails)")
    p.add_argument("--gate-peers", action="store_true",
                   help="a peer library's slowdown or lost repeatability fails too "
                        "(default: reported as 'peer slower' or 'peer nondeterministic')")
    p.add_argument("--force", action="store_true",
                   help="compare runs of different GPUs, suites or schema versions anyway")
    p.add_argument("--json", metavar="FILE", help="also write every case's verdict as JSON")


def _selection_options(p: argparse.ArgumentParser) -> None:
    """--impl, --dtype and --case: which of a suite's rows a command takes."""
    p.add_argument("--impl", action="append", help="only these implementations (comma-separated or repeated)")
    p.add_argument("--dtype", action="append", help="only these dtypes (bfloat16, float16, float32)")
    p.add_argument("--case", action="append", help="only cases with these parameters, KEY=VALUE (e.g. D=64,causal=true)")


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return seconds


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like every other bad input
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bench", description="flashsuite: benchmark and check the FlashAttention family of kernels")
    sub = parser.add_subparsers(dest="name", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="every technique and implementation, available here or not, and why")
    p.set_defaults(command=cmd_list)

    p = sub.add_parser("run", help="run a suite and write a result table")
    p.add_argument("suite", help="a suite name (suites/<name>.toml) or a path to a suite file")
    p.add_argument("--tier", choices=["quick", "full"], default=None, help="quick (default) or full")
    _selection_options(p)
    p.add_argument("--resume", nargs="?", const=True, default=None,
                   help="continue the newest unfinished run of this suite (or the given .jsonl log)")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--no-isolate", action="store_true", help="measure in this process (no crash isolation)")
    p.add_argument("--unit-timeout", type=_positive_seconds, default=None, metavar="SECONDS",
                   help="an implementation's limit at one case, compiling included: past it, its row is a "
                        "timeout and the run goes on (default: 1800)")
    p.set_defaults(command=cmd_run)

    p = sub.add_parser("close", help="write the table of a run that will not be finished from its log as far as "
                                     "it got (its sidecar names the rows not measured)")
    p.add_argument("log", help="the unfinished run's .jsonl log")
    p.set_defaults(command=cmd_close)

    p = sub.add_parser("show", help="print a result table")
    p.add_argument("file", help="a .parquet result table (or a .jsonl log of a run in progress)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table (for docs/)")
    p.add_argument("--impl", action="append", help="only these implementations (comma-separated or repeated)")
    p.set_defaults(command=cmd_show)

    p = sub.add_parser("env", help="print what this machine's results would depend on")
    p.set_defaults(command=cmd_env)

    tables = ("a .parquet table, or a folder of them (per suite and device: the table its BASELINE file names, "
              "else the newest)")
    p = sub.add_parser("compare", help="compare two runs case by case: latency ratios with intervals, correctness, "
                                       "determinism and memory changes")
    p.add_argument("baseline", help=tables)
    p.add_argument("candidate", help=tables)
    p.add_argument("--markdown", action="store_true", help="print markdown tables")
    _rule_options(p)
    p.set_defaults(command=cmd_compare)

    p = sub.add_parser("gate", help="pass (exit 0) or fail (exit 1) a run against the baseline; docs/gating.md")
    p.add_argument("--baseline", required=True, help=tables)
    p.add_argument("--candidate", required=True, help=tables)
    p.add_argument("--confirm", action="store_true",
                   help="measure the slower cases again with the checkout's code; they fail only if confirmed")
    p.add_argument("--confirm-results", metavar="DIR", help="where --confirm writes its tables (default: a temporary folder)")
    p.add_argument("--no-isolate", action="store_true", help="--confirm measures in this process")
    p.add_argument("--summary", metavar="FILE", help="also write the markdown summary here "
                                                     "(it is appended to $GITHUB_STEP_SUMMARY when that is set)")
    p.add_argument("--all", action="store_true", help="print every case, not only those that need a look")
    _rule_options(p)
    p.set_defaults(command=cmd_gate)

    p = sub.add_parser("export", help="write a result table in another tool's format (pytest-benchmark's JSON)")
    p.add_argument("file", help="a .parquet result table")
    p.add_argument("--format", choices=["pytest-benchmark"], default="pytest-benchmark")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")
    p.set_defaults(command=cmd_export)

    p = sub.add_parser("kernels", help="compile a suite's Triton kernels for a GPU that need not be here: "
                                       "registers, spills, shared memory (docs/methodology.md)")
    p.add_argument("suite", help="a suite name (suites/<name>.toml) or a path to a suite file")
    p.add_argument("--tier", choices=["quick", "full"], default="quick", help="quick (default) or full")
    p.add_argument("--target", default="sm90", help="the architecture to compile for: sm90 (default), sm100, sm80, sm8x")
    _selection_options(p)
    p.set_defaults(command=cmd_kernels)

    p = sub.add_parser("promote", help="make a run the baseline: copy it under results/ and name it in BASELINE")
    p.add_argument("file", help="a finished run's .parquet table")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--force", action="store_true", help="promote a run with failed rows anyway")
    p.set_defaults(command=cmd_promote)
    return parser


if __name__ == "__main__":
    sys.exit(main())
