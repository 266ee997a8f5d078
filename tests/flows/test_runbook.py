"""What docs/runbook.md promises, each on a sandbox of its own with real servers (nothing mocked):

the days before (a failed mailbox fails the pre-stage run; the cutover refuses to start while the MX TTL was not
lowered); a NO-GO at the DNS gate with a secondary down; a HOLD that pauses the run even with on_nogo: rollback, and
the pause timing out into a rollback; the sticky freeze after a failure past the MX switch; a rollback by hand while
a cutover is paused at a gate, and that cutover stopping when resumed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from typer.testing import CliRunner

from cutover import freeze
from cutover.cli import app
from cutover.errors import FreezeError, VerificationFailed
from flows.cutover_day import cutover
from flows.history import decide_gate
from flows.prestage import prestage
from flows.rollback import rollback

from .conftest import Day, run_in_thread, wait_paused


def served(day: Day, server: str) -> tuple[set[str], int | None]:
    """(MX hosts, SOA serial) that ns1 or ns2 serves now, asked directly (no recursion)."""
    port = {"ns1": day.plan.dns.authoritative[0].port, "ns2": day.plan.dns.authoritative[1].port}[server]
    hosts, serial = set(), None
    for rdtype in (dns.rdatatype.MX, dns.rdatatype.SOA):
        query = dns.message.make_query(day.plan.domain, rdtype)
        query.flags &= ~dns.flags.RD
        for rrset in dns.query.udp(query, "127.0.0.1", port=port, timeout=2).answer:
            if rrset.rdtype == dns.rdatatype.MX:
                hosts = {rr.exchange.to_text() for rr in rrset}
            elif rrset.rdtype == dns.rdatatype.SOA:
                serial = rrset[0].serial
    return hosts, serial


def resolver_mx(day: Day) -> set[str]:
    answer = dns.query.udp(dns.message.make_query(day.plan.domain, dns.rdatatype.MX), "127.0.0.1",
                           port=day.plan.dns.resolvers[0].port, timeout=2)
    return {rr.exchange.to_text() for rrset in answer.answer for rr in rrset}


def mx_of(day: Day, side: str) -> set[str]:
    return {r.host for r in day.plan.provider(side).mx}


def wait_for(what: str, predicate, timeout: float = 60) -> None:
    """Poll a server-reported condition (serials, cached answers) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def mx_everywhere(day: Day, side: str) -> bool:
    want = mx_of(day, side)
    return served(day, "ns1")[0] == want and served(day, "ns2")[0] == want and resolver_mx(day) == want


def artifact(flow_run_id: str, key: str) -> str:
    """The markdown of one artifact of one run (every cutover run has artifacts of the same keys)."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert len(found) == 1, f"{len(found)} artifacts {key} in run {flow_run_id}"
    return str(found[0].data)


def run_state(flow_run_id: str) -> str:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state_name


def run_states(run_name: str) -> list[str]:
    """The states of the runs of one flow on one plan (``"prestage <plan path>"``), oldest first; found by the flow's
    name and the run's plan_path parameter (run names say the domain, not the path)."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    flow_name, _, plan_path = run_name.partition(" ")
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                     sort=FlowRunSort.EXPECTED_START_TIME_ASC)
    return [r.state_name for r in runs if str((r.parameters or {}).get("plan_path")) == plan_path]


def report(day: Day, verdict: str) -> str:
    texts = [p.read_text() for p in day.plan.reports_dir.glob("cutover-report-*.md")]
    matching = [t for t in texts if f"Verdict: {verdict}" in t]
    assert matching, f"no cutover report with verdict {verdict}: {[t.splitlines()[:3] for t in texts]}"
    return matching[-1]


