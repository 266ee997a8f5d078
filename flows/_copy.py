"""Copy many mailboxes as Prefect tasks (one task run per mailbox), bounded by the plan's parallelism and by
each provider's ``max_connections``: inside this process by ``cutover.limits`` (every session), and across flow
runs and workers by one strict Prefect global concurrency limit per provider."""

from __future__ import annotations

import time

from prefect import flow, get_client, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from cutover.inventory import Mailbox
from cutover.ledger import Ledger
from cutover.mailsync import CopyReport, MailboxReport, sync_mailbox
from cutover.inventory import load_inventory
from cutover.limits import concurrency_limit_name, mailbox_workers, sessions_per_mailbox
from cutover.plan import Plan, load_plan
from flows._artifacts import Progress, log, publish_table


@task(name="copy mailbox", task_run_name="{direction} copy {mailbox.address}", cache_policy=NO_CACHE, persist_result=False)
def copy_mailbox(plan: Plan, mailbox: Mailbox, ledger: Ledger, direction: str) -> MailboxReport:
    # strict: a limit that does not exist is an error, never "no limit" (provider_limits creates them first)
    with concurrency(concurrency_limit_name(plan.source), occupy=sessions_per_mailbox(plan, "source", direction),
                     strict=True):
        with concurrency(concurrency_limit_name(plan.target), occupy=sessions_per_mailbox(plan, "target", direction),
                         strict=True):
            return sync_mailbox(plan, mailbox, ledger, direction=direction)


def provider_limits(plan: Plan) -> None:
    """Create (or set) each provider's global concurrency limit to its ``max_connections``."""
    with get_client(sync_client=True) as client:
        for provider in (plan.source, plan.target):
            client.upsert_global_concurrency_limit_by_name(concurrency_limit_name(provider), provider.max_connections)


@flow(name="copy mailboxes", flow_run_name="{label}", persist_result=False)
def _copy_flow(plan_path: str, addresses: list[str], direction: str, label: str) -> CopyReport:
    # Parameters are what Prefect stores: a path and addresses, never plan or inventory objects.
    started = time.monotonic()
    plan = load_plan(plan_path)
    mailboxes = list(load_inventory(plan).select(addresses))
    provider_limits(plan)
    ledger = Ledger(plan.ledger)
    try:
        progress = Progress(f"{label}: mailboxes done", len(mailboxes))
        futures = copy_mailbox.map(unmapped(plan), mailboxes, unmapped(ledger), unmapped(direction))
        reports: list[MailboxReport] = []
        for future in as_completed(futures):
            report = future.result()  # resolve every future: a failed task must fail the run, not vanish
            reports.append(report)
            progress.advance()
            log("%s: %s %s (%d messages, %d copied)", label, report.address, report.status, report.messages, report.copied)
    finally:
        ledger.close()
    order = {m.address: i for i, m in enumerate(mailboxes)}
    reports.sort(key=lambda r: order.get(r.address, 0))
    result = CopyReport(mailboxes=reports, seconds=time.monotonic() - started, direction=direction)
    publish_table(result.rows(), f"{label}-mailboxes", f"{label}: per mailbox")
    return result


def copy_all(plan_path: str, plan: Plan, mailboxes: list[Mailbox], *, direction: str, label: str) -> CopyReport:
    """Run the copy subflow with a task runner as wide as the plan allows."""
    runner = ThreadPoolTaskRunner(max_workers=mailbox_workers(plan))
    return _copy_flow.with_options(task_runner=runner)(str(plan_path), [m.address for m in mailboxes], direction, label)
