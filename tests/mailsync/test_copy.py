"""The copy engine against the sandbox's real Dovecots: outcomes checked over IMAP, by SHA-256."""

from __future__ import annotations

import datetime as dt
import threading
import time

from cutover.ledger import Ledger
from cutover.mailsync import copy_mailboxes, sync_mailbox


def _non_empty(snap):
    return {k: v for k, v in snap.items() if v}


def test_round_trip_is_byte_exact_with_flags_and_dates(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    mb = make_mailbox(messages=40, big=1)
    plan = plan_for(batch_messages=7)  # several batches per folder
    before = imap_view.snapshot(sandbox_env, "source", mb.address)

    report = copy_mailboxes(plan, [mb])

    assert report.ok, report.markdown()
    m = report.mailboxes[0]
    assert (m.status, m.messages, m.copied, m.skipped, m.missing) == ("verified", 40, 40, 0, 0)
    target = imap_view.snapshot(sandbox_env, "target", mb.address)
    assert _non_empty(target) == _non_empty(before)  # same bytes, flags and INTERNALDATE, folder by folder
    assert imap_view.snapshot(sandbox_env, "source", mb.address) == before  # reading set no \Seen on the source
    # empty and deeply nested folders (accented names included) exist on the target
    assert set(before) <= set(target)
    assert "Bozze" in target and "Archivio/2021/Pratiche/Consiglio/Verbali/Riservati" in target
    assert "Archivio/2023/Società e Comunicazioni" in target
    assert Ledger(plan.ledger).verified_count(mb.address, "INBOX") == sum(before["INBOX"].values())


def test_delta_copies_only_the_new_messages(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    mb = make_mailbox(messages=20)
    plan = plan_for()
    assert copy_mailboxes(plan, [mb]).ok
    for i in range(3):
        sandbox_env.sandbox.deliver("source", mb.address, imap_view.message(f"nuovo {i}", f"corpo {i}"), flags=["\\Seen"],
                                    internaldate=dt.datetime(2026, 3, 1, 9, i, tzinfo=dt.timezone.utc))

    events, done = [], []
    report = copy_mailboxes(plan, [mb], on_progress=events.append, on_mailbox_done=done.append)

    m = report.mailboxes[0]
    assert report.ok and (m.messages, m.copied, m.skipped) == (23, 3, 20)
    assert done == [m] and events[-1].mailboxes_done == events[-1].mailboxes_total == 1
    assert events[-1].messages_done == 3
    assert _non_empty(imap_view.snapshot(sandbox_env, "target", mb.address)) == _non_empty(imap_view.snapshot(sandbox_env, "source", mb.address))


def test_dry_run_changes_nothing(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    mb = make_mailbox(messages=10)
    plan = plan_for()
    report = copy_mailboxes(plan, [mb], dry_run=True)
    m = report.mailboxes[0]
    assert (m.status, m.copied, m.verified) == ("dry-run", 10, False)
    assert not any(_non_empty(imap_view.snapshot(sandbox_env, "target", mb.address)).values())
    assert Ledger(plan.ledger).message_count(mb.address) == 0


def test_same_message_id_different_bodies_and_exact_duplicates_are_all_kept(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    mb = make_mailbox()
    box = sandbox_env.sandbox
    when = dt.datetime(2026, 2, 2, 10, 0, tzinfo=dt.timezone.utc)
    box.deliver("source", mb.address, imap_view.message("a", "primo corpo", "<stesso@pec.it>"), internaldate=when)
    box.deliver("source", mb.address, imap_view.message("a", "secondo corpo", "<stesso@pec.it>"), internaldate=when)
    dup = imap_view.message("dup", "identico", "<dup@pec.it>")
    box.deliver("source", mb.address, dup, internaldate=when)
    box.deliver("source", mb.address, dup, internaldate=when)

    report = copy_mailboxes(plan_for(), [mb])

    assert report.ok and report.mailboxes[0].copied == 4
    inbox = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))["INBOX"]
    assert sum(inbox.values()) == 4 and sorted(inbox.values()) == [1, 1, 2]


def test_messages_already_on_the_target_are_matched_not_duplicated(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    mb = make_mailbox()
    box = sandbox_env.sandbox
    raw = [imap_view.message(f"m{i}", f"corpo {i}") for i in range(4)]
    for r in raw:
        box.deliver("source", mb.address, r)
    for r in raw[:2]:  # another tool copied these two already
        box.deliver("target", mb.address, r)

    report = copy_mailboxes(plan_for(), [mb])

    m = report.mailboxes[0]
    assert report.ok and (m.copied, m.skipped) == (2, 2)
    assert sum(imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))["INBOX"].values()) == 4


def test_crash_between_append_and_ledger_update_does_not_duplicate(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    """The worst window: the target has the batch, the ledger only says 'pending'."""
    from cutover.imap import session
    from cutover.ledger import MessageRow
    from cutover.mailsync import _imapops as ops

    mb = make_mailbox(messages=12)
    plan = plan_for()
    ledger = Ledger(plan.ledger)
    with session(plan, "source", mb) as src, session(plan, "target", mb) as dst:
        src.normalise_times = False
        found = ops.sizes(src, "INBOX")
        uidvalidity, listing = found.uidvalidity, found.sizes
        fetched = ops.fetch_messages(src, sorted(listing)[:3])
        ledger.record_pending(mb.address, "forward", [
            MessageRow("INBOX", uidvalidity, m.uid, len(m.body), m.sha256, "INBOX", None, None, "pending", False)
            for m in fetched])
        ops.append_messages(dst, "INBOX", fetched, multiappend=True, address=mb.address, server="t")
        # ... and here the process dies: no record_done.

    report = sync_mailbox(plan, mb, ledger)

    assert report.verified, report.error
    assert report.copied == 12 - 3 and report.skipped == 3
    assert _non_empty(imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))) == \
        _non_empty(imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address)))
    assert ledger.message_count(mb.address, state="pending") == 0


