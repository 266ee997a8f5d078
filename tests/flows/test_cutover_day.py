"""The cutover day end to end: Prefect flows on the sandbox's real servers (nothing mocked).

Scenarios: GO (with the readiness CSV of who must act, and the TTL back to normal at the end); NO-GO with automatic
rollback; a paused gate resumed with "continue" and with "rollback"; outside a window that has ended (refused, and
overridden with a reason); a second cutover refused while one runs; rollback run twice; mail that reached the
target after the switch copied back. More promises of the runbook: test_runbook.py; secrets: test_no_secret.py.
"""

from __future__ import annotations

import csv
import json
import time
from email.message import EmailMessage
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, FlowRunFilter,
                                            FlowRunFilterName, TaskRunFilter, TaskRunFilterFlowRunId)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.flow_runs import resume_flow_run

from cutover import freeze
from cutover.errors import FreezeError
from cutover.limits import mailbox_workers
from flows.cutover_day import cutover
from flows.history import decide_gate, recent_runs
from flows.prestage import prestage
from flows.readiness import readiness
from flows.rollback import rollback

from .conftest import Day, run_in_thread, wait_paused


def mx_at(day: Day, server: str) -> set[str]:
    """The MX hosts that one sandbox server answers now (ns1, ns2 authoritative; resolver recursive)."""
    port = {"ns1": day.plan.dns.authoritative[0].port, "ns2": day.plan.dns.authoritative[1].port,
            "resolver": day.plan.dns.resolvers[0].port}[server]
    query = dns.message.make_query(day.plan.domain, dns.rdatatype.MX)
    if server != "resolver":
        query.flags &= ~dns.flags.RD
    answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
    return {rr.exchange.to_text() for rrset in answer.answer for rr in rrset}


def mx_everywhere(day: Day, provider: str) -> bool:
    expected = {r.host for r in day.plan.provider(provider).mx}
    return all(mx_at(day, s) == expected for s in ("ns1", "ns2", "resolver"))


def new_mail(marker: str, to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "posta-certificata@pec.aruba.it"
    msg["To"] = to
    msg["Subject"] = f"POSTA CERTIFICATA: {marker}"
    msg["Message-ID"] = f"<{marker}@pec.test>"
    msg.set_content(f"arrived during the cutover day: {marker}\n")
    return msg.as_bytes()


def artifact_exists(key: str) -> bool:
    with get_client(sync_client=True) as client:
        return bool(client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))))


def copy_run_evidence(label: str) -> tuple[list[str], list[float], int]:
    """The newest copy subflow named ``label``: its task run names, its progress artifact's values, and the rows
    of its per-mailbox table."""
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[label])),
                                      sort=FlowRunSort.START_TIME_DESC, limit=1)
        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id])))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    progress = [float(a.data) for a in artifacts if a.type == "progress"]
    tables = [a for a in artifacts if a.type == "table"]
    rows = sum(len(t.data if isinstance(t.data, list) else json.loads(t.data)) for t in tables)
    return sorted(t.name for t in tasks), progress, rows


def served_mx_ttl(day: Day, server: str) -> tuple[int | None, int]:
    """(MX TTL, SOA serial) one authoritative server serves now."""
    port = {"ns1": day.plan.dns.authoritative[0].port, "ns2": day.plan.dns.authoritative[1].port}[server]
    ttl, serial = None, 0
    for rdtype in (dns.rdatatype.MX, dns.rdatatype.SOA):
        answer = dns.query.udp(dns.message.make_query(day.plan.domain, rdtype), "127.0.0.1", port=port, timeout=2)
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.MX:
                ttl = rrset.ttl
            else:
                serial = rrset[0].serial
    return ttl, serial


