"""The rollback deadline in the flows (issue 11, point 7), on the sandbox's real servers: a gate never rolls back
after the deadline (the run fails, the freeze stays sticky, the MX stays where it is), the rollback flow refuses
before changing anything, and rolls back with an override whose reason is in its report."""

from __future__ import annotations

import pytest

from cutover import freeze
from cutover.errors import RollbackDeadlineError
from cutover.ledger import Ledger
from flows.cutover_day import cutover
from flows.rollback import rollback

from .conftest import Day
from .test_cutover_day import mx_everywhere


def test_after_the_deadline_no_gate_rollback_and_the_flow_needs_an_override(day_factory):
    # A window that has ended (the run starts by override) and a rollback deadline after it, also in the past.
    day: Day = day_factory(on_nogo="rollback", window=("2026-01-01T06:00:00", "2026-01-01T10:00:00"))
    day.plan_path.write_text(day.plan_path.read_text() + "rollback_until: 2026-01-01T12:00:00\n")
    day.box.stop_service("webmail")  # the access gate says NO-GO and the plan says roll back at once

    with pytest.raises(RollbackDeadlineError, match="rollback refused: rollback deadline .* passed"):
        cutover(plan_path=str(day.plan_path), override_window="CAB-7: late window", operator="Test Ops")
    assert mx_everywhere(day, "target"), "the gate did not roll back"
    held = freeze.current(day.plan)
    assert held is not None and held.sticky, "the domain is half-way: the freeze stays until someone decides"
    [report] = [p.read_text() for p in day.plan.reports_dir.glob("cutover-report-*.md")]
    assert "not rolled back by the gate: rollback refused" in report
    # Point 1: right before the MX changed, the switch mark of every mailbox on both sides, its time in the report.
    assert f"switch mark " in report and f": {len(day.inventory)} mailboxes, " in report
    ledger = Ledger(day.plan.ledger)
    try:
        [mark] = ledger.switch_marks()
        assert (mark.to_side, mark.mailboxes, mark.failed) == ("target", len(day.inventory), {})
        assert {r.address for r in ledger.switch_mark_folders(mark.mark)} == {m.address for m in day.inventory}
    finally:
        ledger.close()

    with pytest.raises(RollbackDeadlineError, match="override"):
        rollback(plan_path=str(day.plan_path), reason="InfoCert webmail down")
    assert mx_everywhere(day, "target") and freeze.current(day.plan) == held, "a refused rollback changes nothing"

    outcome = rollback(plan_path=str(day.plan_path), reason="InfoCert webmail down",
                       override="Aruba confirmed on the phone the domain is still active (ticket 4711)")
    assert outcome["verdict"] == "rolled-back", outcome
    assert "by override: Aruba confirmed" in outcome["deadline"]
    assert mx_everywhere(day, "source") and freeze.current(day.plan) is None
    reports = [p.read_text() for p in day.plan.reports_dir.glob("rollback-report-*.md")]
    assert any("ROLLBACK REFUSED" in r for r in reports)
    assert any("PASSED" in r and "ticket 4711" in r and "ROLLED BACK" in r for r in reports)
