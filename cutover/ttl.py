"""The MX TTL the world may still cache: measured, journaled, and what the pre-flight must wait.

The plan's ``ttl.normal`` is what the zone *should* serve. What resolvers cache is what it *did* serve, and a
zone nobody has looked at for years may serve 86400. So the served TTL is measured and journaled (next to the
ledger, in the DNS journal) at the T-14 readiness run and at ``pec-cutover dns ttl --lower`` (the TTL just
before the lowering), and the pre-flight waits the longest TTL ever recorded, never less than ``ttl.normal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from cutover.dnschange import append_journal, read_journal, read_zone
from cutover.errors import DnsChangeError
from cutover.plan import Plan


@dataclass(frozen=True)
class ServedTtl:
    """One measurement of the MX TTL the primary serves (``ttl`` None: it could not be read, see ``error``)."""

    ttl: int | None
    by: str
    error: str = ""

    def describe(self) -> str:
        if self.ttl is None:
            return f"served MX TTL not measured ({self.error})"
        return f"served MX TTL {self.ttl}s recorded ({self.by})"


def record_served_ttl(plan: Plan, by: str, *, when: datetime | None = None) -> ServedTtl:
    """Ask the primary which MX TTL it serves and journal it; an unreachable primary is an answer, not a crash."""
    try:
        zone = read_zone(plan)
    except DnsChangeError as exc:
        return ServedTtl(None, by, str(exc))
    if zone.mx_ttl is None:
        return ServedTtl(None, by, f"no MX served for {plan.dns.zone}")
    append_journal(plan, {"action": "measure_ttl", "served_ttl": zone.mx_ttl, "by": by}, when=when)
    return ServedTtl(zone.mx_ttl, by)


@dataclass(frozen=True)
class TtlToWait:
    """How long the MX TTL must have been low before the switch, and why that long."""

    seconds: int
    reason: str


def ttl_to_wait(plan: Plan) -> TtlToWait:
    """The longest MX TTL the primary was seen serving above the cutover value (readiness measurements and the
    TTL just before each ``dns ttl --lower``) since the last restore, or the plan's ``ttl.normal`` when that is longer or nothing was seen."""
    seen: list[tuple[int, str]] = []
    for entry in read_journal(plan):
        if entry.get("action") == "measure_ttl":
            value, what = entry.get("served_ttl"), f"served at {entry.get('by', 'a measurement')} {entry.get('time', '')}"
        elif entry.get("action") == "set_ttl" and entry.get("level") == "normal":
            seen = []  # restored to the plan's value: what was served before no longer matters
            continue
        elif entry.get("action") == "set_ttl" and entry.get("level") == "cutover":
            value, what = entry.get("ttl_before"), f"served before `dns ttl --lower` {entry.get('time', '')}"
        else:
            continue
        if isinstance(value, int) and value > plan.dns.ttl.cutover:
            seen.append((value, what.strip()))
    normal = plan.dns.ttl.normal
    if not seen or max(seen)[0] <= normal:
        return TtlToWait(normal, f"the plan's ttl.normal ({normal}s)" + (
            "" if seen else "; no served TTL recorded (readiness and `dns ttl --lower` record it)"))
    value, what = max(seen)
    return TtlToWait(value, f"the TTL actually {what} ({value}s, longer than the plan's ttl.normal {normal}s)")


def keep_low_after_go(plan: Plan, *, now: datetime | None = None) -> datetime | None:
    """After a GO: when the normal TTL is due back (journaled), or None when ``ttl.restore_after`` is 0 (now)."""
    if not plan.dns.ttl.restore_after:
        return None
    due = (now or datetime.now(timezone.utc)) + plan.dns.ttl.restore_after
    append_journal(plan, {"action": "restore_due", "due": due.isoformat()}, when=now)
    return due


def restore_due(plan: Plan) -> datetime | None:
    """When the last GO said the normal TTL is due back, unless it was restored since; None otherwise."""
    due: datetime | None = None
    for entry in read_journal(plan):
        if entry.get("action") == "restore_due":
            try:
                due = datetime.fromisoformat(entry["due"])
            except (KeyError, ValueError):
                continue
        elif entry.get("action") == "set_ttl" and entry.get("level") == "normal":
            due = None
    return due


__all__ = ["ServedTtl", "TtlToWait", "record_served_ttl", "ttl_to_wait", "keep_low_after_go", "restore_due"]
