"""`bench gate`: pass or fail a candidate run against the baseline (docs/gating.md).

Exit 0 when no case fails, 1 when one does (wrong, broken, nondeterministic, slower, or more
memory when asked), 2 on bad input. With --confirm, every `slower` case is measured again
with the checkout's code on this machine and judged again against the baseline: it stays
`slower` only when the fresh measurement is slower too; else it becomes `unconfirmed` (or
`invalid` when the fresh clocks were unsteady, or whatever failing verdict the fresh row
earns, such as wrong). The report goes to the terminal, as markdown to
$GITHUB_STEP_SUMMARY when that is set, and as JSON where --json asks.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import compare, verdict_report
from harness.compare import Judged, Pair, Rule


@dataclass
class Outcome:
    pairs: list[Pair]
    rule: Rule
    confirmed: list[Judged] = field(default_factory=list)  # cases re-measured by --confirm
    confirm_tables: list[Path] = field(default_factory=list)

    @property
    def cases(self) -> list[Judged]:
        return [c for p in self.pairs for c in p.cases]

    @property
    def failing(self) -> list[Judged]:
        return [c for c in self.cases if c.fails]

    @property
    def passed(self) -> bool:
        return not self.failing

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def run(base: Path, cand: Path, rule: Rule, force: bool = False) -> Outcome:
    return Outcome(compare.pairs(base, cand, rule, force), rule)


def rejudge(outcome: Outcome, fresh: dict[tuple[str, tuple], dict[str, Any]], tables: list[Path]) -> None:
    """Judge each flagged case again on its fresh row, (suite, key) -> row; the verdict
    stands only if the re-measurement agrees."""
    outcome.confirm_tables = list(tables)
    for pair in outcome.pairs:
        for index, judged in enumerate(pair.cases):
            if judged.verdict != "slower":
                continue
            row = fresh.get((pair.suite, judged.key))
            if row is None:
                judged.notes.append("not re-measured: the case is not in the suite any more")
                continue
            again = compare.judge(pair.suite, judged.key, judged.base, row, outcome.rule)
            first = f"first measured {judged.ratio:.3f} ({judged.low:.3f}-{judged.high:.3f})"
            if again.verdict == "slower":
                again.notes.insert(0, f"confirmed: re-measured {again.ratio:.3f} ({again.low:.3f}-{again.high:.3f}), "
                                      + first)
            elif again.verdict == "invalid":
                again.notes.insert(0, f"re-measurement not judgeable, so not confirmed; {first}")
            elif not again.fails:
                fresh_ratio = f"{again.ratio:.3f}" if again.ratio else "no ratio"
                again.notes.insert(0, f"not confirmed: re-measured {fresh_ratio} ({again.verdict}), {first}")
                again.verdict = "unconfirmed"
            else:
                again.notes.insert(0, f"re-measured: {again.verdict}; {first}")
            pair.cases[index] = again
            outcome.confirmed.append(again)
        pair.cases.sort(key=compare.order)


def markdown(outcome: Outcome) -> str:
    text = verdict_report.markdown(outcome.pairs, "flashsuite gate", outcome.rule.describe(), outcome.passed,
                                   full=False)
    if outcome.confirm_tables or outcome.confirmed:
        tables = ", ".join(f"`{t}`" for t in outcome.confirm_tables) or "none"
        text += (f"\n--confirm re-measured {len(outcome.confirmed)} case(s) "
                 f"({sum(c.verdict == 'slower' for c in outcome.confirmed)} confirmed slower); tables: {tables}\n")
    return text


def write_step_summary(text: str, environ=os.environ) -> Path | None:
    """Append to the job page's summary when running under GitHub Actions."""
    target = environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return Path(target)


def to_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "passed": outcome.passed,
        "rule": {k: v for k, v in vars(outcome.rule).items()},
        "counts": dict(verdict_report.counts(outcome.cases)),
        "suites": [{"suite": p.suite, "baseline": str(p.base_path) if p.base_path else None,
                    "candidate": str(p.cand_path), "notes": p.notes} for p in outcome.pairs],
        "confirm_tables": [str(t) for t in outcome.confirm_tables],
        "cases": [_case_json(c) for c in outcome.cases],
    }


def write_json(outcome: Outcome, path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(to_json(outcome), indent=1) + "\n")


def _case_json(judged: Judged) -> dict[str, Any]:
    base, cand = judged.base or {}, judged.cand or {}
    return {
        "suite": judged.suite, **dict(zip(compare.KEY, judged.key)), "verdict": judged.verdict, "fails": judged.fails,
        "ratio": _finite(judged.ratio), "low": _finite(judged.low), "high": _finite(judged.high),
        "base_median_ms": _finite(base.get("median_ms")), "cand_median_ms": _finite(cand.get("median_ms")),
        "base_status": base.get("status"), "cand_status": cand.get("status"), "notes": judged.notes,
    }


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None
