"""The window has an end: how long a gate may wait for a human, what the plan decides when the window closes,
and which phases of the day overran their expected duration. Pure functions; the flows apply them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Literal

from cutover.plan import Plan


def gate_deadline(plan: Plan, *, started_inside: bool) -> datetime | None:
    """When a paused gate stops waiting: the window's ``abort_at`` or end. None for a run started outside the
    window by an override (the change board's reason stands for its own timing; the pause timeout still applies)."""
    return plan.window.closes_at if started_inside else None


@dataclass(frozen=True)
class PauseBudget:
    """How long a gate may pause, and whether the window closing (not the pause timeout) is what ends it."""

    timeout_s: float
    window_closes: bool

    @property
    def closed_already(self) -> bool:
        return self.window_closes and self.timeout_s <= 0


def pause_budget(plan: Plan, deadline: datetime | None, *, now: datetime | None = None) -> PauseBudget:
    now = now or datetime.now(timezone.utc)
    timeout = float(plan.gates.pause_timeout_s)
    if deadline is None:
        return PauseBudget(timeout, False)
    left = (deadline - now).total_seconds()
    return PauseBudget(max(0.0, left), True) if left <= timeout else PauseBudget(timeout, False)


def window_closed(plan: Plan, deadline: datetime) -> tuple[Literal["rollback", "proceed"], str]:
    """What the plan's rule does with a gate still undecided when the window closes, and how it is recorded."""
    which = "abort_at" if plan.window.abort_at is not None else "end"
    rule = plan.window.on_close
    when = deadline.astimezone(plan.window.start.tzinfo).isoformat(timespec="seconds")
    return ("rollback" if rule == "rollback" else "proceed",
            f"window closed ({which} {when}) with no decision → {rule} (plan window.on_close: {rule})")


_PHASE_PREFIXES = (("freeze", "freeze"), ("switch mx", "switch"), ("dns checks", "dns"),
                   ("final delta", "final_delta"), ("accessibility", "access"), ("complete", "complete"),
                   ("rollback", "rollback"))


def phase_key(name: str) -> str | None:
    """The plan's ``window.phase_minutes`` key of a report phase ("DNS checks and gate (attempt 2)" → dns)."""
    low = name.lower()
    return next((key for prefix, key in _PHASE_PREFIXES if low.startswith(prefix)), None)


@dataclass(frozen=True)
class PhaseTiming:
    key: str
    minutes: float
    expected: float

    @property
    def overran(self) -> bool:
        return self.minutes > self.expected

    def describe(self) -> str:
        text = f"{self.key}: {self.minutes:.1f} min (expected ≤ {self.expected:g})"
        return f"OVERRUN {text}" if self.overran else text


def phase_timings(plan: Plan, timings: Iterable[tuple[str, float, str]]) -> list[PhaseTiming]:
    """Minutes per phase key (retried gates summed) against the plan's expectation, in the order they ran."""
    spent: dict[str, float] = {}
    for name, seconds, _status in timings:
        if (key := phase_key(name)) is not None:
            spent[key] = spent.get(key, 0.0) + seconds / 60
    return [PhaseTiming(k, m, plan.window.phase_minutes[k]) for k, m in spent.items()]


__all__ = ["gate_deadline", "PauseBudget", "pause_budget", "window_closed", "phase_key", "PhaseTiming",
           "phase_timings"]
