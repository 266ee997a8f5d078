"""The cutover day end to end: Prefect flows on the sandbox's real servers (nothing mocked).

Scenarios: GO; NO-GO with automatic rollback; a paused gate resumed with "continue" and with "rollback";
outside the window (refused, and overridden with a reason); a second cutover refused while one runs; rollback
run twice; mail that reached the target after the switch copied back; no secret anywhere in Prefect's database.
"""

from __future__ import annotations

import time
from email.message import EmailMessage

import dns.message
import dns.query
import dns.rdatatype
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.flow_runs import resume_flow_run

from cutover import freeze
from cutover.errors import FreezeError
from flows.cutover_day import cutover
from flows.history import decide_gate, recent_runs
from flows.prestage import prestage
from flows.readiness import readiness
from flows.rollback import rollback

from .conftest import SECRETS_SEEN, Day, run_in_thread, session_log_text, wait_paused


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


def test_go_path_outside_window_with_override(day_factory):
    day = day_factory(window=("2026-01-01T06:00:00", "2026-01-01T10:00:00"))
    first = day.inventory.mailboxes[0].address

    summary = readiness(plan_path=str(day.plan_path))
    assert summary["ready"] == len(day.inventory), summary
    prestage(plan_path=str(day.plan_path))
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


def test_nogo_rolls_back_automatically_and_copies_new_target_mail_back(day_factory):
    day = day_factory(on_nogo="rollback")
    who = day.inventory.mailboxes[1].address
    prestage(plan_path=str(day.plan_path))
    day.box.stop_service("webmail")  # InfoCert webmail down after the switch
    # Mail that reached InfoCert without pec-cutover copying it (the ledger does not know it).
    day.box.deliver("target", who, new_mail("reached-infocert-1", who))

    result = cutover(plan_path=str(day.plan_path), operator="Test Ops")
    assert result["verdict"] == "ROLLED-BACK", result
    assert any("rollback (automatic" in d for d in result["decisions"])
    assert mx_everywhere(day, "source")
    assert day.inbox_has("source", who, b"<reached-infocert-1@pec.test>") == 1
    assert freeze.current(day.plan) is None


def test_paused_gate_resumed_with_rollback_then_rollback_twice(day_factory):
    day = day_factory(on_nogo="ask")
    who = day.inventory.mailboxes[0].address
    prestage(plan_path=str(day.plan_path))
    day.box.stop_service("webmail")

    thread, out = run_in_thread(lambda: cutover(plan_path=str(day.plan_path), operator="Test Ops"))
    run_id = wait_paused()
    assert mx_everywhere(day, "target")
    day.box.deliver("target", who, new_mail("after-switch-1", who))   # arrives at InfoCert after the MX moved

    with pytest.raises(FreezeError, match="another cutover is running"):
        cutover(plan_path=str(day.plan_path))
    with pytest.raises(FreezeError, match="pre-stage copy refused"):
        prestage(plan_path=str(day.plan_path))
    with pytest.raises(ValueError):  # the form's rules: an action of the three, a name, a reason
        decide_gate(run_id, "maybe", "Test Ops", "typo")
    with pytest.raises(Exception):  # the server validates the input against the form too; the run stays paused
        resume_flow_run(run_id, run_input={"action": "maybe", "operator": "x", "reason": "y"})
    assert wait_paused() == run_id

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
    run_id = wait_paused()
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
    run_id = wait_paused()
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


def test_no_secret_in_prefect_database_logs_or_output(prefect_db):
    """Runs last in this module: every password and TSIG secret the scenarios used, searched everywhere."""
    assert SECRETS_SEEN, "the scenarios above must have run first"
    time.sleep(1)  # let the API flush logs written by the last run
    stored = b""
    for path in prefect_db.parent.glob(prefect_db.name + "*"):  # the database and its WAL/SHM files
        stored += path.read_bytes()
    assert len(stored) > 100_000, "the Prefect database should hold the runs"
    printed = session_log_text()
    assert "Finished in state" in printed and "cutover." in printed, "the session's logs should have been collected"
    for secret in set(SECRETS_SEEN):
        assert secret.encode() not in stored
        assert secret not in printed

