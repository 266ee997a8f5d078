"""Publishing to Prefect's run history: reports, tables, progress. Thin wrappers; the content comes from cutover/ and checks/."""

from __future__ import annotations

import re
from typing import Any, Iterable
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.context import get_run_context
from prefect.logging import get_run_logger

from cutover.plan import Plan
from cutover.report import RunReport


def run_id() -> str:
    ctx = get_run_context()
    run = getattr(ctx, "flow_run", None)
    return str(run.id) if run else "local"


def started_by_a_run() -> bool:
    """True inside a subflow (started by another flow run, e.g. a cutover's gate), False for a run started by hand."""
    run = getattr(get_run_context(), "flow_run", None)
    return bool(run and run.parent_task_run_id)


def requested_at() -> float | None:
    """When the server created this flow run (epoch seconds), or None outside a run. A deployment run waits for a
    worker to pick it up and start a process (30-40 s on a loaded host): a one-time code sent with the request is
    checked against this moment, the server's own record, not the moment the flow got to run."""
    run = getattr(get_run_context(), "flow_run", None)
    created = getattr(run, "created", None) if run else None
    return created.timestamp() if created else None


def run_name_of(kind: str):
    """A ``flow_run_name`` callable: the run list names the domain and direction (and the mailbox count), not
    the plan's file path. A plan that does not load falls back to the path (the run then fails with its error)."""
    def name() -> str:
        from prefect.runtime import flow_run

        from cutover.inventory import load_inventory
        from cutover.plan import load_plan
        from cutover.report import run_name

        params = flow_run.parameters or {}
        path = params.get("plan_path", "")
        try:
            plan = load_plan(path)
            count = None
            if kind in ("readiness", "prestage"):
                inventory = load_inventory(plan)
                count = len(inventory.select(params.get("mailboxes")))
            return run_name(kind, plan.domain, plan.source.name, plan.target.name, count)
        except Exception:  # noqa: BLE001 - a name must never stop a run; the flow reports the real problem
            return f"{kind} {path}"
    return name


def announce(plan: Plan, report: RunReport | None, event: str, text: str, **fields: Any) -> None:
    """Send ``event`` to the plan's webhooks and record each delivery in the run's report and log."""
    from cutover.notify import notify

    me = run_id()
    fields = {"run_id": me, "run_url": ui_link(me), **fields}
    for delivery in notify(plan, event, text, fields):
        log(delivery.line())
        if report is not None:
            report.notifications.append(delivery.line())


def ui_link(flow_run_id: str) -> str:
    """The run's page in the Prefect UI (empty when no UI URL is known, e.g. a run on a temporary server)."""
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base and flow_run_id != "local" else ""


def key(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100]


def publish_report(plan: Plan, report: RunReport, artifact_key: str) -> str:
    markdown = report.markdown()
    create_markdown_artifact(markdown=markdown, key=key(artifact_key), description=report.title)
    if plan.reports_dir is not None:
        plan.reports_dir.mkdir(parents=True, exist_ok=True)
        (plan.reports_dir / f"{key(artifact_key)}-{run_id()[:8]}.md").write_text(markdown, encoding="utf-8")
    return markdown


def publish_table(rows: Iterable[dict[str, Any]], artifact_key: str, description: str) -> None:
    rows = list(rows)
    if rows:
        create_table_artifact(table=rows, key=key(artifact_key), description=description)


def publish_markdown(markdown: str, artifact_key: str, description: str) -> None:
    create_markdown_artifact(markdown=markdown, key=key(artifact_key), description=description)


class Progress:
    """A progress artifact updated as work finishes (percent of items)."""

    def __init__(self, description: str, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.artifact_id: UUID = create_progress_artifact(progress=0.0, description=description)

    def advance(self, n: int = 1) -> None:
        self.done += n
        update_progress_artifact(self.artifact_id, progress=min(100.0, 100.0 * self.done / self.total))


def log(message: str, *args: Any) -> None:
    get_run_logger().info(message, *args)