def test_go_path_outside_window_with_override(day_factory):
    day = day_factory(window=("2026-01-01T06:00:00", "2026-01-01T10:00:00"))  # a window that has ended
    first, second = day.inventory.mailboxes[0].address, day.inventory.mailboxes[1].address

    # T-7: one member changed the password on InfoCert; readiness lists them in the CSV in reports_dir.
    real = Path(day.inventory.mailboxes[1].target_secret.target).read_text().strip()
    day.box.set_password("target", second, "changed-by-the-member-1")
    try:
        summary = readiness(plan_path=str(day.plan_path))
    finally:
        day.box.set_password("target", second, real)
    assert (summary["ready"], summary["bad-credentials"]) == (len(day.inventory) - 1, 1), summary
    [csv_path] = day.plan.reports_dir.glob("readiness-*.csv")
    with csv_path.open(newline="") as fh:
        rows = {row["address"]: row for row in csv.DictReader(fh)}
    assert set(rows) == {m.address for m in day.inventory}
    assert rows[second]["status"] == "bad-credentials" and "2FA" in rows[second]["action"], rows[second]
    assert all(r["status"] == "ready" for a, r in rows.items() if a != second)
    assert not any(secret in csv_path.read_text() for secret in day.secrets)
    prestage(plan_path=str(day.plan_path))
    # The copy runs in a few lanes (one task run, one lease of the providers' slots each), never a task per mailbox;
    # every mailbox is in the table and the progress reached 100 %.
    tasks, progress, rows = copy_run_evidence("prestage")
    lanes = mailbox_workers(day.plan, len(day.inventory))
    assert tasks == [f"forward copy lane {n} of {lanes}" for n in range(1, lanes + 1)]
    assert progress == [100.0] and rows == len(day.inventory), (progress, rows)
    day.box.deliver("source", first, new_mail("during-the-day-1", first))   # mail keeps arriving at Aruba

    with pytest.raises(FreezeError, match="outside the window"):
        cutover(plan_path=str(day.plan_path))
    assert mx_everywhere(day, "source"), "a refused cutover must change nothing"

    result = cutover(plan_path=str(day.plan_path), override_window="CAB-42: window moved by the board", operator="Test Ops")
    assert result["verdict"] == "GO", result
    assert mx_everywhere(day, "target")
    for mailbox in day.inventory:
        source, target = day.digests("source", mailbox.address), day.digests("target", mailbox.address)
        assert source == target and sum(source.values()) > 10, mailbox.address
    assert day.inbox_has("target", first, b"<during-the-day-1@pec.test>") == 1
    assert freeze.current(day.plan) is None, "freeze lifted at the end"
    assert artifact_exists("cutover-report") and artifact_exists("prestage-report") and artifact_exists("readiness-report")
    reports = [p.read_text() for p in day.plan.reports_dir.glob("cutover-report-*.md")]
    assert len(reports) == 2, "the refused run leaves its report too"
    refused = next(r for r in reports if "Verdict: FAILED" in r)
    assert "outside the window" in refused
    done = next(r for r in reports if "Verdict: GO" in r)
    assert "override: CAB-42" in done and "final delta copy" in done and "accessibility checks" in done
    history = recent_runs(10)
    assert any(r.flow == "cutover" and r.state == "Completed" for r in history)
    # Complete: the MX TTL stays at the cutover value through hypercare (ttl.restore_after, 7 days by default) on
    # every authoritative server (ns2 read at ns1's serial), so a rollback still propagates in minutes.
    ns1_ttl, ns1_serial = served_mx_ttl(day, "ns1")
    assert ns1_ttl == day.plan.dns.ttl.cutover
    deadline = time.monotonic() + 30
    while served_mx_ttl(day, "ns2")[1] != ns1_serial:
        assert time.monotonic() < deadline, "ns2 never reached ns1's serial"
        time.sleep(0.2)
    assert served_mx_ttl(day, "ns2")[0] == day.plan.dns.ttl.cutover
    assert "dns ttl --restore" in done


def test_nogo_rolls_back_automatically_and_copies_new_target_mail_back(day_factory):
    day = day_factory(on_nogo="rollback")
    who = day.inventory.mailboxes[1].address
    prestage(plan_path=str(day.plan_path))
    day.box.stop_service("webmail")  # InfoCert webmail down after the switch
    # On InfoCert before the switch without pec-cutover copying it (a provider's welcome message): below the
    # switch mark, so the rollback leaves it there (issue 11: only what reached the target after the switch).
    day.box.deliver("target", who, new_mail("reached-infocert-1", who))

    result = cutover(plan_path=str(day.plan_path), operator="Test Ops")
    assert result["verdict"] == "ROLLED-BACK", result
    assert any("rollback (automatic" in d for d in result["decisions"])
    assert mx_everywhere(day, "source")
    assert day.inbox_has("source", who, b"<reached-infocert-1@pec.test>") == 0
    assert freeze.current(day.plan) is None


