"""No password, TSIG key, Prefect auth string or operator's TOTP secret anywhere the README says it never goes:
Prefect's database (logs, artifacts, parameters, states), what the session printed and logged, the plan's
reports_dir (reports, the readiness CSV), and ansible-runner's artifacts. Self-contained: it plays its own day (a
refused login included) and waits until Prefect's API has stored every log line of its runs before it reads the
database.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import FlowRunSort
from prefect.logging.handlers import APILogWorker

from cutover.ansible_bridge import private_data_dir
from flows.cutover_day import cutover
from flows.prestage import prestage
from flows.readiness import readiness
from flows.rollback import rollback

from cutover.operators import current_code

from .conftest import session_log_text
from .test_server_auth import OPERATOR, lock


def flow_run_ids() -> set:
    """Every flow run the test server holds (read in pages: the API returns at most 200 at a time)."""
    ids: set = set()
    offset = 0
    with get_client(sync_client=True) as client:
        while page := client.read_flow_runs(limit=200, offset=offset, sort=FlowRunSort.ID_DESC):
            ids |= {r.id for r in page}
            offset += len(page)
    return ids


def wait_for_final_logs(run_ids: set, timeout: float = 120) -> int:
    """Drain the log worker, then poll the API until each run's last engine line ("Finished in state") is stored."""
    APILogWorker.drain_all(timeout=timeout)
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(run_ids))))
            finished = {log.flow_run_id for log in logs if "Finished in state" in log.message and log.task_run_id is None}
            if finished >= run_ids:
                return len(logs)
            assert time.monotonic() < deadline, f"logs of {len(run_ids - finished)} run(s) not stored in {timeout} s"
            time.sleep(0.2)


def test_no_secret_in_prefect_database_logs_reports_or_ansible_artifacts(prefect_db, day_factory, tmp_path):
    day = day_factory(on_nogo="ask", mailboxes=2, messages=4)
    # The day's plan as in production: a locked server's auth string and a named operator whose code the
    # rollback checks against their TOTP secret (neither may be stored anywhere).
    auth, totp = lock(day.plan_path, tmp_path / "control-secrets")
    before = flow_run_ids()
    member = day.inventory.mailboxes[1]
    real = Path(member.target_secret.target).read_text().strip()
    wrong = "Sbagliata-" + real[:6] + "-x9"   # a refused login puts the error paths through their paces
    Path(member.target_secret.target).write_text(wrong)
    try:
        readiness(plan_path=str(day.plan_path))
    finally:
        Path(member.target_secret.target).write_text(real)
    prestage(plan_path=str(day.plan_path))
    assert cutover(plan_path=str(day.plan_path), operator=OPERATOR)["verdict"] == "GO"
    assert rollback(plan_path=str(day.plan_path), reason="secrets test", operator=OPERATOR,
                    operator_code=current_code(totp))["verdict"] == "rolled-back"
    runs = flow_run_ids() - before
    assert len(runs) >= 4 + 3  # the four flows and their copy subflows

    stored_logs = wait_for_final_logs(runs)
    assert stored_logs > 20
    secrets = set(day.secrets) | {wrong, auth.split(":", 1)[1], totp}
    assert all(len(s) >= 8 for s in secrets)

    database = b"".join(p.read_bytes() for p in prefect_db.parent.glob(prefect_db.name + "*"))  # with WAL/SHM
    assert len(database) > 100_000 and b"Finished in state" in database
    printed = session_log_text()
    assert "Finished in state" in printed and "cutover." in printed
    reports = [p for p in day.plan.reports_dir.rglob("*") if p.is_file()]
    assert {p.name.split("-")[0] for p in reports} >= {"readiness", "prestage", "cutover", "rollback"}
    assert any(p.suffix == ".csv" for p in reports)
    artifacts = [p for p in private_data_dir(day.plan).rglob("*") if p.is_file()]
    assert any(p.name == "command" for p in artifacts) and any("job_events" in str(p) for p in artifacts)

    places = {"Prefect database": database, "session logs": printed.encode()}
    places |= {str(p): p.read_bytes() for p in reports + artifacts}
    found = {(where, secrets_index) for where, data in places.items()
             for secrets_index, secret in enumerate(sorted(secrets)) if secret.encode() in data}
    assert not found, f"secret(s) found in: {sorted({where for where, _ in found})}"
