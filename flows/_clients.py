"""PEC client tasks shared by the cutover, rollback and readiness flows (the logic is cutover/clients.py)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from checks.gates import Decision, clients_gate
from cutover.clients import ClientsChange, switch_clients
from cutover.plan import Plan
from flows._artifacts import publish_table

OPTS = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="switch PEC clients", task_run_name="PEC clients to {to}", **OPTS)
def switch_clients_task(plan: Plan, to: str) -> ClientsChange:
    """The pec_client role on the plan's client group: settings to ``to``'s provider, each client proven working."""
    change = switch_clients(plan, to)
    publish_table([c.as_row() for c in change.clients], f"pec-clients-{to}", f"PEC clients on {change.provider}")
    return change


@task(name="PEC clients in check mode", **OPTS)
def preview_clients_task(plan: Plan) -> ClientsChange:
    """Every client host reached by Ansible; what the switch to the target would change (check mode, diff)."""
    return switch_clients(plan, "target", dry_run=True)


def clients_decision(plan: Plan, change: ClientsChange) -> Decision:
    return clients_gate(change.results(), plan.gates)
