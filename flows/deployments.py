"""Deployments of the four flows (and the chunk runs of a distributed copy) for a long-running Prefect server (``pec-cutover serve``).

The cutover deployment is scheduled once, at the plan's window start; the others run on demand.
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import httpx
from prefect import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterState, \
    FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.types.entrypoint import EntrypointType
from prefect.schedules import RRule

from cutover.errors import DeploymentError
from cutover.plan import Plan, load_plan
from flows._fanout import copy_chunk
from flows.cutover_day import cutover
from flows.prestage import prestage
from flows.readiness import readiness
from flows.rollback import rollback


# Flows are loaded by module path (flows.readiness:readiness), never as scripts: a script's folder put first
# on sys.path would let a flow file shadow a package it imports, and load one module under two names.
MODULE = EntrypointType.MODULE_PATH


def window_schedule(plan: Plan) -> RRule:
    """A one-off schedule at the window start (in the plan's timezone, whatever offset the window was written with)."""
    start = plan.window.start.astimezone(ZoneInfo(plan.timezone))
    return RRule(f"DTSTART:{start.strftime('%Y%m%dT%H%M%S')}\nRRULE:FREQ=DAILY;COUNT=1", timezone=plan.timezone)


def serve_all(plan_path: str) -> None:
    plan = load_plan(plan_path)
    params = {"plan_path": str(plan_path)}
    serve(
        readiness.to_deployment(name="readiness", parameters=params, tags=["pec-cutover"], entrypoint_type=MODULE),
        prestage.to_deployment(name="prestage", parameters=params, tags=["pec-cutover"], entrypoint_type=MODULE),
        cutover.to_deployment(name="cutover", parameters=params, schedule=window_schedule(plan), tags=["pec-cutover"], entrypoint_type=MODULE,
                              description=f"Cutover of {plan.domain}, scheduled at the window start"),
        copy_chunk.to_deployment(name="copy-chunk", tags=["pec-cutover"], entrypoint_type=MODULE,
                                 description="One chunk of a distributed copy (copy.fan_out), started by the copy"),
        rollback.to_deployment(name="rollback", parameters={**params, "reason": "rollback by hand"}, tags=["pec-cutover"], entrypoint_type=MODULE,
                               description="Run on demand at any moment until the rollback deadline (after it: -p override=REASON): MX back, new mail copied back"),
    )


def schedule_cutover(plan_path: str, deployment: str = "cutover/cutover", *, now: datetime | None = None) -> str:
    """Schedule one run of the cutover deployment at the plan's window start (the ``prefect deploy --all`` path,
    where ``prefect.yaml`` holds no date); the new run's id. ``pec-cutover serve`` schedules it by itself."""
    plan = load_plan(plan_path)
    now = now or datetime.now(timezone.utc)
    if plan.window.start <= now:
        raise DeploymentError(f"the window of {plan.domain} starts {plan.window.start.isoformat()}, not in the future: "
                              "inside the window start the cutover now (`pec-cutover run cutover --plan P` or "
                              f"`prefect deployment run {deployment} -p plan_path=P`)")
    with get_client(sync_client=True) as client:
        try:
            found = client.read_deployment_by_name(deployment)
        except httpx.HTTPError as exc:  # server down or wrong URL: one line, never a traceback
            raise DeploymentError(f"cannot reach the Prefect server at {client.api_url} ({type(exc).__name__}): start "
                                  "it (`pec-cutover server start --plan P`) and check PREFECT_API_URL") from None
        except ObjectNotFound:
            raise DeploymentError(f"no deployment {deployment!r} on {client.api_url}: run `prefect deploy --all` "
                                  "from the pec-cutover checkout first (see the runbook)") from None
        pending = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]))))
    if pending:
        raise DeploymentError(f"{deployment} already has a run waiting or running ({pending[0].id}, "
                              f"{pending[0].state_name} for {pending[0].expected_start_time}): cancel it in the UI "
                              "first if the window moved")
    run = run_deployment(deployment, parameters={"plan_path": str(plan_path)}, scheduled_time=plan.window.start,
                         timeout=0, tags=["pec-cutover"])
    return str(run.id)
