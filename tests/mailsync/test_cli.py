"""``pec-cutover copy`` end to end: exit codes, table, and the dry-run / verify-only switches."""

from __future__ import annotations


from typer.testing import CliRunner

from cutover.cli import app
from cutover.ledger import Ledger

from .conftest import plan_file_with


def _env_with(sandbox_env, tmp_path, mailboxes):
    return plan_file_with(sandbox_env, tmp_path, mailboxes, "cli")


def test_copy_cli_exit_codes_and_table(sandbox_env, make_mailbox, imap_view, tmp_path) -> None:
    good = make_mailbox(messages=4)
    runner = CliRunner()
    plan = _env_with(sandbox_env, tmp_path, [good])
    ledger = tmp_path / "ledger.sqlite"

    def on_target() -> int:
        return sum(sum(c.values()) for c in imap_view.digests(imap_view.snapshot(sandbox_env, "target", good.address)).values())

    try:
        dry = runner.invoke(app, ["copy", "--plan", str(plan), "--dry-run"], env={"COLUMNS": "200"})
        assert dry.exit_code == 0, dry.output
        assert "dry run" in dry.output and good.address in dry.output and "dry-run" in dry.output
        assert on_target() == 0, "--dry-run must not append anything"  # nothing on the server ...
        assert Ledger(ledger).message_count(good.address) == 0          # ... nor recorded

        ok = runner.invoke(app, ["copy", "--plan", str(plan), "--mailbox", good.address])
        assert ok.exit_code == 0, ok.output
        assert "verified" in ok.output and good.address in ok.output
        assert on_target() == 4

        again = runner.invoke(app, ["copy", "--plan", str(plan), "--verify-only"])
        assert again.exit_code == 0, again.output

        sandbox_env.sandbox.deliver("source", good.address,
                                    b"From: a@b.it\r\nSubject: solo sorgente\r\n\r\nx\r\n")
        missing = runner.invoke(app, ["copy", "--plan", str(plan), "--verify-only"])
        assert missing.exit_code == 1, missing.output
        assert "NOT verified" in missing.output
        assert on_target() == 4, "--verify-only must not copy"

        unknown = runner.invoke(app, ["copy", "--plan", str(plan), "--mailbox", "nessuno@pec.fnofi.it"])
        assert unknown.exit_code == 2, unknown.output
        assert "nessuno@pec.fnofi.it is not in the inventory" in unknown.output
        assert "Traceback" not in unknown.output and isinstance(unknown.exception, SystemExit)
    finally:
        plan.unlink(missing_ok=True)
