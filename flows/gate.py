"""Gates in a flow run: apply the decision's action, pausing for a human when the plan says ask.

The verdict itself comes from ``checks.gates`` (pure). This module only turns it into Prefect actions:
proceed, roll back, or ``pause_flow_run`` with a form (rollback / continue / retry checks, operator, reason).
"""

from __future__ import annotations

from typing import Literal

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from checks.gates import Decision
from flows._artifacts import key, log, publish_markdown

Action = Literal["proceed", "rollback", "retry"]


class GateDecision(RunInput):
    """What the operator decides at a paused gate (the form shown in the Prefect UI)."""

    action: Literal["rollback", "continue", "retry"] = Field(
        description="rollback: MX back to the source and copy new mail back; continue: go on despite NO-GO; retry: run the checks again")
    operator: str = Field(min_length=2, description="who decides (name)")
    reason: str = Field(min_length=3, description="why; goes into the run history")


def apply_gate(decision: Decision, *, attempt: int, pause_timeout_s: int, decisions: list[str]) -> Action:
    """Return what the flow does next. Every decision (automatic or human) is recorded in ``decisions``."""
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
    try:
        answer = pause_flow_run(
            wait_for_input=GateDecision.with_initial_data(
                description=f"Gate **{decision.gate}**: {decision.verdict}.\n\n{decision.markdown()}"),
            timeout=pause_timeout_s,
            poll_interval=2,
            key=key(f"gate-{decision.gate}-{attempt}"),
        )
    except FlowPauseTimeout:
        # Nobody decided in time after a failed gate: the safe state is the old provider.
        decisions.append(f"{decision.gate}: {decision.verdict} → rollback (no decision within {pause_timeout_s} s)")
        return "rollback"
    record = f"{decision.gate}: {decision.verdict} → {answer.action} by {answer.operator}: {answer.reason}"
    decisions.append(record)
    publish_markdown(f"### Human decision at gate `{decision.gate}`\n\n- action: **{answer.action}**\n"
                     f"- operator: {answer.operator}\n- reason: {answer.reason}\n",
                     f"gate-{decision.gate}-{attempt}-decision", record)
    log("human decision: %s", record)
    return {"rollback": "rollback", "continue": "proceed", "retry": "retry"}[answer.action]
