"""Rollback (from a gate, or by hand at any time): PEC clients back to the source first, then the MX and its
records, DNS verified, new mail copied back.

Safe to run twice: the clients' and the MX change are idempotent and the ledger remembers what was already copied
back. A step that fails does not stop the next (the clients failing must not keep the MX on the target). After the
rollback deadline (``cutover.rollback_deadline``) it refuses, before changing anything, unless given an override.
"""

from __future__ import annotations

from prefect import flow

from checks.gates import Verdict
from cutover import freeze
from cutover.clients import surroundings
from cutover.errors import ClientsError, CutoverError, RollbackDeadlineError
from cutover.inventory import load_inventory
from cutover.operators import identify
from cutover.plan import load_plan
from cutover.report import RunReport, checks_summary
from cutover.rollback_deadline import require_rollback_allowed
from flows._artifacts import (announce, log, publish_report, requested_at, run_id, run_name_of, started_by_a_run,
                             ui_link)
from flows._clients import clients_decision, switch_clients_task
from flows._copy import copy_all
from flows._dns import dns_checks, dns_decision, switch_mx_task

DEFAULT_PLAN = "inventory/rehearsal/plan.yaml"


@flow(name="rollback", flow_run_name=run_name_of("rollback"), persist_result=False)
def rollback(plan_path: str = DEFAULT_PLAN, reason: str = "rollback by hand", operator: str = "ops",
             operator_code: str | int = "", override: str | None = None) -> dict:
    """``override``: why a rollback after the rollback deadline (plan ``rollback_until``, else the switch + 7 days)
    must run anyway; without it such a rollback is refused before it changes anything."""
    plan = load_plan(plan_path)
    inventory = load_inventory(plan)
    me = run_id()
    # Started from a cutover's gate, the gate already checked who decided; by hand, the operator proves it here.
    # (`prefect deployment run -p operator_code=123456` sends a number: a code is digits either way.) The code is
    # checked against the moment the run was requested: a worker may start it a minute later.
    who = operator if started_by_a_run() else str(identify(plan, operator, str(operator_code), now=requested_at()))
    report = RunReport(f"Rollback of {plan.domain} to {plan.source.name}: {reason} ({who})")
    try:
        deadline = require_rollback_allowed(plan, override_reason=override,
                                            how="the rollback's override parameter (`--override REASON`)")
    except RollbackDeadlineError as exc:
        report.verdict = f"ROLLBACK REFUSED: {exc}"
        publish_report(plan, report, "rollback-report")
        raise
    log(deadline.describe())
    outcome: dict = {"verdict": "failed"}
    announce(plan, report, "rollback-started", f"pec-cutover: rollback of {plan.domain} to {plan.source.name} started "
             f"by {who}: {reason}" + (f" ({deadline.describe()})" if deadline.passed else "") + f". {ui_link(me)}".strip(),
             reason=reason, operator=who)
    try:
        with report.phase("take the freeze") as phase:
            held = freeze.acquire(plan, "rollback", me, note=f"{who}: {reason}")
            phase.lines.append(f"freeze held by this rollback ({held.took_over or 'was free'})")
            phase.lines.append(deadline.describe())
        clients = None
        clients_ok = True
        if plan.clients is not None:
            with report.phase(f"PEC clients back to {plan.source.name}") as phase:
                try:
                    clients = switch_clients_task(plan, "source")
                except ClientsError as exc:  # the MX must still go back
                    clients_ok = False
                    phase.status = "failed"
                    phase.lines.append(f"could not run: {exc}")
                else:
                    verdict = clients_decision(plan, clients)
                    clients_ok = verdict.go
                    phase.checks += clients.results()
                    phase.lines.append(clients.summary())
                    phase.sections += [clients.markdown(), verdict.markdown()]
                    if not clients_ok:
                        phase.status = "failed"
        with report.phase(f"MX and records back to {plan.source.name}") as phase:
            change = switch_mx_task(plan, "source")
            phase.lines.append(f"changed: {change.changed}; serial {change.serial_before} → {change.serial_after}")
            phase.lines.append(f"MX now: {change.records_after}")
        with report.phase("DNS checks") as phase:
            evidence = dns_checks(plan, "source")
            phase.checks += evidence.all
            decision = dns_decision(plan, evidence, "rollback-dns")
            phase.sections.append(decision.markdown())
            phase.lines.append(checks_summary(phase.checks))
            if decision.verdict is not Verdict.GO:
                phase.status = "failed"
        with report.phase("copy mail that reached the target back to the source") as phase:
            copy = copy_all(plan_path, plan, list(inventory), direction="reverse", label="rollback-reverse-sync")
            phase.lines.append(f"{copy.total_messages} messages examined; copied back: "
                               f"{sum(m.copied for m in copy.mailboxes)}; mailboxes verified {copy.verified_count}/{len(copy.mailboxes)}")
            phase.sections.append(copy.markdown())
            if not copy.ok:
                phase.status = "failed"
        ok = decision.verdict is Verdict.GO and copy.ok and clients_ok
        report.verdict = ("ROLLED BACK: PEC clients, MX and records on the source everywhere, new mail copied back "
                          "and verified" if ok else "ROLLBACK INCOMPLETE: see the failed phases")
        outcome = {"verdict": "rolled-back" if ok else "incomplete", "copied_back": sum(m.copied for m in copy.mailboxes),
                   "dns": str(decision.verdict), "deadline": deadline.describe(), "surroundings": surroundings(plan, "source", clients)}
        if not ok:
            raise CutoverError(f"rollback incomplete: DNS {decision.verdict}, "
                               f"{copy.unverified_count} mailbox(es) not verified"
                               + ("" if clients_ok else ", PEC clients not all back and working")
                               + "; run the rollback again")
        return outcome
    finally:
        if freeze.release(plan, me):
            log("freeze lifted")
        if not report.verdict:
            report.verdict = "ROLLBACK FAILED: see the failed phase; run the rollback again"
        announce(plan, report, "rollback-ended", f"pec-cutover: {report.verdict}. {ui_link(me)}".strip(),
                 verdict=report.verdict)
        publish_report(plan, report, "rollback-report")
