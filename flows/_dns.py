"""DNS tasks shared by the cutover and rollback flows."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from prefect import task
from prefect.cache_policies import NO_CACHE

from checks.dns import authoritative_converged, authoritative_records, resolver_propagation
from checks.gates import Decision, dns_gate
from cutover.dnschange import DnsChange, set_ttl, switch_mx
from cutover.plan import Plan
from cutover.results import CheckResult
from cutover.switch_mark import SwitchMark, try_switch_mark

OPTS = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="switch MX", task_run_name="switch MX to {to}", **OPTS)
def switch_mx_task(plan: Plan, to: str) -> DnsChange:
    return switch_mx(plan, to)


@task(name="switch mark", task_run_name="switch mark before the MX goes to {to}", **OPTS)
def switch_mark_task(plan: Plan, mailboxes: list, to: str, by: str) -> SwitchMark | str:
    """Both sides' UIDVALIDITY/UIDNEXT of every mailbox, recorded in the ledger right before the MX changes."""
    return try_switch_mark(plan, mailboxes, to=to, by=by)  # type: ignore[arg-type]


@task(name="set TTL", task_run_name="set MX TTL to {level}", **OPTS)
def set_ttl_task(plan: Plan, level: str) -> DnsChange:
    return set_ttl(plan, level)


@dataclass(frozen=True)
class DnsEvidence:
    authoritative: list[CheckResult]
    agreement: CheckResult
    propagation: CheckResult
    records: list[CheckResult] = field(default_factory=list)

    @property
    def all(self) -> list[CheckResult]:
        return [*self.authoritative, *self.records, self.agreement, self.propagation]


@task(name="DNS checks", task_run_name="DNS checks: MX and records on {expect} everywhere", **OPTS)
def dns_checks(plan: Plan, expect: str) -> DnsEvidence:
    """Every authoritative server (polled until they agree: one serial holds the MX and the records, changed in
    one update), its records, then the resolvers (MX and records), polled until converged or the deadline."""
    authoritative, agreement = authoritative_converged(plan, expect)
    records = authoritative_records(plan, expect)
    return DnsEvidence(authoritative, agreement, resolver_propagation(plan, expect), records)


def dns_decision(plan: Plan, evidence: DnsEvidence, gate: str) -> Decision:
    decision = dns_gate(evidence.authoritative, evidence.propagation, plan.gates, agreement=evidence.agreement,
                        records=evidence.records)
    return replace(decision, gate=gate)
