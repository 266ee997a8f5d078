"""Deployments of the four flows for a long-running Prefect server (``pec-cutover serve``).

The cutover deployment is scheduled once, at the plan's window start; the others run on demand.
"""

from __future__ import annotations

from prefect import serve
from prefect.types.entrypoint import EntrypointType
from prefect.schedules import RRule

from cutover.plan import Plan, load_plan
from flows.cutover_day import cutover
from flows.prestage import prestage
from flows.readiness import readiness
from flows.rollback import rollback


# Flows are loaded by module path (flows.readiness:readiness), never as scripts: a script's folder put first
# on sys.path would let a flow file shadow a package it imports, and load one module under two names.
MODULE = EntrypointType.MODULE_PATH


def window_schedule(plan: Plan) -> RRule:
    """A one-off schedule at the window start (in the plan's timezone)."""
    start = plan.window.start.astimezone(plan.window.start.tzinfo)
    return RRule(f"DTSTART:{start.strftime('%Y%m%dT%H%M%S')}\nRRULE:FREQ=DAILY;COUNT=1", timezone=plan.timezone)


def serve_all(plan_path: str) -> None:
    plan = load_plan(plan_path)
    params = {"plan_path": str(plan_path)}
    serve(
        readiness.to_deployment(name="readiness", parameters=params, tags=["pec-cutover"], entrypoint_type=MODULE),
        prestage.to_deployment(name="prestage", parameters=params, tags=["pec-cutover"], entrypoint_type=MODULE),
        cutover.to_deployment(name="cutover", parameters=params, schedule=window_schedule(plan), tags=["pec-cutover"], entrypoint_type=MODULE,
                              description=f"Cutover of {plan.domain}, scheduled at the window start"),
        rollback.to_deployment(name="rollback", parameters={**params, "reason": "rollback by hand"}, tags=["pec-cutover"], entrypoint_type=MODULE,
                               description="Run on demand at any moment: MX back, new mail copied back"),
    )