def test_paused_gate_resumed_with_rollback_then_rollback_twice(day_factory):
    day = day_factory(on_nogo="ask")
    who = day.inventory.mailboxes[0].address
    prestage(plan_path=str(day.plan_path))
    day.box.stop_service("webmail")

    thread, out = run_in_thread(lambda: cutover(plan_path=str(day.plan_path), operator="Test Ops"))
    run_id = wait_paused(day.plan_path)
    assert mx_everywhere(day, "target")
    day.box.deliver("target", who, new_mail("after-switch-1", who))   # arrives at InfoCert after the MX moved

    with pytest.raises(FreezeError, match="another cutover is running"):
        cutover(plan_path=str(day.plan_path))
    with pytest.raises(FreezeError, match="pre-stage copy refused"):
        prestage(plan_path=str(day.plan_path))
    # The form's rules, checked by our client before anything is sent: the action is one of the three.
    with pytest.raises(ValueError, match=r"(?s)action\b.*Input should be 'rollback', 'continue' or 'retry'"):
        decide_gate(run_id, "maybe", "Test Ops", "typo")
    # The server validates the input against the form too (not only our client); the run stays paused.
    with pytest.raises(RuntimeError, match=r"Cannot resume this run: .*field 'action'.*'maybe' is not one of"):
        resume_flow_run(run_id, run_input={"action": "maybe", "operator": "Test Ops", "reason": "a typo"})
    assert wait_paused(day.plan_path) == run_id

    decide_gate(run_id, "rollback", "Maria Verdi", "webmail down after the switch")
    thread.join(180)
    assert not thread.is_alive() and "error" not in out, out.get("error")
    assert out["result"]["verdict"] == "ROLLED-BACK"
    assert any("rollback by Maria Verdi: webmail down after the switch" in d for d in out["result"]["decisions"])
    assert mx_everywhere(day, "source")
    assert day.inbox_has("source", who, b"<after-switch-1@pec.test>") == 1

    again = rollback(plan_path=str(day.plan_path), reason="second run, must be harmless", operator="Test Ops")
    assert again["verdict"] == "rolled-back" and again["copied_back"] == 0
    assert day.inbox_has("source", who, b"<after-switch-1@pec.test>") == 1, "nothing duplicated"
    assert mx_everywhere(day, "source")


def test_paused_gate_resumed_with_continue(day_factory):
    day = day_factory(on_nogo="ask", mailboxes=2, messages=6)
    prestage(plan_path=str(day.plan_path))
    day.box.stop_service("webmail")

    thread, out = run_in_thread(lambda: cutover(plan_path=str(day.plan_path), operator="Test Ops"))
    run_id = wait_paused(day.plan_path)
    decide_gate(run_id, "continue", "Luca Neri", "webmail outage announced by InfoCert, IMAP fine")
    thread.join(180)
    assert "error" not in out, out.get("error")
    assert out["result"]["verdict"] == "GO" and out["result"]["overridden"] == ["access"]
    assert any("continue by Luca Neri" in d for d in out["result"]["decisions"])
    report = next(r.read_text() for r in day.plan.reports_dir.glob("cutover-report-*.md"))
    assert "NO-GO OVERRIDDEN at gate(s) access" in report
    assert mx_everywhere(day, "target")
    assert freeze.current(day.plan) is None


def test_paused_gate_retry_after_the_fault_is_fixed(day_factory):
    day = day_factory(on_nogo="ask", mailboxes=2, messages=6)
    prestage(plan_path=str(day.plan_path))
    day.box.stop_service("webmail")

    thread, out = run_in_thread(lambda: cutover(plan_path=str(day.plan_path), operator="Test Ops"))
    run_id = wait_paused(day.plan_path)
    day.box.start_service("webmail")  # InfoCert fixed their webmail
    decide_gate(run_id, "retry", "Anna Blu", "InfoCert says webmail is back")
    thread.join(180)
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert result["verdict"] == "GO"
    assert any("retry by Anna Blu" in d for d in result["decisions"])
    assert any("access: GO → proceed" in d for d in result["decisions"])
    phases = [name for name, _s, _status in result["report"]]
    assert "accessibility checks and gate (attempt 2)" in phases
