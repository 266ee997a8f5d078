"""Reports stay readable at any size: a 1,200-mailbox run's report keeps phases, totals and only the mailboxes that
need action (every mailbox goes to the per-mailbox table artifact). Run names say what is being done."""

from __future__ import annotations

from cutover.mailsync import CopyReport, MailboxReport
from cutover.report import RunReport, run_name


def big_copy(n: int = 1200, failed: int = 75) -> CopyReport:
    boxes = [MailboxReport(address=f"member{i:05d}@pec.fnofi.it", status="verified", messages=20, bytes=700_000,
                           copied=1, verified=True) for i in range(n - failed)]
    boxes += [MailboxReport(address=f"late{i:05d}@pec.fnofi.it", status="failed", reason="bad-credentials",
                            error="AUTHENTICATE failed") for i in range(failed)]
    return CopyReport(mailboxes=boxes, seconds=12.5)


def test_a_1200_mailbox_report_lists_only_what_needs_action():
    copy = big_copy()
    report = RunReport("Cutover of pec.fnofi.it: aruba → infocert (ops)")
    with report.phase("final delta copy") as phase:
        phase.sections.append(copy.markdown())
    text = report.markdown()
    assert len(text) < 12_000 and len(text.splitlines()) < 90, (len(text), len(text.splitlines()))
    assert "member00001@" not in text                      # verified mailboxes: table artifact only
    assert "Needs attention (75):" in text and "late00049@" in text and "late00050@" not in text
    assert "... and 25 more: see the per-mailbox table" in text
    assert len(copy.rows()) == 1200                        # what the table artifact gets: every mailbox


def test_run_names_say_what_is_done():
    assert run_name("cutover", "pec.fnofi.it", "aruba", "infocert") == "cutover pec.fnofi.it aruba→infocert"
    assert run_name("rollback", "pec.fnofi.it", "aruba", "infocert") == "rollback pec.fnofi.it infocert→aruba"
    assert run_name("prestage", "pec.fnofi.it", "aruba", "infocert", 1200) == "prestage pec.fnofi.it (1200 mailboxes)"
