"""After the switch (issue 11, point 2) on the sandbox's real Dovecots: once a switch mark is in the ledger, a
source message the ledger copied is never copied again, whatever the member did with its copy on the target
(deleted, moved to a folder of their own); only what the ledger never copied goes (late mail above the source
mark, and what the final delta missed below it); ``--repair --reason`` is the recorded way to a full mirror."""

from __future__ import annotations

import hashlib

from cutover.ledger import Ledger
from cutover.mailsync import copy_mailboxes
from cutover.switch_mark import take_switch_mark


def _inbox(box, side: str, address: str, folder: str = "INBOX") -> dict[int, str]:
    """{UID: SHA-256} of a folder as the server holds it."""
    client = box.admin_session(side, address)
    try:
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        return {u: hashlib.sha256(d[b"BODY[]"]).hexdigest()
                for u, d in client.fetch(uids, ["BODY.PEEK[]"]).items()} if uids else {}
    finally:
        client.logout()


def _member_deletes_and_moves(box, address: str, delete_uid: int, move_uid: int, to: str) -> None:
    client = box.admin_session("target", address)
    try:
        client.create_folder(to)
        client.select_folder("INBOX")
        client.move([move_uid], to)
        client.delete_messages([delete_uid])
        client.expunge()
    finally:
        client.logout()


def test_after_the_mark_deleted_and_moved_copies_stay_so_and_only_late_mail_is_copied(sandbox_env, make_mailbox,
                                                                                       plan_for, imap_view):
    box = sandbox_env.sandbox
    plan = plan_for()
    mb = make_mailbox(messages=8)
    ledger = Ledger(plan.ledger)
    try:
        first = copy_mailboxes(plan, [mb], ledger=ledger)
        assert first.ok and first.late_mail() is None  # no switch yet: no late-mail line
        # Reaches Aruba in the minutes before the switch, after the last pre-stage: the final delta's work.
        box.deliver("source", mb.address, imap_view.message("before the switch", "missed by the delta"))
        mark = take_switch_mark(plan, [mb], to="target", by="test", ledger=ledger)
        assert not mark.failed

        target = _inbox(box, "target", mb.address)
        assert len(target) >= 3
        deleted, moved = sorted(target)[:2]
        _member_deletes_and_moves(box, mb.address, deleted, moved, "Mie pratiche")
        late = imap_view.message("late", "reached Aruba after the switch")
        box.deliver("source", mb.address, late)

        again = copy_mailboxes(plan, [mb], ledger=ledger)
        [r] = again.mailboxes
        assert r.status == "verified", (r.reason, r.error)
        assert (r.late, r.before_switch, r.gone) == (1, 1, 2)
        aruba = plan.source.name
        assert again.late_mail() == (f"late mail: 1 messages that reached {aruba} after the switch; 1 from before the "
                                     "switch copied now; 2 copies deleted or moved by members on the target, not "
                                     "copied again")
        assert f"late mail: 1 messages that reached {aruba} after the switch" in again.markdown()
        now = _inbox(box, "target", mb.address)
        assert deleted not in now and moved not in now
        assert target[deleted] not in now.values(), "a copy the member deleted came back"
        assert target[moved] not in now.values(), "a copy the member moved came back to INBOX"
        assert list(_inbox(box, "target", mb.address, "Mie pratiche").values()) == [target[moved]]
        assert list(now.values()).count(hashlib.sha256(late).hexdigest()) == 1

        third = copy_mailboxes(plan, [mb], ledger=ledger)  # nothing new: nothing copied, still verified
        assert third.ok and third.copied_messages == 0 and _inbox(box, "target", mb.address) == now

        # The recorded way back to a full mirror: what the member deleted or moved is copied again, on purpose.
        repaired = copy_mailboxes(plan, [mb], ledger=ledger, repair="member asked for the deleted PEC back")
        assert repaired.ok and repaired.copied_messages == 2
        back = list(_inbox(box, "target", mb.address).values())
        assert back.count(target[deleted]) == 1 and back.count(target[moved]) == 1
        assert [d for _, _, k, d in ledger.events(mb.address, "repair")] == ["member asked for the deleted PEC back"]
    finally:
        ledger.close()


def _move(box, side: str, address: str, digest: str, to: str, frm: str = "INBOX") -> None:
    """The member moves the message with ``digest`` from ``frm`` to ``to`` (created when needed)."""
    uid = next(u for u, d in _inbox(box, side, address, frm).items() if d == digest)
    client = box.admin_session(side, address)
    try:
        if not client.folder_exists(to):
            client.create_folder(to)
        client.select_folder(frm)
        client.move([uid], to)
    finally:
        client.logout()


def _delete(box, side: str, address: str, digest: str, folder: str = "INBOX") -> None:
    uid = next(u for u, d in _inbox(box, side, address, folder).items() if d == digest)
    client = box.admin_session(side, address)
    try:
        client.select_folder(folder)
        client.delete_messages([uid])
        client.expunge()
    finally:
        client.logout()


