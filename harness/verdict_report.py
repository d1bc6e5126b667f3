"""How a comparison is shown: one table per suite (rich in a terminal, markdown for a job
page), each case's verdict, latency ratio and interval, and its changes of correctness,
determinism and memory. Reads the judged cases; judges nothing."""

from __future__ import annotations

import math
from collections import Counter

from rich.table import Table

from harness.compare import FAILING, VERDICTS, Judged, Pair, memory_ratio

COLUMNS = ("verdict", "technique", "case", "dtype", "dir", "impl", "base ms", "cand ms", "ratio", "CI", "status",
           "rel err x", "repeat", "memory", "note")
NOTEWORTHY = tuple(v for v in VERDICTS if v not in ("same", "not timed", "only in candidate", "only in baseline"))
_STYLES = {"invalid": "yellow", "inconclusive": "yellow", "unconfirmed": "yellow", "peer slower": "yellow",
           "peer nondeterministic": "yellow", "faster": "green", "fixed": "green", "not timed": "dim",
           "only in baseline": "dim", "only in candidate": "dim"}


def line(judged: Judged) -> dict[str, str]:
    technique, impl, case_id, dtype, direction = judged.key
    base, cand = judged.base or {}, judged.cand or {}
    memory = memory_ratio(judged.base, judged.cand)
    b_err, c_err = base.get("rel_err"), cand.get("rel_err")
    return {
        "verdict": judged.verdict,
        "technique": technique,
        "case": case_id,
        "dtype": dtype,
        "dir": direction,
        "impl": impl,
        "base ms": _ms(base) if base.get("status") == "ok" else "",
        "cand ms": _ms(cand) if cand.get("status") == "ok" else "",
        "ratio": f"{judged.ratio:.3f}" if judged.ratio else "",
        "CI": f"{judged.low:.3f}-{judged.high:.3f}" if judged.ratio else "",
        "status": _change(base.get("status"), cand.get("status")),
        "rel err x": f"{c_err / b_err:.2f}" if _pos(b_err) and _num(c_err) and base.get("status") == "ok"
        and cand.get("status") == "ok" else "",
        "repeat": _change(*(_repeat(r) for r in (base, cand))),
        "memory": f"{memory - 1:+.1%}" if memory is not None else "",
        "note": "; ".join(judged.notes),
    }


def counts(cases: list[Judged]) -> Counter:
    return Counter(c.verdict for c in cases)


def count_text(cases: list[Judged]) -> str:
    found = counts(cases)
    return ", ".join(f"{found[v]} {v}" for v in VERDICTS if found[v])


def rich_table(pair: Pair, cases: list[Judged] | None = None, title: str = "") -> Table:
    table = Table(title=title or heading(pair), show_lines=False)
    for column in COLUMNS:
        table.add_column(column, overflow="fold", max_width=60 if column == "note" else None)
    for judged in pair.cases if cases is None else cases:
        style = "red" if judged.verdict in FAILING else _STYLES.get(judged.verdict)
        table.add_row(*line(judged).values(), style=style)
    return table


def plain_lines(cases: list[Judged]) -> list[str]:
    """One line per case, for a log (a CI job's output is no terminal, and a wide table folds)."""
    out = []
    for judged in cases:
        cells = line(judged)
        timing = ""
        if judged.ratio:
            timing = f": {cells['base ms']} -> {cells['cand ms']} ms, ratio {cells['ratio']} ({cells['CI']})"
        changes = [f"{name} {cells[name]}" for name in ("status", "repeat") if " -> " in cells[name]]
        if cells["memory"] and cells["memory"] not in ("+0.0%", "-0.0%"):
            changes.append(f"memory {cells['memory']}")
        details = "; ".join(changes + judged.notes)
        out.append(f"{judged.verdict}: {' '.join(judged.key[i] for i in (0, 2, 3, 4, 1))}{timing}"
                   + (f" [{details}]" if details else ""))
    return out


def heading(pair: Pair) -> str:
    base = f"{pair.base_path} (git {pair.base_env.get('git_sha', '?')})" if pair.base_path else "no baseline"
    return (f"{pair.suite}: {pair.cand_path} (git {pair.cand_env.get('git_sha', '?')}) against {base}"
            f"\n{pair.cand_env.get('gpu', '')}: {count_text(pair.cases)}")


def markdown_table(cases: list[Judged]) -> str:
    header = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join(" --- " for _ in COLUMNS) + "|"
    body = []
    for judged in cases:
        cells = line(judged)
        cells["verdict"] = f"**{judged.verdict}**" if judged.fails else judged.verdict
        body.append("| " + " | ".join(str(v).replace("|", "/") for v in cells.values()) + " |")
    return "\n".join([header, rule, *body]) + "\n"


def markdown(pairs: list[Pair], title: str, rule_text: str, passed: bool | None = None,
             full: bool = True) -> str:
    """A report for a job page: the outcome, the runs compared, then per suite the cases
    that need a look (all cases when full, else folded away)."""
    cases = [c for p in pairs for c in p.cases]
    failing = [c for c in cases if c.fails]
    out = [f"## {title}" + ("" if passed is None else f": {'PASS' if passed else 'FAIL'}"), ""]
    if passed is not None:
        out.append(f"{len(failing)} failing of {len(cases)} cases: {count_text(cases) or 'none'}.")
        out.append("")
    out += [f"Rule: {rule_text}.", "", "| suite | baseline | candidate | GPU | notes |", "| --- | --- | --- | --- | --- |"]
    for pair in pairs:
        base = f"`{pair.base_path}` (git {pair.base_env.get('git_sha', '?')})" if pair.base_path else "none"
        out.append(f"| {pair.suite} | {base} | `{pair.cand_path}` (git {pair.cand_env.get('git_sha', '?')}) | "
                   f"{pair.cand_env.get('gpu', '')} | {'; '.join(pair.notes)} |")
    for pair in pairs:
        if not pair.cases:
            continue
        out += ["", f"### {pair.suite}", "", count_text(pair.cases), ""]
        if full:
            out.append(markdown_table(pair.cases))
            continue
        look = [c for c in pair.cases if c.verdict in NOTEWORTHY]
        if look:
            out.append(markdown_table(look))
        out += [f"<details><summary>all {len(pair.cases)} cases</summary>", "", markdown_table(pair.cases),
                "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


def _ms(row: dict) -> str:
    value = row.get("median_ms")
    return f"{value:.4g}" if _num(value) else ""


def _repeat(row: dict) -> str:
    value = row.get("bitwise_repeatable")
    return "" if value is None else ("bitwise" if value else "differs")


def _change(before, after) -> str:
    before, after = before or "", after or ""
    if not before or not after or before == after:
        return after or before
    return f"{before} -> {after}"


def _num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pos(value) -> bool:
    return _num(value) and value > 0
