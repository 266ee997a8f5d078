"""A run's report for auditors: phases in order with timings, checks (expected vs observed), decisions.

Pure data plus a markdown renderer; the flows publish it as a Prefect artifact, the CLI can print it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Iterator

from cutover.results import CheckResult, markdown_table


@dataclass
class Phase:
    name: str
    started_at: str
    seconds: float = 0.0
    status: str = "running"  # ok, failed, skipped, running
    lines: list[str] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    title: str
    phases: list[Phase] = field(default_factory=list)
    verdict: str = ""
    notifications: list[str] = field(default_factory=list)  # one line per delivery: sent / failed, never the URL

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        """Time a phase; it is 'failed' if the block raises, else 'ok' unless the block set another status."""
        phase = Phase(name=name, started_at=_now())
        self.phases.append(phase)
        t0 = time.monotonic()
        try:
            yield phase
        except BaseException as exc:
            phase.status = "failed"
            phase.lines.append(f"failed: {exc}")
            raise
        finally:
            phase.seconds = time.monotonic() - t0
        if phase.status == "running":
            phase.status = "ok"

    def timings(self) -> list[tuple[str, float, str]]:
        return [(p.name, p.seconds, p.status) for p in self.phases]

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        if self.verdict:
            out += [f"**Verdict: {self.verdict}**", ""]
        out += ["| phase | status | seconds | started (UTC) |", "|---|---|---|---|"]
        out += [f"| {p.name} | {p.status} | {p.seconds:.1f} | {p.started_at} |" for p in self.phases]
        for p in self.phases:
            out += ["", f"## {p.name} ({p.status}, {p.seconds:.1f} s)", ""]
            out += [f"- {line}" for line in p.lines]
            if p.checks:
                out += ["", markdown_table([c.as_row() for c in p.checks])]
            for section in p.sections:
                out += ["", section]
        if self.notifications:
            out += ["", "## Notifications", ""] + [f"- {line}" for line in self.notifications]
        return "\n".join(out) + "\n"


def checks_summary(results: Iterable[CheckResult]) -> str:
    results = list(results)
    failed = [r for r in results if not r.ok]
    return f"{len(results) - len(failed)}/{len(results)} checks passed" + (
        "; failed: " + ", ".join(f"{r.name} {r.target}".strip() for r in failed) if failed else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_name(kind: str, plan_domain: str, source: str, target: str, mailboxes: int | None = None) -> str:
    """What the run list shows: what is being done to which domain, e.g. ``cutover pec.fnofi.it aruba→infocert``."""
    if kind in ("cutover", "rollback"):
        a, b = (source, target) if kind == "cutover" else (target, source)
        return f"{kind} {plan_domain} {a}→{b}"
    return f"{kind} {plan_domain}" + (f" ({mailboxes} mailboxes)" if mailboxes is not None else "")
