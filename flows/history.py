"""Read the run history back from Prefect's API: recent runs with state, duration and gate decisions."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowFilter, FlowFilterName
from prefect.client.schemas.sorting import FlowRunSort
from prefect.flow_runs import resume_flow_run

from flows.gate import GateDecision

FLOW_NAMES = ["readiness", "prestage", "cutover", "rollback"]


@dataclass(frozen=True)
class RunSummary:
    id: str
    flow: str
    name: str
    state: str
    started: str
    seconds: float | None
    gates: list[str]


def recent_runs(limit: int = 20) -> list[RunSummary]:
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=FLOW_NAMES)))}
        if not flows:
            return []
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=FLOW_NAMES)),
                                     sort=FlowRunSort.START_TIME_DESC, limit=limit)
        out = []
        for run in runs:
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
            gates = sorted((a.description or "") for a in artifacts if (a.key or "").startswith("gate-"))
            out.append(RunSummary(
                id=str(run.id), flow=flows.get(run.flow_id, "?"), name=run.name, state=run.state_name or "?",
                started=run.start_time.isoformat(timespec="seconds") if run.start_time else "",
                seconds=run.total_run_time.total_seconds() if run.total_run_time else None, gates=gates))
        return out


def resolve_run_id(text: str) -> str:
    """A whole run id from any unique prefix of one (as `history` prints them); ValueError says why not."""
    text = text.strip().lower()
    try:
        return str(UUID(text))
    except ValueError:
        pass
    if not text or any(c not in "0123456789abcdef-" for c in text):
        raise ValueError(f"{text!r} is not a run id or the start of one")
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=FLOW_NAMES)),
                                     sort=FlowRunSort.START_TIME_DESC, limit=200)
    found = sorted({str(r.id) for r in runs if str(r.id).startswith(text)})
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f"no recent run id starts with {text!r} (see `pec-cutover history`)")
    raise ValueError(f"{text!r} is the start of {len(found)} run ids ({', '.join(f[:13] for f in found[:5])}...): "
                     "give more characters")


def decide_gate(run_id: str, action: str, operator: str, reason: str, code: str = "", *,
                before_sending: Callable[[], None] = lambda: None, wait_s: float = 60.0) -> str:
    """Resume a run paused at a gate with the operator's decision (validated like the UI form), then wait for the
    run to accept it or refuse it (an unknown operator or a wrong code: the run pauses again). What happened.

    Checked in this order, nothing sent before the last: the form, the run id, the run exists, ``before_sending``."""
    decision = GateDecision(action=action, operator=operator, reason=reason, code=code)  # type: ignore[arg-type]
    run_id = resolve_run_id(run_id)
    with get_client(sync_client=True) as client:
        client.read_flow_run(UUID(run_id))
    before_sending()
    before = _gate_answers(run_id)
    resume_flow_run(UUID(run_id), run_input=decision.model_dump(include={"action", "operator", "reason", "code"}))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        new = {k: v for k, v in _gate_answers(run_id).items() if k not in before}
        for artifact_key, description in new.items():
            if "-refused-" in artifact_key:
                return description
        if new:
            return "accepted"
        time.sleep(0.5)
    return "sent (the run has not confirmed it yet: see `pec-cutover history`)"


def _gate_answers(run_id: str) -> dict[str, str]:
    """The run's decision and refusal artifacts, by key."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)])))
    return {a.key: a.description or "" for a in artifacts
            if a.key and a.key.startswith("gate-") and ("-decision" in a.key or "-refused-" in a.key)}
