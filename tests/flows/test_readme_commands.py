"""The README's commands, each run once as an operator types it: the installed ``.venv/bin/pec-cutover`` in a
subprocess, on a sandbox it starts itself (``sandbox up|seed|status|down``), through the day (``dns ttl --lower``,
``run readiness|prestage|cutover|rollback``, ``gate decide``) and its last row (``dns ttl --restore``,
``evidence export``/``verify``). The subprocesses talk to this session's Prefect
test server (``PREFECT_API_URL``), so the test reads their runs back; outcomes are read from the servers.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
from prefect.settings import PREFECT_API_URL

from cutover.inventory import load_inventory
from cutover.operators import current_code
from cutover.plan import load_plan
from cutover.sandbox import Sandbox, write_environment

from .conftest import wait_paused, wait_ttl_low_long_enough

PEC_CUTOVER = Path(sys.executable).parent / "pec-cutover"
_BASE = int(os.environ.get("PEC_TEST_SANDBOX_BASE_PORT") or os.environ.get("PEC_TEST_BASE_PORT") or "20000")


def mx_and_ttl(plan, port: int) -> tuple[set[str], int | None]:
    answer = dns.query.udp(dns.message.make_query(plan.domain, dns.rdatatype.MX), "127.0.0.1", port=port, timeout=2)
    for rrset in answer.answer:
        return {rr.exchange.to_text() for rr in rrset}, rrset.ttl
    return set(), None


@pytest.fixture
def environment(tmp_path: Path, sandbox_tools, prefect_db):
    """A sandbox environment written but not started (the commands start it), and the subprocesses' env."""
    base, lock = sandbox_tools.allocate_base_port(_BASE + 500)
    directory = tmp_path / "readme"
    sandbox_tools.make_traversable(tmp_path)
    env = write_environment(directory, base_port=base, mailboxes=2)
    text = env.plan.read_text()
    text = re.sub(r"ttl: \{normal: \d+, cutover: \d+\}", "ttl: {normal: 2, cutover: 1}", text)
    env.plan.write_text(text.replace("max_response_ms: 2000", "max_response_ms: 20000"))
    process_env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "200",
                   "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "LC_ALL": "C.UTF-8"}
    try:
        yield env, process_env
    finally:
        Sandbox(load_plan(env.plan)).down()   # whatever the test reached
        os.close(lock)


def pec(process_env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(PEC_CUTOVER), *args], env=process_env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def test_the_readme_commands_through_the_installed_pec_cutover(environment) -> None:
    env, process_env = environment
    P = str(env.plan)
    plan = load_plan(env.plan)
    ns1, resolver = plan.dns.primary.port, plan.dns.resolvers[0].port
    assert PEC_CUTOVER.is_file()

    up = pec(process_env, "sandbox", "up", "--plan", P)
    assert up.returncode == 0, up.stdout + up.stderr
    box = Sandbox(plan)
    assert all(s.running for s in box.status())

    seeded = pec(process_env, "sandbox", "seed", "--plan", P, "--messages", "4")
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    members = [m.address for m in load_inventory(plan)]
    for address in members:
        client = box.admin_session("source", address)
        try:
            assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] >= 1
        finally:
            client.logout()

    status = pec(process_env, "sandbox", "status", "--plan", P)
    assert status.returncode == 0 and status.stdout.count(" up") >= 6, status.stdout

    dry = pec(process_env, "dns", "ttl", "--lower", "--plan", P, "--dry-run")
    assert dry.returncode == 0 and mx_and_ttl(plan, ns1)[1] == plan.dns.ttl.normal, dry.stdout + dry.stderr
    lowered = pec(process_env, "dns", "ttl", "--lower", "--plan", P)
    assert lowered.returncode == 0, lowered.stdout + lowered.stderr
    assert mx_and_ttl(plan, ns1)[1] == plan.dns.ttl.cutover
    wait_ttl_low_long_enough(plan)

    ready = pec(process_env, "run", "readiness", "--plan", P)
    assert ready.returncode == 0 and "'ready': 2" in ready.stdout, ready.stdout + ready.stderr
    assert list(plan.reports_dir.glob("readiness-*.csv"))

    staged = pec(process_env, "run", "prestage", "--plan", P)
    assert staged.returncode == 0 and "'verified': 2" in staged.stdout, staged.stdout + staged.stderr

    box.stop_service("webmail")   # the access gate will pause the run for a decision
    day = subprocess.Popen([str(PEC_CUTOVER), "run", "cutover", "--plan", P, "--operator", "Maria Verdi"],
                           env=process_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           stdin=subprocess.DEVNULL)
    try:
        run_id = wait_paused(P)
        assert mx_and_ttl(plan, ns1)[0] == {r.host for r in plan.target.mx}
        box.start_service("webmail")
        operator = plan.operators[0] if plan.operators else None  # the plan's named operator, with a code
        who = ["--operator", operator.name, "--code", current_code(plan.secret(operator.totp_secret).reveal())] \
            if operator else ["--operator", "Maria Verdi"]
        decided = pec(process_env, "gate", "decide", run_id, "--retry", *who, "--reason", "webmail back", "--plan", P)
        assert decided.returncode == 0 and f"run {run_id} resumed with: retry" in decided.stdout, decided.stdout
        out, err = day.communicate(timeout=300)
    finally:
        if day.poll() is None:
            day.kill()
    assert day.returncode == 0 and "'verdict': 'GO'" in out, out + err
    # The TTL stays at the cutover value through hypercare (ttl.restore_after).
    assert mx_and_ttl(plan, ns1) == ({r.host for r in plan.target.mx}, plan.dns.ttl.cutover)

    back = pec(process_env, "run", "rollback", "--plan", P, "--reason", "README rehearsal", "--operator", "Luca Neri")
    assert back.returncode == 0 and "'verdict': 'rolled-back'" in back.stdout, back.stdout + back.stderr
    assert mx_and_ttl(plan, ns1)[0] == {r.host for r in plan.source.mx}
    assert mx_and_ttl(plan, resolver)[0] == {r.host for r in plan.source.mx}

    # T+7, the README's last row: the normal TTL back (served by the primary), then the auditor's bundle.
    restored = pec(process_env, "dns", "ttl", "--restore", "--plan", P)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert mx_and_ttl(plan, ns1) == ({r.host for r in plan.source.mx}, plan.dns.ttl.normal)
    bundle = env.plan.parent / "evidence-bundle"
    exported = pec(process_env, "evidence", "export", "--plan", P, "--out", str(bundle))
    assert exported.returncode == 0 and "manifest" in exported.stdout, exported.stdout + exported.stderr
    checked = pec(process_env, "evidence", "verify", str(bundle))
    assert checked.returncode == 0 and "manifest verified" in checked.stdout, checked.stdout + checked.stderr
    with (bundle / "runs" / "index.csv").open(newline="") as fh:
        assert {row["flow"] for row in csv.DictReader(fh)} >= {"readiness", "prestage", "cutover", "rollback"}

    down = pec(process_env, "sandbox", "down", "--plan", P)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(s.running or s.pid for s in box.status())
