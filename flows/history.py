"""Read the run history back from Prefect's API: recent runs with state, duration and gate decisions."""

from __future__ import annotations

from dataclasses import dataclass
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


def decide_gate(run_id: str, action: str, operator: str, reason: str) -> None:
    """Resume a run paused at a gate with the operator's decision (validated like the UI form)."""
    decision = GateDecision(action=action, operator=operator, reason=reason)  # type: ignore[arg-type]
    resume_flow_run(UUID(run_id), run_input=decision.model_dump(include={"action", "operator", "reason"}))
