"""The long-running-server path, run as the runbook tells an operator to (issue: no deployment ever ran).

A real ``prefect server start`` in its own process and database; then either ``prefect work-pool create`` +
``prefect deploy --all`` (from ``prefect.yaml``) + ``prefect worker start``, or ``pec-cutover serve --plan P``.
Every flow is started as a deployment run on the sandbox's real servers and must reach Completed with its
report artifact; the cutover starts from a schedule at the plan's window start and again by hand, on both paths; a
rollback starts from ``prefect deployment run`` and from the UI's Run request. Nothing is mocked.
"""

from __future__ import annotations

import os
import re
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cutover.errors import SandboxError
from cutover.operators import current_code
from cutover.sandbox._prefect import PrefectStack

from .conftest import Day
from .test_cutover_day import mx_everywhere

POOL = "pec-cutover"
OPERATOR = "Maria Verdi"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_window(plan_path: Path, start: datetime, length: timedelta = timedelta(hours=1)) -> None:
    """Move the plan's window (the test's own copy of the plan): the window overridden for the test."""
    text = plan_path.read_text()
    text, n = re.subn(r"start: .*\n  end: .*\n",
                      f"start: {start.isoformat(timespec='seconds')}\n  end: {(start + length).isoformat(timespec='seconds')}\n",
                      text)
    assert n == 1
    plan_path.write_text(text)


