"""The folder mapping is kept (issue 11, point 4) on the sandbox's real Dovecots: the mapping recorded in the
ledger at the first copy is reused; one that would change (the target's \\Sent folder appearing after the member's
first webmail login; a source folder renamed) stops that folder, reported with both names, until an operator
decides with ``copy --remap SRC=DST --reason``; the folder is never copied a second time."""

from __future__ import annotations

import hashlib

from typer.testing import CliRunner

from cutover.cli import app
from cutover.ledger import Ledger
from cutover.mailsync import copy_mailboxes

from .conftest import plan_file_with


def _folder(box, side: str, address: str, folder: str) -> list[str]:
    client = box.admin_session(side, address)
    try:
        if not client.folder_exists(folder):
            return []
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        return sorted(hashlib.sha256(d[b"BODY[]"]).hexdigest()
                      for d in client.fetch(uids, ["BODY.PEEK[]"]).values()) if uids else []
    finally:
        client.logout()


def _plan_file(sandbox_env, tmp_path, mailboxes):
    return plan_file_with(sandbox_env, tmp_path, mailboxes, "map")


def test_a_sent_folder_appearing_on_the_target_stops_that_folder_until_remapped(sandbox_env, make_mailbox, plan_for,
                                                                                imap_view, tmp_path):
    box = sandbox_env.sandbox
    box.set_special_use("target", {"Sent Items": "\\Sent", "Trash": "\\Trash"})  # InfoCert's own \Sent name
    try:
        plan = plan_for()
        mb = make_mailbox(messages=10)
        first = copy_mailboxes(plan, [mb])
        assert first.ok
        sent_before = _folder(box, "target", mb.address, "Posta inviata")
        assert sent_before and sent_before == _folder(box, "source", mb.address, "Posta inviata")
        assert _folder(box, "target", mb.address, "Sent Items") == []

        # The member's first webmail login on InfoCert makes its \Sent folder; more mail on Aruba meanwhile.
        client = box.admin_session("target", mb.address)
        try:
            client.create_folder("Sent Items")
        finally:
            client.logout()
        sent = imap_view.message("inviata", "sent from Aruba after the first copy")
        box.deliver("source", mb.address, sent, folder="Posta inviata")
        inbox = imap_view.message("nuova", "new in INBOX")
        box.deliver("source", mb.address, inbox)

        second = copy_mailboxes(plan, [mb])
        [r] = second.mailboxes
        assert (r.status, r.reason) == ("failed", "folder-mapping-changed")
        assert "'Posta inviata'" in r.error and "'Sent Items'" in r.error and "--remap" in r.error
        assert _folder(box, "target", mb.address, "Sent Items") == [], "the folder copied a second time"
        assert _folder(box, "target", mb.address, "Posta inviata") == sent_before, "nothing copied there either"
        assert hashlib.sha256(inbox).hexdigest() in _folder(box, "target", mb.address, "INBOX"), "other folders go on"

        # The decision, by the CLI: new sent mail goes to InfoCert's \Sent; what was copied stays where it is.
        path = _plan_file(sandbox_env, tmp_path, [mb])
        runner = CliRunner()
        refused = runner.invoke(app, ["copy", "--plan", str(path), "--remap", "Posta inviata=Sent Items"])
        assert refused.exit_code != 0 and "--reason" in refused.output
        done = runner.invoke(app, ["copy", "--plan", str(path), "--mailbox", mb.address,
                                   "--remap", "Posta inviata=Sent Items", "--reason", "InfoCert's own Sent folder"])
        assert done.exit_code == 0, done.output
        assert _folder(box, "target", mb.address, "Sent Items") == [hashlib.sha256(sent).hexdigest()]
        assert _folder(box, "target", mb.address, "Posta inviata") == sent_before
        ledger = Ledger(plan.ledger)
        try:
            assert ledger.remaps(mb.address, "forward") == {"Posta inviata": ("Sent Items", "InfoCert's own Sent folder")}
        finally:
            ledger.close()
        again = copy_mailboxes(plan, [mb])  # the decision holds: nothing more, still verified
        assert again.ok and again.copied_messages == 0
    finally:
        box.set_special_use("target", None)


def test_a_folder_renamed_on_the_source_is_not_copied_a_second_time(sandbox_env, make_mailbox, plan_for, imap_view):
    box = sandbox_env.sandbox
    plan = plan_for()
    mb = make_mailbox(messages=10)
    assert copy_mailboxes(plan, [mb]).ok
    before = _folder(box, "target", mb.address, "Ricevute")
    assert before
    client = box.admin_session("source", mb.address)
    try:
        client.rename_folder("Ricevute", "Ricevute 2026")
    finally:
        client.logout()

    stopped = copy_mailboxes(plan, [mb]).mailboxes[0]
    assert stopped.reason == "folder-mapping-changed"
    assert "'Ricevute 2026'" in stopped.error and "renamed on the source from 'Ricevute'" in stopped.error
    assert _folder(box, "target", mb.address, "Ricevute 2026") == []

    ledger = Ledger(plan.ledger)
    try:
        ledger.record_remap(mb.address, "forward", "Ricevute 2026", "Ricevute", "renamed by the member")
    finally:
        ledger.close()
    kept = copy_mailboxes(plan, [mb])
    assert kept.ok and kept.copied_messages == 0, kept.mailboxes[0].error
    ledger = Ledger(plan.ledger)
    try:  # the rows followed the folder: the copies are known as copied, not re-matched as strangers
        state = ledger.folder_state(mb.address, "forward", "Ricevute 2026")
        assert state is not None and state.tgt_folder == "Ricevute"
        rows = ledger.messages(mb.address, "forward", "Ricevute 2026", state.src_uidvalidity)
        assert len(rows) == len(before) and {r.state for r in rows.values()} == {"copied"}
        assert ledger.folder_state(mb.address, "forward", "Ricevute") is None
    finally:
        ledger.close()
    assert _folder(box, "target", mb.address, "Ricevute") == before and _folder(box, "target", mb.address,
                                                                                 "Ricevute 2026") == []


def test_repair_and_remap_are_refused_without_a_reason_or_a_well_formed_pair(tmp_path):
    runner = CliRunner()
    plan = str(tmp_path / "no-plan.yaml")  # refused before the plan is read
    repair = runner.invoke(app, ["copy", "--plan", plan, "--repair"])
    assert repair.exit_code != 0 and "--repair needs --reason" in repair.output and "Traceback" not in repair.output
    short = runner.invoke(app, ["copy", "--plan", plan, "--repair", "--reason", "x"])
    assert short.exit_code != 0 and "--repair needs --reason" in short.output
    bad = runner.invoke(app, ["copy", "--plan", plan, "--remap", "Sent", "--reason", "InfoCert's Sent"])
    assert bad.exit_code != 0 and "SOURCE_FOLDER=TARGET_FOLDER" in bad.output
