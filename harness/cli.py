"""The `bench` command: list, run, show, env.

Bad input (an unknown suite, implementation or dtype, a case no selected kernel
supports, no GPU for a GPU-only implementation, a corrupt or foreign result file) prints
one line starting with "error:" and exits with 2, never a traceback. `bench run` exits
with 1 when a row failed (incorrect, error, oom, crashed, timeout), 0 when none did.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from harness.errors import UsageError

console = Console()


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

    from harness import report, results
    from harness.runner import Runner, RunOptions

    resume: Path | bool = Path(args.resume) if args.resume not in (None, True) else bool(args.resume)
    options = RunOptions(suite=args.suite, tier=args.tier, impls=tuple(_split(args.impl)),
                         dtypes=tuple(_split(args.dtype)), cases=tuple(_split(args.case)), resume=resume,
                         results_dir=Path(args.results),
                         isolate=not args.no_isolate)
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
    p.add_argument("--impl", action="append", help="only these implementations (comma-separated or repeated)")
    p.add_argument("--dtype", action="append", help="only these dtypes (bfloat16, float16, float32)")
    p.add_argument("--case", action="append", help="only cases with these parameters, KEY=VALUE (e.g. D=64,causal=true)")
    p.add_argument("--resume", nargs="?", const=True, default=None,
                   help="continue the newest unfinished run of this suite (or the given .jsonl log)")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--no-isolate", action="store_true", help="measure in this process (no crash isolation)")
    p.set_defaults(command=cmd_run)

    p = sub.add_parser("show", help="print a result table")
    p.add_argument("file", help="a .parquet result table (or a .jsonl log of a run in progress)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table (for docs/)")
    p.add_argument("--impl", action="append", help="only these implementations (comma-separated or repeated)")
    p.set_defaults(command=cmd_show)

    p = sub.add_parser("env", help="print what this machine's results would depend on")
    p.set_defaults(command=cmd_env)
    return parser


if __name__ == "__main__":
    sys.exit(main())