def test_days_before_a_failed_mailbox_fails_prestage_and_the_cutover_wants_the_ttl_lowered(day_factory):
    day = day_factory(lower_ttl=False, mailboxes=3, messages=4)
    bad = day.inventory.mailboxes[2]
    real = Path(bad.target_secret.target).read_text().strip()

    day.box.set_password("target", bad.address, "changed-on-infocert-1")   # the member changed it on InfoCert
    try:
        with pytest.raises(VerificationFailed, match=rf"{bad.address}.*1 mailbox\(es\) not verified"):
            prestage(plan_path=str(day.plan_path))
    finally:
        day.box.set_password("target", bad.address, real)
    assert run_states(f"prestage {day.plan_path}") == ["Failed"]
    for good in day.inventory.mailboxes[:2]:  # one bad mailbox never stops the others
        assert day.digests("target", good.address) == day.digests("source", good.address)
    assert sum(day.digests("target", bad.address).values()) == 0
    [text] = [p.read_text() for p in day.plan.reports_dir.glob("prestage-report-*.md")]
    assert "1 mailboxes NOT verified" in text and bad.address in text

    # T-2 was skipped: the primary still serves the normal TTL, so the cutover refuses before changing anything.
    assert served(day, "ns1")[0] == mx_of(day, "source")
    with pytest.raises(FreezeError, match="pre-flight failed: .*fix it before the switch"):
        cutover(plan_path=str(day.plan_path), operator="Test Ops")
    assert "ttl-not-lowered" in report(day, "FAILED") and "dns ttl --lower" in report(day, "FAILED")
    assert mx_everywhere(day, "source") and freeze.current(day.plan) is None


def test_dns_gate_nogo_with_a_secondary_down_pauses_then_retry_goes(day_factory):
    day = day_factory(on_nogo="ask", mailboxes=2, messages=4, propagation_deadline_s=6)
    prestage(plan_path=str(day.plan_path))
    day.box.stop_service("ns2")   # the secondary will miss the switch

    thread, out = run_in_thread(lambda: cutover(plan_path=str(day.plan_path), operator="Test Ops"))
    run_id = wait_paused(day.plan_path)
    gate = artifact(run_id, "gate-dns-1")
    assert "NO-GO" in gate and "ns2" in gate
    assert served(day, "ns1")[0] == mx_of(day, "target")  # the switch happened on the primary

    day.box.release_secondary()   # ns2 back, NOTIFYed, and serving ns1's serial (the sandbox waits for it)
    assert served(day, "ns2") == served(day, "ns1")
    decide_gate(run_id, "retry", "Anna Blu", "ns2 restarted and caught up")
    thread.join(300)
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert result["verdict"] == "GO", result
    assert any(d.startswith("dns: NO-GO → retry by Anna Blu") for d in result["decisions"]), result["decisions"]
    assert any(d.startswith("dns: GO → proceed") for d in result["decisions"]), result["decisions"]
    assert mx_everywhere(day, "target") and freeze.current(day.plan) is None


def test_hold_pauses_even_with_on_nogo_rollback_and_the_pause_times_out_into_a_rollback(day_factory):
    day = day_factory(on_nogo="rollback", canaries=False, mailboxes=2, messages=4, pause_timeout_s=8)
    prestage(plan_path=str(day.plan_path))

    thread, out = run_in_thread(lambda: cutover(plan_path=str(day.plan_path), operator="Test Ops"))
    run_id = wait_paused(day.plan_path)   # no canary evidence: HOLD asks a human whatever on_nogo says
    assert run_state(run_id) == "Paused"
    gate = artifact(run_id, "gate-access-1")
    assert "HOLD" in gate and "canary" in gate
    thread.join(300)       # nobody decides: after pause_timeout_s the run rolls back (the safe state)
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert result["verdict"] == "ROLLED-BACK", result
    assert "access: HOLD → rollback (no decision within 8 s)" in result["decisions"]
    assert mx_everywhere(day, "source") and freeze.current(day.plan) is None