def _everywhere(box, side: str, address: str) -> list[str]:
    """Every message's SHA-256 in every folder of one side (a list: twice means two copies)."""
    client = box.admin_session(side, address)
    try:
        names = [n for flags, _, n in client.list_folders() if b"\\Noselect" not in flags]
    finally:
        client.logout()
    return [d for n in names for d in _inbox(box, side, address, n).values()]


def test_rollback_copies_back_exactly_what_reached_the_target_after_the_switch_and_can_be_repeated(
        sandbox_env, make_mailbox, plan_for, imap_view):
    box = sandbox_env.sandbox
    plan = plan_for()
    mb = make_mailbox(messages=6)
    sha = lambda raw: hashlib.sha256(raw).hexdigest()  # noqa: E731
    ledger = Ledger(plan.ledger)
    try:
        assert copy_mailboxes(plan, [mb], ledger=ledger).ok
        welcome = imap_view.message("Benvenuto in Legalmail", "the provider's welcome, there before the switch")
        box.deliver("target", mb.address, welcome)
        assert not take_switch_mark(plan, [mb], to="target", by="test", ledger=ledger).failed
        # The final delta appends after the mark too: a forward copy above the target mark.
        delta = imap_view.message("final delta", "reached Aruba just before the switch")
        box.deliver("source", mb.address, delta)
        assert copy_mailboxes(plan, [mb], ledger=ledger).copied_messages == 1
        forward_copy = next(d for d in _inbox(box, "target", mb.address).values() if d != sha(welcome))
        _move(box, "target", mb.address, forward_copy, "Trash")  # the member bins a forward copy
        _move(box, "target", mb.address, sha(delta), "Mie pratiche")  # and files the final delta's copy
        a = imap_view.message("A", "reached InfoCert after the switch")
        b = imap_view.message("B", "reached InfoCert after the switch")
        box.deliver("target", mb.address, a)
        box.deliver("target", mb.address, b)
        on_source_before = _everywhere(box, "source", mb.address)

        first = copy_mailboxes(plan, [mb], direction="reverse", ledger=ledger)
        assert first.ok and first.copied_messages == 2, first.mailboxes[0].error
        source = _everywhere(box, "source", mb.address)
        assert sorted(source) == sorted(on_source_before + [sha(a), sha(b)]), "exactly A and B copied back, once"
        assert sha(welcome) not in source

        # Between passes: the member deletes A on Aruba (back in use), files B on InfoCert; C reaches InfoCert.
        _delete(box, "source", mb.address, sha(a))
        _move(box, "target", mb.address, sha(b), "Mie pratiche")
        c = imap_view.message("C", "reached InfoCert while resolvers converge back")
        box.deliver("target", mb.address, c)

        second = copy_mailboxes(plan, [mb], direction="reverse", ledger=ledger)
        assert second.ok and second.copied_messages == 1, second.mailboxes[0].error
        source = _everywhere(box, "source", mb.address)
        assert sha(a) not in source, "copied back, deleted on the source, and re-appended"
        assert source.count(sha(b)) == 1 and source.count(sha(c)) == 1

        third = copy_mailboxes(plan, [mb], direction="reverse", ledger=ledger)
        assert third.ok and third.copied_messages == 0
        assert sorted(_everywhere(box, "source", mb.address)) == sorted(source)
    finally:
        ledger.close()


def test_a_folder_the_member_deleted_on_the_target_after_the_switch_is_not_made_again(sandbox_env, make_mailbox,
                                                                                        plan_for, imap_view):
    box = sandbox_env.sandbox
    plan = plan_for()
    mb = make_mailbox(messages=10)
    ledger = Ledger(plan.ledger)
    try:
        assert copy_mailboxes(plan, [mb], ledger=ledger).ok
        assert not take_switch_mark(plan, [mb], to="target", by="test", ledger=ledger).failed
        client = box.admin_session("target", mb.address)
        try:
            client.delete_folder("Ricevute")
            assert not client.folder_exists("Ricevute")
        finally:
            client.logout()
        box.deliver("source", mb.address, imap_view.message("late", "to INBOX"))  # the run has work elsewhere
        run = copy_mailboxes(plan, [mb], ledger=ledger)
        assert run.ok and run.copied_messages == 1, run.mailboxes[0].error
        client = box.admin_session("target", mb.address)
        try:
            assert not client.folder_exists("Ricevute"), "a folder the member deleted came back"
        finally:
            client.logout()
        late = imap_view.message("late", "to Ricevute")
        box.deliver("source", mb.address, late, folder="Ricevute")
        again = copy_mailboxes(plan, [mb], ledger=ledger)
        assert again.ok and again.copied_messages == 1
        assert list(_inbox(box, "target", mb.address, "Ricevute").values()) == [hashlib.sha256(late).hexdigest()]
    finally:
        ledger.close()
