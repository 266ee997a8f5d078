"""The switch mark (issue 11, point 1) on the sandbox's real Dovecots: right before an MX change every mailbox's
folders on both sides are recorded with UIDVALIDITY, UIDNEXT and MESSAGES, as the servers answer STATUS; a message
arriving afterwards is the first above the mark; a mailbox that cannot be read is recorded as failed, never blocking."""

from __future__ import annotations

from cutover.switch_mark import take_switch_mark


def _status(box, side: str, address: str) -> dict[str, tuple[int, int, int]]:
    client = box.admin_session(side, address)
    try:
        out = {}
        for flags, _d, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            st = client.folder_status(name, [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"])
            out[name] = (st[b"UIDVALIDITY"], st[b"UIDNEXT"], st[b"MESSAGES"])
        return out
    finally:
        client.logout()


def test_the_mark_records_both_sides_of_every_mailbox_and_what_came_after_is_above_it(sandbox_env, ledger_store):
    plan, box, inventory = sandbox_env.plan, sandbox_env.sandbox, sandbox_env.inventory
    ledger = ledger_store.open()
    try:
        mark = take_switch_mark(plan, inventory.mailboxes, to="target", by="test", ledger=ledger)
        assert (mark.mailboxes, mark.failed) == (len(inventory), {}) and mark.seconds > 0
        [run] = ledger.switch_marks()
        assert (run.mark, run.to_side, run.by, run.mailboxes) == (mark.mark, "target", "test", len(inventory))
        for mailbox in inventory.mailboxes:
            rows = ledger.switch_mark_folders(mark.mark, mailbox.address)
            for side in ("source", "target"):
                recorded = {r.folder: (r.uidvalidity, r.uidnext, r.messages) for r in rows if r.side == side}
                assert recorded == _status(box, side, mailbox.address), (mailbox.address, side)
        assert mark.folders == len(ledger.switch_mark_folders(mark.mark)) and "switch mark" in mark.describe()

        first = inventory.mailboxes[0].address
        inbox = next(r for r in ledger.switch_mark_folders(mark.mark, first) if r.side == "source" and r.folder == "INBOX")
        uid = box.deliver("source", first, b"Subject: late\r\nMessage-ID: <late-after-mark@test>\r\n\r\nlate\r\n")
        assert uid == inbox.uidnext, "the first message after the switch is the first above the source mark"
    finally:
        ledger.close()


def test_a_mailbox_that_cannot_be_read_is_recorded_failed_and_the_others_marked(sandbox_env, ledger_store):
    plan, box, inventory = sandbox_env.plan, sandbox_env.sandbox, sandbox_env.inventory
    who = inventory.mailboxes[1].address
    real = inventory.mailboxes[1].target_secret.target
    password = open(real).read().strip()
    box.set_password("target", who, "changed-by-the-member-7")
    ledger = ledger_store.open()
    try:
        mark = take_switch_mark(plan, inventory.mailboxes[:3], to="target", by="test", ledger=ledger)
    finally:
        box.set_password("target", who, password)
        ledger.close()
    assert mark.mailboxes == 2 and list(mark.failed) == [who] and "AuthFailed" in mark.failed[who]
    assert password not in mark.failed[who]
