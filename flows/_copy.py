"""Copy many mailboxes under Prefect in a few *lanes*: each lane is one task run that leases its sessions on both
providers once (one strict Prefect global concurrency limit per provider, shared by every flow run and worker) and
then copies mailbox after mailbox from a shared queue until it is empty. Inside this process every session is also
bounded by ``cutover.limits``. (One task run and one lease per mailbox cost a 1,200-mailbox delta minutes of
Prefect round trips and slot-retry waits; see bench/scale_bench.py.)"""

from __future__ import annotations

import queue
import time

from prefect import flow, get_client, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.futures import PrefectConcurrentFuture
from prefect.task_runners import ThreadPoolTaskRunner

from cutover.inventory import Mailbox, load_inventory
from cutover.ledger import Ledger, open_ledger
from cutover.limits import concurrency_limit_name, mailbox_workers, sessions_per_mailbox
from cutover.mailsync import CopyReport, MailboxReport, sync_mailbox
from cutover.plan import Plan, load_plan
from flows._artifacts import Progress, log, publish_table

_POLL_S = 0.5
_LEASE_S = 60.0


@task(name="copy lane", task_run_name="{direction} copy lane {lane} of {lanes}", cache_policy=NO_CACHE,
      persist_result=False)
def copy_lane(plan: Plan, work: "queue.SimpleQueue[Mailbox]", done: "queue.SimpleQueue[MailboxReport]",
              ledger: Ledger, direction: str, lane: int, lanes: int) -> int:
    """Copy mailboxes from ``work`` until it is empty, each report put on ``done``; returns how many it copied."""
    copied = 0
    # strict: a limit that does not exist is an error, never "no limit" (provider_limits creates them first)
    # lease_duration: the slots of a worker that died (machine gone) return to the others within a minute
    with concurrency(concurrency_limit_name(plan.source), occupy=sessions_per_mailbox(plan, "source", direction),
                     strict=True, lease_duration=_LEASE_S):
        with concurrency(concurrency_limit_name(plan.target), occupy=sessions_per_mailbox(plan, "target", direction),
                         strict=True, lease_duration=_LEASE_S):
            while True:
                try:
                    mailbox = work.get_nowait()
                except queue.Empty:
                    return copied
                done.put(sync_mailbox(plan, mailbox, ledger, direction=direction))
                copied += 1


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
    lanes = mailbox_workers(plan, len(mailboxes))
    work: queue.SimpleQueue[Mailbox] = queue.SimpleQueue()
    done: queue.SimpleQueue[MailboxReport] = queue.SimpleQueue()
    for mailbox in mailboxes:
        work.put(mailbox)
    ledger = open_ledger(plan)
    reports: list[MailboxReport] = []
    try:
        progress = Progress(f"{label}: mailboxes done", len(mailboxes))
        futures: list[PrefectConcurrentFuture[int]] = [
            copy_lane.submit(plan, work, done, ledger, direction, lane, lanes) for lane in range(1, lanes + 1)]

        def report_done() -> None:
            while True:
                try:
                    report = done.get(timeout=_POLL_S)
                except queue.Empty:
                    return
                reports.append(report)
                progress.advance()
                log("%s: %s %s (%d messages, %d copied)", label, report.address, report.status, report.messages,
                    report.copied)

        while not all(f.wrapped_future.done() for f in futures):  # (no API call: the thread's own future)
            report_done()
        report_done()
        for future in futures:
            future.result()  # a lane that raised fails the run (the other lanes finished the queue first)
    finally:
        ledger.close()
    if len(reports) != len(mailboxes):  # never a silent gap: every mailbox has its report or the run fails
        raise RuntimeError(f"{label}: {len(mailboxes) - len(reports)} of {len(mailboxes)} mailboxes were not copied")
    order = {m.address: i for i, m in enumerate(mailboxes)}
    reports.sort(key=lambda r: order.get(r.address, 0))
    result = CopyReport(mailboxes=reports, seconds=time.monotonic() - started, direction=direction)
    publish_table(result.rows(), f"{label}-mailboxes", f"{label}: per mailbox")
    return result


def copy_all(plan_path: str, plan: Plan, mailboxes: list[Mailbox], *, direction: str, label: str,
             in_process: bool = False) -> CopyReport:
    """Run the copy subflow with a task runner as wide as its lanes; with ``copy.fan_out`` in the plan, as chunk
    runs on the work pool's workers instead (``flows._fanout``; a chunk run itself copies ``in_process``)."""
    if plan.copy_settings.fan_out is not None and not in_process:
        from flows._fanout import fan_out

        return fan_out(plan_path, plan, mailboxes, direction=direction, label=label)
    runner = ThreadPoolTaskRunner(max_workers=mailbox_workers(plan, len(mailboxes)))
    return _copy_flow.with_options(task_runner=runner)(str(plan_path), [m.address for m in mailboxes], direction, label)