def test_uidvalidity_reset_on_the_source_rematches_by_digest(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    mb = make_mailbox(messages=20)
    plan = plan_for()
    assert copy_mailboxes(plan, [mb]).ok
    # Recreate "Ricevute" on the source: same messages, new UIDVALIDITY.
    client = sandbox_env.sandbox.admin_session("source", mb.address)
    try:
        old = client.select_folder("Ricevute")[b"UIDVALIDITY"]
        client.create_folder("Ricevute-tmp")
        client.copy(client.search("ALL"), "Ricevute-tmp")
        client.close_folder()
        client.delete_folder("Ricevute")
        time.sleep(1.1)  # Dovecot derives UIDVALIDITY from the clock
        client.rename_folder("Ricevute-tmp", "Ricevute")
        new = client.select_folder("Ricevute", readonly=True)[b"UIDVALIDITY"]
    finally:
        client.logout()
    assert new != old

    report = copy_mailboxes(plan, [mb])

    m = report.mailboxes[0]
    assert report.ok and m.copied == 0, report.markdown()
    assert any("UIDVALIDITY changed" in n for n in m.notes)
    target = _non_empty(imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address)))
    source = _non_empty(imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address)))
    assert target == source  # nothing duplicated, nothing lost


def test_bad_password_fails_one_mailbox_and_never_shows_it(imap_view, sandbox_env, make_mailbox, plan_for, caplog, capsys) -> None:
    import logging
    from pathlib import Path

    good = make_mailbox(messages=5)
    bad = make_mailbox(messages=5)
    secret_file = Path(bad.target_secret.target)
    real = secret_file.read_text().strip()
    wrong = "Sbagliata-" + real[:6] + "-x9"
    secret_file.write_text(wrong)
    caplog.set_level(logging.DEBUG)
    try:
        report = copy_mailboxes(plan_for(), [bad, good])
    finally:
        secret_file.write_text(real)

    by = {m.address: m for m in report.mailboxes}
    assert by[good.address].status == "verified", report.markdown()
    assert by[bad.address].status == "failed" and by[bad.address].reason == "bad-credentials"
    assert "2FA" not in by[bad.address].error and "User ID" in by[bad.address].error  # 2FA is a source matter
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, report.markdown(), repr(report)):
        assert wrong not in text and real not in text


