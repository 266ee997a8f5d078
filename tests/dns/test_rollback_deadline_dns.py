"""The rollback deadline against the DNS sandbox's real BIND: ``switch_mx`` journals the moment the MX changed (the
deadline's start), and ``dns switch --to source`` after the deadline refuses without ``--override REASON``, and
switches (journaling the override) with it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from typer.testing import CliRunner

from cutover.cli import app
from cutover.dnschange import read_journal, switch_mx, switched_to_target_at
from cutover.rollback_deadline import check_rollback_deadline


def test_switch_mx_journals_the_switch_and_starts_the_clock(zone) -> None:
    plan = zone.plan
    before = datetime.now(timezone.utc)
    switch_mx(plan, "target")
    switch_mx(plan, "target")  # idempotent: changes nothing, journaled as such, the clock keeps the first switch
    switches = [e for e in read_journal(plan) if e["action"] == "switch_mx"]
    assert [(e["to"], e["provider"], e["changed"]) for e in switches] == [("target", "infocert", True),
                                                                          ("target", "infocert", False)]
    since = switched_to_target_at(plan)
    assert since is not None and since == datetime.fromisoformat(switches[0]["time"]) and since >= before
    assert check_rollback_deadline(plan).deadline == since + timedelta(days=7)
    switch_mx(plan, "source")
    assert switched_to_target_at(plan) is None and check_rollback_deadline(plan).deadline is None


def test_dns_switch_back_after_the_deadline_needs_an_override(zone) -> None:
    from cutover.dnschange import append_journal

    plan = zone.plan
    zone.set_mx(plan.target.mx_set, plan.dns.ttl.cutover)  # the domain on InfoCert ...
    append_journal(plan, {"action": "switch_mx", "to": "target", "provider": "infocert", "changed": True},
                   when=datetime.now(timezone.utc) - timedelta(days=8))  # ... since 8 days
    args = ["dns", "switch", "--to", "source", "--plan", str(zone.environment.plan)]
    refused = CliRunner().invoke(app, args, terminal_width=400)
    assert refused.exit_code == 2 and "rollback refused: rollback deadline" in refused.output, refused.output
    assert zone.served()[0] == plan.target.mx_set, "a refused switch changes nothing"

    done = CliRunner().invoke(app, [*args, "--override", "Aruba confirmed the domain is still active (ticket 77)"],
                              terminal_width=400)
    assert done.exit_code == 0, done.output
    assert zone.served()[0] == plan.source.mx_set
    assert "PASSED" in done.output and "by override: Aruba confirmed" in done.output
    [override] = [e for e in read_journal(plan) if e["action"] == "rollback_override"]
    assert override["reason"].startswith("Aruba confirmed") and override["by"] == "dns switch --to source"
