"""Readiness (days before): every mailbox logged in on both providers; who must act, and why. With PEC clients in
the plan: every client host reached by Ansible, and what the day's switch would change (check mode)."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from checks.readiness import ReadinessReport, readiness as probe_readiness
from cutover.errors import ClientsError
from cutover.inventory import Inventory, load_inventory
from cutover.ledger import open_ledger
from cutover.plan import Plan, load_plan
from cutover.report import RunReport
from cutover.ttl import record_served_ttl
from flows._artifacts import publish_markdown, publish_report, publish_table, run_id, run_name_of
from flows._clients import preview_clients_task

DEFAULT_PLAN = "inventory/rehearsal/plan.yaml"


@task(name="log in to every mailbox on both providers", cache_policy=NO_CACHE, persist_result=False)
def probe_all(plan: Plan, inventory: Inventory) -> ReadinessReport:
    ledger = open_ledger(plan)  # quota headroom for what is still to copy
    try:
        return probe_readiness(plan, inventory, ledger=ledger)
    finally:
        ledger.close()


@flow(name="readiness", flow_run_name=run_name_of("readiness"), persist_result=False)
def readiness(plan_path: str = DEFAULT_PLAN) -> dict:
    plan = load_plan(plan_path)
    inventory = load_inventory(plan)
    report = RunReport(f"Readiness of {len(inventory)} mailboxes of {plan.domain} ({plan.source.name} → {plan.target.name})")
    with report.phase("readiness probes") as phase:
        result = probe_all(plan, inventory)
        summary = result.summary()
        phase.lines += [f"{status}: {count}" for status, count in summary.items()]
        if plan.reports_dir is not None:
            csv_path = plan.reports_dir / f"readiness-{run_id()[:8]}.csv"
            result.write_csv(csv_path)
            phase.lines.append(f"CSV for the members who must act: {csv_path}")
        phase.sections.append(result.markdown())
    with report.phase("served MX TTL") as phase:  # what the cutover's pre-flight must wait (see cutover/ttl.py)
        phase.lines.append(record_served_ttl(plan, f"readiness run {run_id()[:8]}").describe())
    clients_line = ""
    if plan.clients is not None:
        with report.phase(f"PEC client hosts: reachable, the switch to {plan.target.name} in check mode") as phase:
            try:
                preview = preview_clients_task(plan)
            except ClientsError as exc:  # a missing secret is an action for the operator, like a member's
                clients_line = f"PEC clients: {exc}"
                phase.status = "failed"
            else:
                clients_line = "PEC clients: " + preview.summary()
                phase.checks += preview.results()
                phase.sections.append(preview.markdown())
                if not preview.ok:
                    phase.status = "failed"
            phase.lines.append(clients_line)
    publish_table(result.rows(), "readiness-mailboxes", "readiness per mailbox")
    report.verdict = ("all mailboxes ready" if summary.get("ready", 0) == len(inventory) else
                      f"{len(inventory) - summary.get('ready', 0)} mailboxes need action") + \
        (f"; {clients_line}" if clients_line else "")
    publish_report(plan, report, "readiness-report")
    publish_markdown(result.markdown(), "readiness-summary", "who must act")
    return summary
