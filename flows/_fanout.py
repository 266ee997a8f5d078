"""Copy on a work pool's workers (plan ``copy.fan_out``): chunks of mailboxes as deployment runs, supervised.

The parent (the prestage or the cutover's final delta) splits the mailboxes into chunks and starts one run of the
chunk deployment per chunk (``run_deployment``); whatever worker of the pool is online takes it. Each chunk run
holds its lease in the shared ledger, copies its mailboxes in lanes (``flows._copy``, under the providers' strict
global concurrency limits, shared by every worker) and leaves its result as an artifact. The parent watches each
chunk (Prefect's state, the lease) and runs again a chunk whose run failed or whose holder died
(``cutover.fanout.chunk_verdict``).
"""

from __future__ import annotations

import os
import socket
import time

from prefect import flow, get_client
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.deployments import run_deployment
from prefect.runtime import flow_run as current_run
from prefect.states import Crashed

from cutover.errors import LedgerError
from cutover.fanout import ChunkLease, ChunkResult, ChunkWatch, chunk_verdict, gather_reports, split_chunks
from cutover.inventory import Mailbox, load_inventory
from cutover.ledger import open_ledger
from cutover.mailsync import CopyReport
from cutover.plan import Plan, load_plan
from flows._artifacts import log, publish_table

_RESULT = "```json\n"


def _result_key(label: str, chunk: int) -> str:
    return f"{label}-chunk-{chunk}-result"


@flow(name="copy chunk", flow_run_name="{label} chunk {chunk} of {chunks}", persist_result=False)
def copy_chunk(plan_path: str, addresses: list[str], direction: str, label: str, chunk: int, chunks: int,
               run_key: str) -> dict:
    """One chunk on this worker: its lease held throughout, its mailboxes copied, its result left as an artifact."""
    from flows._copy import copy_all

    plan = load_plan(plan_path)
    ledger = open_ledger(plan)
    lease = ChunkLease(ledger, run_key, chunk)
    try:
        # a run the parent gave up on too early (a slow start) may still hold it: let it finish, then check its work
        if not lease.acquire(wait_s=plan.copy_settings.fan_out.stale_after_s * 10 if plan.copy_settings.fan_out else 0):
            raise LedgerError(f"{label} chunk {chunk}: another run of this chunk holds its lease; not copying twice")
        mailboxes = list(load_inventory(plan).select(addresses))
        report = copy_all(plan_path, plan, mailboxes, direction=direction, label=f"{label}-chunk-{chunk}",
                          in_process=True)
        worker = os.environ.get("PREFECT__WORKER_NAME") or socket.gethostname()
        result = ChunkResult(worker, report.mailboxes)
        create_markdown_artifact(f"{_RESULT}{result.to_json()}\n```", key=_result_key(label, chunk),
                                 description=f"{label} chunk {chunk} of {chunks}: result for the parent run "
                                             f"(worker {worker})")
        return {"worker": worker, "mailboxes": len(report.mailboxes), "verified": report.verified_count}
    finally:
        lease.release()
        ledger.close()


def fan_out(plan_path: str, plan: Plan, mailboxes: list[Mailbox], *, direction: str, label: str) -> CopyReport:
    """Copy ``mailboxes`` as chunk runs on the pool's workers; returns one report per mailbox (in inventory order)."""
    settings = plan.copy_settings.fan_out
    assert settings is not None
    started = time.monotonic()
    run_key = f"{current_run.get_id() or 'local'}:{label}"
    chunks = [ChunkWatch(i, part) for i, part in enumerate(split_chunks([m.address for m in mailboxes],
                                                                        settings.chunk_mailboxes), start=1)]
    results: dict[int, ChunkResult] = {}
    ledger = open_ledger(plan)
    try:
        for chunk in chunks:
            _start(chunk, settings.deployment, plan_path, direction, label, len(chunks), run_key)
        log("%s: %d mailboxes in %d chunks on deployment %s", label, len(mailboxes), len(chunks), settings.deployment)
        waiting = list(chunks)
        with get_client(sync_client=True) as client:
            while waiting:
                time.sleep(settings.poll_s)
                for chunk in list(waiting):
                    run = client.read_flow_run(chunk.run_id)
                    state = run.state.type.value if run.state else "SCHEDULED"
                    held = ChunkLease(ledger, run_key, chunk.number).held()
                    free_for = chunk.observe(state, held, time.monotonic())
                    verdict = chunk_verdict(state, held, free_for, settings.stale_after_s, chunk.attempt,
                                            settings.attempts, settings.pending_after_s)
                    if verdict == "done":
                        results[chunk.number] = _read_result(client, chunk.run_id, label, chunk.number)
                        waiting.remove(chunk)
                        log("%s chunk %d: done by worker %s (attempt %d)", label, chunk.number,
                            results[chunk.number].worker, chunk.attempt)
                    elif verdict == "rerun":
                        why = (f"Prefect says {state}" if state not in ("PENDING", "RUNNING") else
                               f"its lease was free for {free_for:.0f} s while Prefect said {state}: its worker died")
                        log("%s chunk %d: attempt %d lost (%s); running it again", label, chunk.number, chunk.attempt,
                            why)
                        if state in ("PENDING", "RUNNING"):
                            client.set_flow_run_state(chunk.run_id, Crashed(message=f"pec-cutover: {why}"), force=True)
                        _start(chunk, settings.deployment, plan_path, direction, label, len(chunks), run_key)
                    elif verdict == "failed":  # its mailboxes are reported failed, never silently absent
                        waiting.remove(chunk)
                        log("%s chunk %d: given up after %d attempts (%s)", label, chunk.number, chunk.attempt, state)
    finally:
        ledger.close()
    ordered, per_worker = gather_reports(chunks, results, [m.address for m in mailboxes], direction, label)
    result = CopyReport(mailboxes=ordered, seconds=time.monotonic() - started, direction=direction)
    result.workers = per_worker  # type: ignore[attr-defined]  # read by flows.prestage's summary
    publish_table([{"worker": w, "mailboxes": n} for w, n in sorted(per_worker.items())], f"{label}-workers",
                  f"{label}: mailboxes per worker")
    return result


def _start(chunk: ChunkWatch, deployment: str, plan_path: str, direction: str, label: str, chunks: int,
           run_key: str) -> None:
    run = run_deployment(deployment, parameters={
        "plan_path": str(plan_path), "addresses": chunk.addresses, "direction": direction, "label": label,
        "chunk": chunk.number, "chunks": chunks, "run_key": run_key}, timeout=0, tags=["pec-cutover"])
    chunk.started(str(run.id))


def _read_result(client, run_id: str, label: str, number: int) -> ChunkResult:
    found = client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), key=ArtifactFilterKey(any_=[_result_key(label, number)])))
    if not found:
        raise RuntimeError(f"{label} chunk {number}: run {run_id} completed without its result artifact")
    text = found[0].data or ""
    return ChunkResult.from_json(text.split(_RESULT, 1)[1].rsplit("```", 1)[0])
