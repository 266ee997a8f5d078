"""DNS tasks shared by the cutover and rollback flows."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from checks.dns import authoritative_agree, authoritative_mx, resolver_propagation
from checks.gates import Decision, dns_gate
from cutover.dnschange import DnsChange, set_ttl, switch_mx
from cutover.plan import Plan
from cutover.results import CheckResult

OPTS = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="switch MX", task_run_name="switch MX to {to}", **OPTS)
def switch_mx_task(plan: Plan, to: str) -> DnsChange:
    return switch_mx(plan, to)


@task(name="set TTL", task_run_name="set MX TTL to {level}", **OPTS)
def set_ttl_task(plan: Plan, level: str) -> DnsChange:
    return set_ttl(plan, level)


@task(name="DNS checks", task_run_name="DNS checks: MX on {expect} everywhere", **OPTS)
def dns_checks(plan: Plan, expect: str) -> tuple[list[CheckResult], CheckResult]:
    """Poll the resolvers until converged or the plan's deadline, then ask every authoritative server."""
    propagation = resolver_propagation(plan, expect)
    authoritative = authoritative_mx(plan, expect)
    return [*authoritative, authoritative_agree(authoritative)], propagation


def dns_decision(plan: Plan, authoritative: list[CheckResult], propagation: CheckResult, gate: str) -> Decision:
    decision = dns_gate(authoritative, propagation, plan.gates)
    return decision if decision.gate == gate else _renamed(decision, gate)


def _renamed(decision: Decision, gate: str) -> Decision:
    from dataclasses import replace
    return replace(decision, gate=gate)
