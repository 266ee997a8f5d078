"""The cutover day with what moves with the MX (records, the organisation's PEC clients), end to end on a sandbox
with the surroundings: real Dovecots with submission, BIND, unbound, nginx, the clients' Postfix relay and reader,
Ansible, Prefect's API. Nothing is mocked.

Readiness first shows the clients' switch in check mode. Then the member who owns the federation's PEC account changed its InfoCert password and nobody updated the secret: after
the DNS gate the clients' switch fails its check, the clients gate says NO-GO, and the automatic rollback puts the
clients back on Aruba first (verified), then the MX and every record.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import pytest

from cutover.clients import switch_clients
from cutover.dnschange import set_ttl
from cutover.inventory import load_inventory
from cutover.plan import load_plan
from cutover.sandbox import Sandbox, seed, write_environment

_BASE = int(os.environ.get("PEC_TEST_SANDBOX_BASE_PORT") or os.environ.get("PEC_TEST_BASE_PORT") or "20000")
INFOCERT_USER = "ic-0012345"


@pytest.fixture
def day(prefect_db, sandbox_tools):
    base, lock = sandbox_tools.allocate_base_port(_BASE + 800)
    directory = Path(tempfile.mkdtemp(prefix="pec-test-surround-day-"))
    directory.chmod(0o711)
    env = write_environment(directory, base_port=base, mailboxes=2, surroundings=True)
    text = env.plan.read_text()
    text = re.sub(r"ttl: \{normal: \d+, cutover: \d+\}", "ttl: {normal: 2, cutover: 1}", text)
    text = text.replace("on_nogo: ask", "on_nogo: rollback").replace("propagation_deadline_s: 60",
                                                                     "propagation_deadline_s: 20")
    env.plan.write_text(text)
    plan = load_plan(env.plan)
    box = Sandbox(plan)
    try:
        box.up()
        inventory = load_inventory(plan)
        box.ensure_users(inventory.mailboxes)
        seed(plan, inventory.mailboxes, 4, big_attachments=0, sandbox=box)
        assert switch_clients(plan, "source").ok  # before the day the clients work with Aruba
        set_ttl(plan, "cutover")
        time.sleep(plan.dns.ttl.normal + 0.5)  # the TTL has been low for longer than the old TTL (pre-flight)
        yield env, plan, box
    finally:
        box.down()
        os.close(lock)
        shutil.rmtree(directory, ignore_errors=True)


def _served(port: int, name: str, rdtype: str) -> set[str]:
    answer = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=2)
    return {r.to_text() for rrset in answer.answer if rrset.rdtype.name == rdtype for r in rrset}


def test_a_client_failing_after_the_switch_is_a_no_go_and_the_rollback_restores_every_client(day, prefect_db,
                                                                                              caplog) -> None:
    from flows.cutover_day import cutover
    from flows.readiness import readiness

    env, plan, box = day
    caplog.set_level("DEBUG")
    # Days before: readiness reaches every client host with Ansible and shows the switch in check mode.
    readiness(plan_path=str(env.plan))
    [ready] = list(plan.reports_dir.glob("readiness-report-*.md"))
    text = ready.read_text()
    assert "PEC clients: check mode: 2 clients reached, 2 would change to infocert" in text
    assert f"+relayhost = [localhost]:{plan.target.smtp.port}" in text and f"+user = {INFOCERT_USER}" in text

    good = box.client_login("target", "protocollo")[1]
    box.set_password("target", INFOCERT_USER, "changed-at-infocert-by-the-member")

    result = cutover(plan_path=str(env.plan), operator="test")

    assert result["verdict"] == "ROLLED-BACK"
    phases = {name: status for name, _seconds, status in result["report"]}
    assert phases["DNS checks and gate (attempt 1)"] == "ok"  # MX and records reached every server first
    assert phases["PEC clients to infocert and gate (attempt 1)"] == "failed"
    assert "final delta copy" not in phases  # no copy after a NO-GO
    assert "clients: NO-GO → rollback (automatic, plan on_nogo: rollback)" in result["decisions"]
    [cutover_report] = list(plan.reports_dir.glob("cutover-report-*.md"))
    rule = next(line for line in cutover_report.read_text().splitlines()
                if line.startswith("| every PEC client switched and working |"))
    assert "FAIL" in rule and "0/2 ok" in rule
    assert "SASL authentication failed" in cutover_report.read_text()  # the relay's evidence, in the report

    back = result["rollback"]
    assert back["verdict"] == "rolled-back"
    assert back["surroundings"] == {"records": 4, "provider": "aruba", "clients": 2, "working": 2,
                                    "all_verified": True}
    # The rollback put the clients back before the MX (its report, as written to the reports directory).
    [report] = list(plan.reports_dir.glob("rollback-report-*.md"))
    order = [line.split("|")[1].strip() for line in report.read_text().splitlines() if line.startswith("| ")]
    assert order.index("PEC clients back to aruba") < order.index("MX and records back to aruba")
    # What the servers say now: the relay relays to Aruba's submission, the reader reads Aruba, and every
    # authoritative server serves Aruba's MX and records.
    status = json.loads(box.reader_status.read_text())
    assert status["ok"] and status["server"] == f"127.0.0.1:{plan.source.imap.port}"
    assert f"relayhost = [localhost]:{plan.source.smtp.port}" in (box.relay_dir / "main.cf").read_text()
    for server in plan.dns.authoritative:
        assert _served(server.port, "pec.fnofi.it.", "MX") == {"10 mx.pec.aruba.it."}
        assert _served(server.port, "_submissions._tcp.pec.fnofi.it.", "SRV") == {"0 1 465 smtps.pec.aruba.it."}
        assert _served(server.port, "webmail.pec.fnofi.it.", "CNAME") == {"webmail.pec.it."}

    # The clients' passwords are nowhere in Prefect's database, the reports or the logs.
    secrets = [good, box.client_login("source", "protocollo")[1]]
    assert not [s for s in secrets if s in caplog.text]
    stored = b"".join(p.read_bytes() for p in [*prefect_db.parent.glob(prefect_db.name + "*"),
                                               *plan.reports_dir.glob("*")])
    for secret in secrets:
        assert secret.encode() not in stored
