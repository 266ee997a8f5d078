"""Gates in a flow run: apply the decision's action, pausing for a human when the plan says ask.

The verdict itself comes from ``checks.gates`` (pure). This module only turns it into Prefect actions:
proceed, roll back, or ``pause_flow_run`` with a form (rollback / continue / retry checks, operator, reason).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from checks.gates import Decision
from cutover import freeze
from cutover.errors import FreezeError, OperatorError
from cutover.operators import identify
from cutover.plan import Plan
from cutover.report import RunReport
from cutover.window import pause_budget, window_closed
from flows._artifacts import announce, key, log, publish_markdown, run_id, ui_link

Action = Literal["proceed", "rollback", "retry"]


class GateDecision(RunInput):
    """What the operator decides at a paused gate (the form shown in the Prefect UI)."""

    action: Literal["rollback", "continue", "retry"] = Field(
        description="rollback: MX back to the source and copy new mail back; continue: go on despite NO-GO; retry: run the checks again")
    operator: str = Field(min_length=2, description="who decides: your name as the plan's operators list it")
    code: str = Field(default="", max_length=10,
                      description="your one-time code (6 digits from your authenticator app); never your secret")
    reason: str = Field(min_length=3, description="why; goes into the run history")


def apply_gate(decision: Decision, *, plan: Plan, attempt: int, decisions: list[str],
               window_deadline: datetime | None = None, report: RunReport | None = None) -> Action:
    """Return what the flow does next. Every decision (automatic or human) is recorded in ``decisions``.

    A human answer counts only from one of the plan's operators with a valid one-time code; any other answer is
    recorded as refused and the run pauses again (until the pause timeout, then it rolls back). A pause never
    outlasts ``window_deadline``: then the plan's ``window.on_close`` decides, recorded as "window closed"."""
    pause_timeout_s = plan.gates.pause_timeout_s
    budget = pause_budget(plan, window_deadline)
    publish_markdown(decision.markdown(), f"gate-{decision.gate}-{attempt}", f"gate {decision.gate}: {decision.verdict}")
    log(decision.summary())
    if decision.action == "proceed":
        decisions.append(f"{decision.gate}: {decision.verdict} → proceed (automatic)")
        return "proceed"
    if decision.action == "rollback":
        decisions.append(f"{decision.gate}: {decision.verdict} → rollback (automatic, plan on_nogo: rollback)")
        return "rollback"
    log("gate %s needs a human decision: resume the run in the Prefect UI, or run "
        "`pec-cutover gate decide <run id> --rollback|--continue|--retry --operator NAME --reason TEXT`", decision.gate)
    me = run_id()
    failing = "; ".join(r.rule for r in [*decision.failed_rules, *decision.inconclusive_rules]) or "none"
    announce(plan, report, "gate-paused",
             f"pec-cutover: gate {decision.gate} of {plan.domain} says {decision.verdict} and waits for a decision "
             f"(failing: {failing}). Decide: pec-cutover gate decide {me} --rollback|--continue|--retry "
             f"--operator NAME --code CODE --reason TEXT. {ui_link(me)}".strip(),
             gate=decision.gate, verdict=str(decision.verdict), failing=failing,
             command=f"pec-cutover gate decide {me} --rollback|--continue|--retry --operator NAME --code CODE "
                     "--reason TEXT", timeout_s=budget.timeout_s)
    deadline = time.monotonic() + budget.timeout_s
    refused = 0
    while True:
        if budget.closed_already:
            return _window_closed(decision, plan, window_deadline, decisions)
        try:
            answer = pause_flow_run(
                wait_for_input=GateDecision.with_initial_data(
                    description=f"Gate **{decision.gate}**: {decision.verdict}.\n\n{decision.markdown()}"),
                timeout=max(1, int(deadline - time.monotonic())),
                poll_interval=2,
                key=key(f"gate-{decision.gate}-{attempt}" + (f"-again-{refused}" if refused else "")),
            )
        except FlowPauseTimeout:
            _running_again()
            _refuse_if_stale(plan, decision, attempt, decisions)
            if budget.window_closes:
                return _window_closed(decision, plan, window_deadline, decisions)
            # Nobody decided in time after a failed gate: the safe state is the old provider.
            decisions.append(f"{decision.gate}: {decision.verdict} → rollback (no decision within {pause_timeout_s} s)")
            return "rollback"
        _refuse_if_stale(plan, decision, attempt, decisions)
        try:
            who = identify(plan, answer.operator, answer.code)
            break
        except OperatorError as exc:
            refused += 1
            publish_markdown(f"### Decision refused at gate `{decision.gate}`\n\n- asked: {answer.action} by "
                             f"{answer.operator!r}\n- refused: {exc}\n- the run is paused again\n",
                             f"gate-{decision.gate}-{attempt}-refused-{refused}", f"refused: {exc}")
            log("decision refused, paused again: %s", exc)
    record = f"{decision.gate}: {decision.verdict} → {answer.action} by {who.name}: {answer.reason}" + \
        ("" if who.verified else " (operator not verified: the plan names no operators)")
    decisions.append(record)
    publish_markdown(f"### Human decision at gate `{decision.gate}`\n\n- action: **{answer.action}**\n"
                     f"- operator: {who}\n- reason: {answer.reason}\n",
                     f"gate-{decision.gate}-{attempt}-decision", record)
    log("human decision: %s", record)
    return {"rollback": "rollback", "continue": "proceed", "retry": "retry"}[answer.action]


def _running_again() -> None:
    """After a pause timed out the server still shows the run Paused, and refuses it any final state ("paused and
    never resumed"): the run goes on (to the rollback), so it is Running again."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id(), Running(), force=True)


def _window_closed(decision: Decision, plan: Plan, deadline: datetime | None, decisions: list[str]) -> Action:
    action, text = window_closed(plan, deadline)  # type: ignore[arg-type]
    decisions.append(f"{decision.gate}: {decision.verdict} → {text}")
    publish_markdown(f"### Window closed at gate `{decision.gate}`\n\n- {text}\n", f"gate-{decision.gate}-window-closed",
                     decisions[-1])
    log(decisions[-1])
    return action


def _refuse_if_stale(plan: Plan, decision: Decision, attempt: int, decisions: list[str]) -> None:
    """A paused run answered (or timed out) after a newer run took the freeze: record it and stop, acting on nothing."""
    why = freeze.stale_reason(plan, run_id())
    if why:
        decisions.append(f"{decision.gate}: answer ignored: {why}")
        publish_markdown(f"### Stale run at gate `{decision.gate}`\n\n- {why}\n",
                         f"gate-{decision.gate}-{attempt}-refused-stale", f"refused: {why}")
        log(why)
        raise FreezeError(why)
