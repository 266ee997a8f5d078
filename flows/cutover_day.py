"""The cutover day: freeze → DNS switch → gate → PEC clients → gate → final delta → accessibility → gate → complete.

A NO-GO rolls back at once (plan ``on_nogo: rollback``) or pauses the run for a human (``on_nogo: ask``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from checks.dns import ttl_preflight
from checks.gates import Decision, access_gate
from checks.imap import canary_logins, endpoints_reachable
from checks.webmail import webmail_checks
from cutover import freeze, window as window_rules
from cutover.clients import surroundings
from cutover.errors import FreezeError, RollbackDeadlineError
from cutover.inventory import Inventory, load_inventory
from cutover.ledger import open_ledger
from cutover.mailsync import CopyReport
from cutover.plan import Plan, load_plan
from cutover.report import Phase, RunReport, checks_summary
from cutover.results import CheckResult
from cutover.rollback_deadline import check_rollback_deadline, require_rollback_allowed
from cutover.ttl import keep_low_after_go
from flows._artifacts import announce, log, publish_report, run_id, run_name_of, ui_link
from flows._clients import clients_decision, switch_clients_task
from flows._copy import copy_all
from flows._dns import dns_checks, dns_decision, set_ttl_task, switch_mark_task, switch_mx_task
from flows.gate import apply_gate
from flows.rollback import rollback

DEFAULT_PLAN = "inventory/rehearsal/plan.yaml"
OPTS = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="pre-flight checks", **OPTS)
def preflight(plan: Plan) -> list[CheckResult]:
    return [ttl_preflight(plan), *endpoints_reachable(plan)]


@task(name="accessibility checks", **OPTS)
def accessibility(plan: Plan, inventory: Inventory) -> tuple[list[CheckResult], list[CheckResult]]:
    ledger = open_ledger(plan)
    try:
        return webmail_checks(plan), canary_logins(plan, inventory, ledger=ledger)
    finally:
        ledger.close()


ROLLED_BACK = "RolledBackToSource"
GO_OVERRIDDEN = "GoOverridden"


@flow(name="cutover", flow_run_name=run_name_of("cutover"), persist_result=False)
def cutover(plan_path: str = DEFAULT_PLAN, override_window: str | None = None, operator: str = "ops") -> dict | State:
    plan = load_plan(plan_path)
    inventory = load_inventory(plan)
    me = run_id()
    report = RunReport(f"Cutover of {plan.domain}: {plan.source.name} → {plan.target.name} ({operator})")
    decisions: list[str] = []
    overridden: list[str] = []
    holding = switched = done = False
    try:
        with report.phase("freeze") as phase:
            if waited := freeze.wait_for_window(plan):
                phase.lines.append(f"started {waited:.0f} s before the window opened (scheduled run): waited for it")
            window = freeze.require_window(plan, override_reason=override_window)
            phase.lines.append(window.describe())
            gate_deadline = window_rules.gate_deadline(plan, started_inside=window.inside)
            checks = preflight(plan)
            phase.checks += checks
            phase.lines.append(checks_summary(checks))
            if not all(c.ok for c in checks):
                raise FreezeError("pre-flight failed: " + checks_summary(checks) + "; fix it before the switch")
            held = freeze.acquire(plan, "cutover", me, note=f"{operator}" + (f", override: {override_window}" if override_window else ""))
            holding = True
            phase.lines.append(f"change freeze taken by this run {held.took_over}".strip())

        with report.phase("switch mark") as phase:
            mark = switch_mark_task(plan, list(inventory), "target", f"cutover run {me}")
            if isinstance(mark, str):
                phase.status, phase.lines = "failed", [mark]
            else:
                phase.lines.append(mark.describe())
                phase.lines += mark.failures()
                if mark.failed:
                    phase.status = "incomplete"

        with report.phase(f"switch MX to {plan.target.name}") as phase:
            switched = True  # from here a failure leaves the domain half-way: the freeze stays until a decision
            change = switch_mx_task(plan, "target")
            phase.lines += [f"changed: {change.changed}; serial {change.serial_before} → {change.serial_after}",
                            f"MX now: {change.records_after}"]

        def dns_round() -> tuple[Decision, list[CheckResult]]:
            evidence = dns_checks(plan, "target")
            return dns_decision(plan, evidence, "dns"), evidence.all

        action, decision = _checks_and_gate(report, "DNS checks and gate", dns_round, plan, decisions, overridden,
                                            gate_deadline)
        if action == "rollback":
            _refuse_late_rollback(plan, report)  # after the rollback deadline: no rollback without an override
            done = True  # the rollback flow takes the freeze over and lifts it
            return _roll_back(plan_path, plan, report, decisions, operator, "DNS gate: " + decision.summary())
        freeze.require_held(plan, me)

        clients = None
        if plan.clients is not None:
            def clients_round() -> tuple[Decision, list[CheckResult], list[str]]:
                nonlocal clients
                clients = switch_clients_task(plan, "target")
                return clients_decision(plan, clients), clients.results(), [clients.markdown()]

            action, decision = _checks_and_gate(report, f"PEC clients to {plan.target.name} and gate", clients_round,
                                                plan, decisions, overridden, gate_deadline)
            if action == "rollback":
                _refuse_late_rollback(plan, report)
                done = True
                return _roll_back(plan_path, plan, report, decisions, operator, "clients gate: " + decision.summary())
            freeze.require_held(plan, me)

        with report.phase("final delta copy") as phase:
            copy = copy_all(plan_path, plan, list(inventory), direction="forward", label="final-delta")
            phase.lines.append(f"{copy.verified_count}/{len(copy.mailboxes)} mailboxes verified; "
                               f"{sum(m.copied for m in copy.mailboxes)} messages copied in {copy.seconds:.1f} s")
            phase.sections.append(copy.markdown())
            if not copy.ok:
                phase.status = "failed"

        rounds = 0

        def access_round() -> tuple[Decision, list[CheckResult]]:
            nonlocal copy, rounds
            rounds += 1
            if rounds > 1 and not copy.ok:  # a retry after a failed copy: copy again (the delta is cheap)
                copy = copy_all(plan_path, plan, list(inventory), direction="forward", label=f"final-delta-retry-{rounds}")
            webmail, canaries = accessibility(plan, inventory)
            return access_gate(webmail=webmail, canaries=canaries, unverified_mailboxes=copy.unverified_count,
                               missing_messages=copy.missing_messages, gates=plan.gates), [*webmail, *canaries]

        action, decision = _checks_and_gate(report, "accessibility checks and gate", access_round, plan, decisions,
                                            overridden, gate_deadline)
        if action == "rollback":
            _refuse_late_rollback(plan, report)
            done = True
            return _roll_back(plan_path, plan, report, decisions, operator, "access gate: " + decision.summary())
        freeze.require_held(plan, me)

        with report.phase("complete") as phase:
            if (due := keep_low_after_go(plan)) is not None:  # hypercare: a rollback must still propagate fast
                phase.lines.append(f"MX TTL kept at {plan.dns.ttl.cutover} s until {due.isoformat(timespec='minutes')} "
                                   "(ttl.restore_after), then `pec-cutover dns ttl --restore --plan P`")
            else:
                restored = set_ttl_task(plan, "normal")
                phase.lines.append(f"MX TTL back to {plan.dns.ttl.normal} s (changed: {restored.changed})")
            freeze.release(plan, me)
            holding, done = False, True
            phase.lines.append("change freeze lifted")
            phase.lines.append(check_rollback_deadline(plan).describe() +
                               "; after it `pec-cutover run rollback` needs --override REASON")
        report.verdict = (f"GO: {plan.domain} now served by {plan.target.name}; {copy.verified_count}/{len(inventory)} "
                          "mailboxes verified" + (f"; NO-GO OVERRIDDEN at gate(s) {', '.join(overridden)} by a human "
                                                  "decision (see gate decisions)" if overridden else ""))
        announce(plan, report, "go", f"pec-cutover: GO. {report.verdict}", verdict="GO", overridden=overridden)
        result = {"verdict": "GO", "overridden": overridden, "decisions": decisions, "verified": copy.verified_count,
                  "report": _timings(report), "surroundings": surroundings(plan, "target", clients)}
        # The run list shows a GO reached through an overridden NO-GO by its state's name, not as a plain GO.
        return Completed(name=GO_OVERRIDDEN, message=report.verdict, data=result) if overridden else result
    finally:
        if holding and switched and not done:
            freeze.keep_after_failure(plan, me, "cutover failed after the MX switch: check `pec-cutover dns status`, "
                                                "then run the rollback (or remove the marker after checking)")
        elif holding:
            freeze.release(plan, me)
        if decisions:
            report.phases.append(Phase(name="gate decisions", started_at="", status="ok", lines=decisions))
        if durations := window_rules.phase_timings(plan, report.timings()):  # the plan's expected minutes
            late = [d for d in durations if d.overran]
            report.phases.append(Phase(name="phase durations", started_at="", status="overrun" if late else "ok",
                                       lines=[d.describe() for d in durations]))
            for d in late:
                log("phase overran: %s", d.describe())
                announce(plan, report, "phase-overrun", f"pec-cutover: {plan.domain}: phase overran: {d.describe()}",
                         phase=d.describe())
        if not report.verdict:
            report.verdict = "FAILED: see the failed phase (MX may be on the target: decide, or run the rollback flow)"
            announce(plan, report, "run-failed", f"pec-cutover: the cutover of {plan.domain} FAILED"
                     f"{' after the MX switch: decide, or run the rollback' if switched else ''}. {ui_link(me)}".strip(),
                     verdict="FAILED", mx_switched=switched)
        publish_report(plan, report, "cutover-report")


def _checks_and_gate(report: RunReport, title: str, run_checks: Callable[[], tuple], plan: Plan,
                     decisions: list[str], overridden: list[str],
                     gate_deadline: datetime | None = None) -> tuple[str, Decision]:
    """Run the checks (-> decision, evidence[, markdown sections]) and apply their gate, again for as long as the
    operator answers 'retry'."""
    attempt = 0
    while True:
        attempt += 1
        with report.phase(f"{title} (attempt {attempt})") as phase:
            decision, evidence, *sections = run_checks()
            phase.checks += evidence
            phase.sections += [section for group in sections for section in group]
            phase.sections.append(decision.markdown())
            action = apply_gate(decision, plan=plan, attempt=attempt, decisions=decisions, window_deadline=gate_deadline,
                                report=report)
            phase.lines.append(decisions[-1])
            if not decision.go:
                phase.status = {"rollback": "failed", "proceed": "overridden"}.get(action, "retry")
                if action == "proceed":
                    overridden.append(decision.gate)
        if action != "retry":
            return action, decision


def _refuse_late_rollback(plan: Plan, report: RunReport) -> None:
    """A gate's rollback (automatic or decided at the pause) never runs after the rollback deadline: the source may
    have dropped the domain, and an override is a human's decision with a reason (`pec-cutover run rollback
    --override REASON`). Raising here keeps the freeze sticky: the domain stays as it is until someone decides."""
    try:
        require_rollback_allowed(plan, how="`pec-cutover run rollback --override REASON` after checking")
    except RollbackDeadlineError as exc:
        with report.phase("rollback") as phase:
            phase.status = "failed"
            phase.lines.append(f"not rolled back by the gate: {exc}")
        raise


def _roll_back(plan_path: str, plan: Plan, report: RunReport, decisions: list[str], operator: str, why: str) -> State:
    with report.phase("rollback") as phase:
        log("rolling back: %s", why)
        outcome = rollback(plan_path=plan_path, reason=why, operator=operator)
        phase.lines.append(f"rollback flow: {outcome['verdict']}, {outcome.get('copied_back', 0)} messages copied back")
    report.verdict = f"NO-GO → ROLLED BACK to {plan.source.name} ({why})"
    result = {"verdict": "ROLLED-BACK", "decisions": decisions, "rollback": outcome, "report": _timings(report)}
    # Completed, but named so in the run list (Prefect's own "RolledBack" means a transaction rollback).
    return Completed(name=ROLLED_BACK, message=report.verdict, data=result)


def _timings(report: RunReport) -> list[list]:
    return [[name, round(seconds, 1), status] for name, seconds, status in report.timings()]
