"""`pec-cutover copy` at 80 columns and piped: the table keeps the columns that fit, and each failure is one whole
line `mailbox: reason: server's words: what to do` (the member problem and the action, never folded into cells)."""

from __future__ import annotations

import io

from rich.console import Console

from cutover.cli.copy import _table, failure_lines
from cutover.mailsync import CopyReport, MailboxReport


def report() -> CopyReport:
    return CopyReport(mailboxes=[
        MailboxReport(address="mario.rossi@pec.fnofi.it", status="verified", messages=12, copied=12, verified=True),
        MailboxReport(address="giulia.bianchi.lunghissimo-indirizzo@pec.fnofi.it", status="failed",
                      reason="bad-credentials", error="giulia.bianchi.lunghissimo-indirizzo@pec.fnofi.it on aruba: "
                      "login refused: [AUTHENTICATIONFAILED] Authentication failed."),
    ], seconds=1.0)


def test_the_table_fits_80_columns_and_failures_are_whole_lines():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False)
    console.print(_table(report(), console.width))
    assert all(len(line) <= 80 for line in out.getvalue().splitlines())
    assert "reason" not in out.getvalue() and "mario.rossi@pec.fnofi.it" in out.getvalue()
    lines = failure_lines(report())
    assert lines == ["giulia.bianchi.lunghissimo-indirizzo@pec.fnofi.it: bad-credentials: "
                     "giulia.bianchi.lunghissimo-indirizzo@pec.fnofi.it on aruba: login refused: "
                     "[AUTHENTICATIONFAILED] Authentication failed.: password changed, or 2FA still on: ask the member "
                     "to switch 2FA off and confirm the password"]
    wide = io.StringIO()
    Console(file=wide, width=200).print(_table(report(), 200))
    assert "reason" in wide.getvalue() and "bad-credentials" in wide.getvalue()
