"""The rollback deadline: after it, moving the MX back to the source needs an override with a reason.

Aruba checks certified third-level domains daily; a domain whose MX no longer points to Aruba is notified and
dropped from its certified domains after about 7 days (Aruba's DNS guide). A rollback after that would point the
domain's mail at a provider that no longer accepts it. So the deadline is the plan's ``rollback_until``, else the
moment the MX switched to the target (journaled by :func:`cutover.dnschange.switch_mx`) + 7 days. While the MX is
on the source (never switched, or switched back since) there is no deadline: Aruba still serves the domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cutover.dnschange import switched_to_target_at
from cutover.errors import RollbackDeadlineError
from cutover.plan import Plan

ARUBA_DROPS_AFTER = timedelta(days=7)


@dataclass(frozen=True)
class RollbackDeadline:
    """Whether a rollback may run now, and why (``deadline`` None: no deadline applies or none is known)."""

    allowed: bool
    now: datetime
    deadline: datetime | None
    basis: str  # where the deadline comes from, in words
    override_reason: str = ""

    @property
    def passed(self) -> bool:
        return self.deadline is not None and self.now >= self.deadline

    def describe(self) -> str:
        if self.deadline is None:
            return f"no rollback deadline applies ({self.basis})"
        when = self.deadline.isoformat(timespec="minutes")
        if not self.passed:
            return f"rollback possible until {when} ({self.basis})"
        if self.allowed:
            return f"rollback deadline {when} PASSED ({self.basis}); rolled back by override: {self.override_reason}"
        return f"rollback deadline {when} passed ({self.basis})"


def rollback_deadline(plan: Plan) -> tuple[datetime | None, str]:
    """The deadline in force and its basis in words; (None, why) when none applies."""
    switched = switched_to_target_at(plan)
    if plan.rollback_until is not None:
        if switched is None and _journaled_back(plan):
            return None, "the MX is back on the source"
        return plan.rollback_until, "plan rollback_until"
    if switched is None:
        return None, ("the MX is back on the source" if _journaled_back(plan) else
                      "no MX switch to the target recorded in the DNS journal")
    return switched + ARUBA_DROPS_AFTER, (f"MX switched to {plan.target.name} at "
                                          f"{switched.isoformat(timespec='minutes')} + 7 days: {plan.source.name} "
                                          "drops a domain whose MX left it after about 7 days")


def check_rollback_deadline(plan: Plan, *, now: datetime | None = None,
                            override_reason: str | None = None) -> RollbackDeadline:
    """Decide whether a rollback may run now: before the deadline, or after it only with an override reason."""
    now = now or datetime.now(timezone.utc)
    deadline, basis = rollback_deadline(plan)
    reason = (override_reason or "").strip()
    passed = deadline is not None and now >= deadline
    return RollbackDeadline(allowed=not passed or bool(reason), now=now, deadline=deadline, basis=basis,
                            override_reason=reason if passed else "")


def require_rollback_allowed(plan: Plan, *, now: datetime | None = None,
                             override_reason: str | None = None, how: str = "--override REASON") -> RollbackDeadline:
    """The decision, or RollbackDeadlineError naming the deadline and what to do."""
    decision = check_rollback_deadline(plan, now=now, override_reason=override_reason)
    if not decision.allowed:
        raise RollbackDeadlineError(
            f"rollback refused: {decision.describe()}; {plan.source.name} may no longer accept mail for {plan.domain}: "
            f"confirm with {plan.source.name} that the domain is still active, then give {how}")
    return decision


def _journaled_back(plan: Plan) -> bool:
    """True when the journal shows a changed switch to the source after the last one to the target."""
    from cutover.dnschange import read_journal

    last = None
    for entry in read_journal(plan):
        if entry.get("action") == "switch_mx" and entry.get("changed"):
            last = entry.get("to")
    return last == "source"


__all__ = ["ARUBA_DROPS_AFTER", "RollbackDeadline", "rollback_deadline", "check_rollback_deadline",
           "require_rollback_allowed"]