def test_a_failure_after_the_mx_switch_keeps_a_sticky_freeze_until_the_rollback(day_factory):
    day = day_factory(on_nogo="ask", mailboxes=2, messages=4)
    prestage(plan_path=str(day.plan_path))
    day.box.stop_service("webmail")
    thread, out = run_in_thread(lambda: cutover(plan_path=str(day.plan_path), operator="Test Ops"))
    run_id = wait_paused(day.plan_path)

    # While the run waits, the ledger's disk goes away (a directory where the database was): the retried
    # checks cannot open it and the run fails with the MX already on the target.
    ledger = day.plan.ledger
    aside = ledger.parent / "aside"
    aside.mkdir()
    for f in ledger.parent.glob(ledger.name + "*"):
        if f.is_file():
            shutil.move(f, aside / f.name)
    ledger.mkdir()
    try:
        decide_gate(run_id, "retry", "Anna Blu", "try the checks again")
        thread.join(300)
        assert "cannot be opened" in str(out.get("error")), out
        assert run_state(run_id) == "Failed"
        held = freeze.current(day.plan)
        assert held is not None and held.sticky and held.run_id == run_id
        assert "cutover failed after the MX switch" in held.note
        assert served(day, "ns1")[0] == mx_of(day, "target")      # half-way: the freeze says so
        with pytest.raises(FreezeError, match="pre-stage copy refused: change freeze held by cutover run"):
            prestage(plan_path=str(day.plan_path))
        with pytest.raises(FreezeError, match="another cutover is running"):
            cutover(plan_path=str(day.plan_path))
        by_hand = CliRunner().invoke(app, ["dns", "switch", "--to", "source", "--plan", str(day.plan_path)])
        assert by_hand.exit_code == 2 and "refused: change freeze held by cutover run" in by_hand.output
        assert "FAILED" in report(day, "FAILED")
    finally:
        ledger.rmdir()
        for f in aside.iterdir():
            shutil.move(f, ledger.parent / f.name)
        aside.rmdir()

    back = rollback(plan_path=str(day.plan_path), reason="after the failed run", operator="Test Ops")
    assert back["verdict"] == "rolled-back", back
    assert freeze.current(day.plan) is None                      # only the rollback lifted it
    assert mx_everywhere(day, "source")


def test_rollback_by_hand_while_a_cutover_is_paused_then_that_cutover_stops(day_factory):
    day = day_factory(on_nogo="ask", mailboxes=2, messages=4)
    who = day.inventory.mailboxes[0].address
    prestage(plan_path=str(day.plan_path))
    day.box.stop_service("webmail")
    thread, out = run_in_thread(lambda: cutover(plan_path=str(day.plan_path), operator="Test Ops"))
    run_id = wait_paused(day.plan_path)
    day.box.deliver("target", who, b"From: a@pec.it\r\nMessage-ID: <by-hand-1@pec.test>\r\nSubject: x\r\n\r\nx\r\n")

    by_hand = rollback(plan_path=str(day.plan_path), reason="board decided: back to Aruba", operator="Maria Verdi")
    assert by_hand["verdict"] == "rolled-back" and by_hand["copied_back"] == 1, by_hand
    assert run_state(run_id) == "Paused"           # the cutover still waits at its gate
    assert freeze.current(day.plan) is None and mx_everywhere(day, "source")
    assert day.inbox_has("source", who, b"<by-hand-1@pec.test>") == 1

    decide_gate(run_id, "continue", "Luca Neri", "did not know about the rollback")
    thread.join(300)
    error = out.get("error")
    # It stops without acting: the rollback took the freeze over and lifted it (a stale run, in the run's words).
    assert isinstance(error, FreezeError) and ("a rollback was started by hand; stopping here" in str(error)
                                               or "stops without acting" in str(error)), out
    assert run_state(run_id) == "Failed"
    assert mx_everywhere(day, "source"), "the stopped cutover must not move the MX again"
    assert freeze.current(day.plan) is None, "the stopped cutover leaves no freeze behind"