def soon(seconds: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


@pytest.fixture
def locked_day(tmp_path: Path, day_factory):
    """A sandbox day whose plan locks its Prefect server (prefect.auth) and names an operator, as on the day."""
    from .test_server_auth import lock

    day: Day = day_factory(window=(soon(3600).isoformat(), soon(7200).isoformat()))
    auth, totp = lock(day.plan_path, tmp_path / "control-secrets")
    return day, totp


@pytest.fixture
def stack(tmp_path: Path, locked_day):
    """The runbook's server: `pec-cutover server start --plan P`; every `prefect` command through
    `pec-cutover prefect --plan P -- ...`."""
    stack = PrefectStack(home=tmp_path / "prefect-home", port=free_port(), plan_path=locked_day[0].plan_path)
    stack.start_server()
    yield stack
    stack.stop()


def completed_with_report(stack: PrefectStack, run_id: str, report_key: str, timeout: float = 300) -> str:
    """Wait for the run; it must be Completed and have left its report: the report's markdown."""
    run = stack.wait_final(run_id, timeout=timeout)
    assert run.state_type == "COMPLETED", f"{run.name}: {run.state_name}: {run.message}"
    reports = {a.get("key"): a.get("data") for a in stack.artifacts(run_id)}
    assert report_key in reports, f"{run.name} left no {report_key} artifact (it has {sorted(k for k in reports if k)})"
    return reports[report_key]


# The whole day as deployment runs, each in a new process (~8 min on a loaded machine): past the suite's 600 s.
@pytest.mark.timeout(1200)
def test_deploy_all_with_a_worker_runs_every_flow(stack: PrefectStack, locked_day, tmp_path: Path):
    day, totp = locked_day
    plan = {"plan_path": str(day.plan_path)}
    # The runbook's commands, as written there. The worker starts outside the checkout, as a service would:
    # prefect.yaml's pull step brings every run to PEC_CUTOVER_HOME.
    stack.cli("work-pool", "create", POOL, "--type", "process")
    stack.cli("--no-prompt", "deploy", "--all")
    (tmp_path / "elsewhere").mkdir()
    stack.start_worker(POOL, "worker-1", cwd=tmp_path / "elsewhere")

    # The plan's path relative to PEC_CUTOVER_HOME, as the runbook allows.
    relative = os.path.relpath(day.plan_path, stack.pec_cutover_home)
    completed_with_report(stack, stack.run_deployment("readiness/readiness", {"plan_path": relative}),
                          "readiness-report")
    prestage = stack.run_deployment("prestage/prestage", plan)
    completed_with_report(stack, prestage, "prestage-report")
    assert stack.flow_run(prestage).name == f"prestage pec.fnofi.it ({len(day.inventory)} mailboxes)"
    assert day.digests("target", day.inventory.mailboxes[0].address) == \
        day.digests("source", day.inventory.mailboxes[0].address)

    # The day: the cutover is scheduled at the window start, a few seconds ahead, and the worker picks it up.
    # Ahead by more than `pec-cutover schedule` takes to start on a loaded machine (8 s was not: "the window
    # starts ..., not in the future").
    # On a machine at load 14 even 30 s was too little once: then the next try gives it more.
    for ahead in (30, 90, 180):
        window_start = soon(ahead)
        set_window(day.plan_path, window_start)
        try:
            out = stack.cli("schedule", "--plan", str(day.plan_path), program="pec-cutover")
            break
        except SandboxError as exc:
            if "not in the future" not in str(exc) or ahead == 180:
                raise
    scheduled = re.search(r"run ([0-9a-f-]{36})", out).group(1)
    assert stack.flow_run(scheduled).expected_start == window_start
    report = completed_with_report(stack, scheduled, "cutover-report")
    assert "inside the window" in report and "**Verdict: GO:" in report
    assert mx_everywhere(day, "target")

    # A rollback by hand must name an operator the plan knows, with the code of the moment. `prefect deployment run`
    # (or the UI's "Run" button) never meets the CLI's check: the flow itself refuses, at once, and changes nothing.
    wrong = "000000" if current_code(totp) != "000000" else "000001"
    refused_runs = set()
    for who, code, words in [("Somebody Else", current_code(totp), "unknown operator 'Somebody Else'"),
                             (OPERATOR, wrong, "wrong or expired one-time code")]:
        refused = stack.run_deployment("rollback/rollback", {**plan, "reason": "not allowed", "operator": who,
                                                             "operator_code": code})
        final = stack.wait_final(refused, timeout=180)
        assert final.state_type == "FAILED" and words in final.message, f"{final.state_name}: {final.message}"
        assert not [a for a in stack.artifacts(refused) if a.get("key") == "rollback-report"]
        refused_runs.add(refused)
    assert mx_everywhere(day, "target")

    # A rollback asked for with a code from five minutes ago fails and changes nothing.
    stale = stack.run_deployment("rollback/rollback", {**plan, "reason": "old code", "operator": OPERATOR,
                                                       "operator_code": current_code(totp, now=time.time() - 300)})
    refused = stack.wait_final(stale)
    assert refused.state_type == "FAILED" and "wrong or expired one-time code" in refused.message, refused
    assert mx_everywhere(day, "target")

    # A rollback started on demand. Its code is checked at the moment the run was asked for: here the run starts
    # over a minute later (the worker may fetch it 10 s early), when the code has expired, as a busy worker could.
    run = stack.run_deployment("rollback/rollback", {**plan, "reason": "rehearsed by hand", "operator": OPERATOR,
                                                     "operator_code": current_code(totp)}, "--start-in", "75 seconds")
    completed_with_report(stack, run, "rollback-report")
    assert mx_everywhere(day, "source")

    # A second attempt, started by hand inside the window: TTL lowered again (the GO restored it), then the run.
    stack.cli("dns", "ttl", "--lower", "--plan", str(day.plan_path), program="pec-cutover")
    time.sleep(day.plan.dns.ttl.normal + 0.5)  # the pre-flight wants the low TTL held for the old TTL
    run = stack.run_deployment("cutover/cutover", {**plan, "operator": "test"})
    assert "**Verdict: GO:" in completed_with_report(stack, run, "cutover-report")
    assert mx_everywhere(day, "target")
    # Every run was picked up by the worker and run in its own process; none crashed (the refused one failed).
    assert {r.state_name for d in ("readiness", "prestage", "cutover", "rollback")
            for r in stack.flow_runs(f"{d}/{d}") if r.id not in refused_runs | {stale}} == {"Completed"}


def test_pec_cutover_serve_runs_every_flow(stack: PrefectStack, locked_day):
    day, totp = locked_day
    # Serve schedules the cutover at the plan's window start: far enough ahead for serve to register it.
    window_start = soon(40)
    set_window(day.plan_path, window_start)
    stack.start_serve(day.plan_path)
    for name in ("readiness/readiness", "prestage/prestage", "cutover/cutover", "rollback/rollback"):
        stack.wait_deployment(name)

    # While the cutover waits for its window, readiness runs on demand (its parameters are the served plan's).
    readiness = stack.run_deployment("readiness/readiness")
    completed_with_report(stack, readiness, "readiness-report")

    cutover_runs = _wait_for_runs(stack, "cutover/cutover")
    assert len(cutover_runs) == 1, "serve scheduled the cutover once, at the window start"
    assert cutover_runs[0].expected_start == window_start
    report = completed_with_report(stack, cutover_runs[0].id, "cutover-report")
    assert "inside the window" in report and "**Verdict: GO:" in report
    assert mx_everywhere(day, "target")

    # The rollback started from the UI: its Run button's request, the form's values as typed (the code a string).
    rollback = stack.run_from_ui("rollback/rollback", {"reason": "rehearsed from the UI", "operator": OPERATOR,
                                                       "operator_code": current_code(totp)})
    assert "rehearsed from the UI" in completed_with_report(stack, rollback, "rollback-report")
    assert mx_everywhere(day, "source")
    # After the rollback lifted the freeze, a new pre-stage may run (the second attempt's preparation).
    completed_with_report(stack, stack.run_deployment("prestage/prestage"), "prestage-report")

    # A second attempt started by hand inside the window, on the served deployment: TTL lowered again, then the run.
    stack.cli("dns", "ttl", "--lower", "--plan", str(day.plan_path), program="pec-cutover")
    time.sleep(day.plan.dns.ttl.normal + 0.5)  # the pre-flight wants the low TTL held for the old TTL
    run = stack.run_deployment("cutover/cutover", {"operator": "test"})
    assert "**Verdict: GO:" in completed_with_report(stack, run, "cutover-report")
    assert mx_everywhere(day, "target")
    assert {r.state_name for d in ("readiness", "prestage", "cutover", "rollback")
            for r in stack.flow_runs(f"{d}/{d}")} == {"Completed"}


def _wait_for_runs(stack: PrefectStack, deployment: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runs := stack.flow_runs(deployment):
            return runs
        time.sleep(1)
    raise AssertionError(f"no run of {deployment} was scheduled within {timeout} s")