def test_target_quota_exceeded_is_reported(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    mb = make_mailbox(messages=15)
    other = make_mailbox(messages=3)
    sandbox_env.sandbox.set_quota("target", mb.address, 50_000)
    try:
        report = copy_mailboxes(plan_for(), [mb, other])
    finally:
        sandbox_env.sandbox.set_quota("target", mb.address, None)
    by = {m.address: m for m in report.mailboxes}
    assert by[mb.address].reason == "over-quota" and not by[mb.address].verified
    assert "quota" in by[mb.address].error
    assert by[other.address].verified


def test_message_over_the_target_limit_is_reported_others_copied(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    mb = make_mailbox(messages=10, big=1)
    report = copy_mailboxes(plan_for(target_max_message_bytes=1_000_000), [mb])
    m = report.mailboxes[0]
    assert (m.status, m.reason, m.missing) == ("failed", "skipped", 1) and m.refused == 1  # recorded as skipped (issue 10)
    assert m.copied == 9


def test_master_user_on_the_source(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    mb = make_mailbox(messages=8)
    report = copy_mailboxes(plan_for(master_side="source"), [mb])
    assert report.ok and report.mailboxes[0].copied == 8


def test_server_restart_in_the_middle_still_finishes_verified(imap_view, sandbox_env, make_mailbox, plan_for,
                                                             caplog) -> None:
    """The copy is held inside its own progress callback (its connections open) while the target Dovecot restarts,
    so the restart lands mid-copy on any machine; the engine must notice, reconnect and finish verified."""
    import logging

    mb = make_mailbox(messages=120, big=2)
    plan = plan_for(batch_messages=5, retries=6, retry_backoff_s=0.5)
    progress, result = [], {}
    held, release = threading.Event(), threading.Event()

    def on_progress(event) -> None:
        progress.append(event)
        if event.messages_done >= 10 and not release.is_set():
            held.set()
            release.wait(120)

    worker = threading.Thread(target=lambda: result.setdefault("r", copy_mailboxes(plan, [mb], on_progress=on_progress)))
    box = sandbox_env.sandbox
    [before] = box.status(["infocert"])
    caplog.set_level(logging.WARNING, logger="cutover")
    worker.start()
    try:
        assert held.wait(120), "the copy never got going"
        done_at_restart = progress[-1].messages_done
        box.restart_service("infocert")
    finally:
        release.set()
        worker.join(timeout=300)
    [after] = box.status(["infocert"])
    assert after.running and after.pid != before.pid, "the target Dovecot was not restarted"
    assert 10 <= done_at_restart < 120
    lost = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connection lost, retrying")]
    assert any(mb.address in m for m in lost), "the copy never noticed the restart"
    report = result["r"]
    assert report.ok, report.markdown()
    assert report.mailboxes[0].copied == 120  # appended once each across the attempts, none counted twice
    assert _non_empty(imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))) == \
        _non_empty(imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address)))


def test_reverse_copies_only_new_target_mail_once(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    mb = make_mailbox(messages=15)
    plan = plan_for()
    assert copy_mailboxes(plan, [mb]).ok
    box = sandbox_env.sandbox
    box.deliver("target", mb.address, imap_view.message("arrivato dopo lo switch", "uno"))
    box.deliver("target", mb.address, imap_view.message("arrivato dopo lo switch", "due"), folder="Ricevute")
    source_before = imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address))

    first = copy_mailboxes(plan, [mb], direction="reverse")
    second = copy_mailboxes(plan, [mb], direction="reverse")

    assert first.ok and first.mailboxes[0].copied == 2, first.markdown()
    assert second.ok and second.mailboxes[0].copied == 0
    source_after = imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address))
    assert sum(sum(c.values()) for c in source_after.values()) == sum(sum(c.values()) for c in source_before.values()) + 2
    target = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))
    assert not (target["INBOX"] - source_after["INBOX"])  # every target message is now on the source too
    assert not (target["Ricevute"] - source_after["Ricevute"])


def test_verify_only_finds_a_missing_message(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    mb = make_mailbox(messages=6)
    plan = plan_for()
    assert copy_mailboxes(plan, [mb]).ok
    sandbox_env.sandbox.deliver("source", mb.address, imap_view.message("solo sorgente", "x"))
    report = copy_mailboxes(plan, [mb], verify_only=True)
    m = report.mailboxes[0]
    assert not report.ok and m.missing == 1 and m.status == "not-verified"


def test_delta_fast_path_notices_changes_on_either_side(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    """Unchanged folders are skipped by STATUS; a message removed on the target or added on the source is not."""
    mb = make_mailbox(messages=12)
    plan = plan_for()
    assert copy_mailboxes(plan, [mb]).ok
    again = copy_mailboxes(plan, [mb]).mailboxes[0]
    assert again.verified and (again.messages, again.copied, again.skipped) == (12, 0, 12)

    client = sandbox_env.sandbox.admin_session("target", mb.address)
    try:
        client.select_folder("INBOX")
        first = client.search("ALL")[0]
        client.delete_messages([first])
        client.expunge()
    finally:
        client.logout()
    repaired = copy_mailboxes(plan, [mb]).mailboxes[0]
    assert repaired.verified and repaired.copied == 1, repaired.as_row()

    sandbox_env.sandbox.deliver("source", mb.address, imap_view.message("ancora", "uno"), folder="Ricevute")
    delta = copy_mailboxes(plan, [mb]).mailboxes[0]
    assert delta.verified and delta.copied == 1
    assert {k: v for k, v in imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address)).items() if v} == \
        {k: v for k, v in imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address)).items() if v}
