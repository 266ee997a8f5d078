"""One bad message does not stop a mailbox (issue 10, part 4): a permanent refusal is recorded as skipped with the
server's words, the rest goes on, gates count it missing until an operator approves it with
``pec-cutover copy approve-skipped`` (recorded in the ledger, shown in every later report)."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import uuid
from collections import Counter

from typer.testing import CliRunner

from checks.gates import access_gate
from cutover.cli import app
from cutover.ledger import Ledger
from cutover.mailsync import copy_mailboxes
from cutover.plan import load_plan

WHEN = dt.datetime(2026, 2, 2, 10, 0, tzinfo=dt.timezone.utc)


def _copy_rules(gate) -> dict[str, bool]:
    """The copy rules of the access gate (webmail and canaries are other tests' business)."""
    return {r.rule: r.ok for r in gate.rules if r.rule in ("mailboxes not verified", "messages missing on the target")}


def _plan_file(sandbox_env, tmp_path, mb) -> str:
    """A plan beside the session's (same servers) with this test's own ledger and a one-member inventory."""
    inventory = tmp_path / "members.csv"
    with inventory.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["address", "source_secret", "target_secret", "canary", "notes"])
        w.writerow([mb.address, f"file:{mb.source_secret.target}", f"file:{mb.target_secret.target}", "no", ""])
    text = sandbox_env.plan_path.read_text()
    lines = [f"ledger: {tmp_path / 'ledger.sqlite'}" if l.startswith("ledger:") else
             f"inventory: {inventory}" if l.startswith("inventory:") else l for l in text.splitlines()]
    path = sandbox_env.plan_path.parent / f"plan-skipped-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_refused_message_is_skipped_counted_missing_until_approved(imap_view, sandbox_env, make_mailbox,
                                                                    tmp_path) -> None:
    mb = make_mailbox()
    box = sandbox_env.sandbox
    for i in range(6):
        box.deliver("source", mb.address, imap_view.message(f"ricevuta {i}", f"corpo {i}"), internaldate=WHEN)
    big = imap_view.message("allegato enorme", "grande " * 4000)
    box.deliver("source", mb.address, big, internaldate=WHEN)
    plan_path = _plan_file(sandbox_env, tmp_path, mb)
    plan = load_plan(plan_path)
    box.set_max_message_size("target", mb.address, 10_000)
    first = copy_mailboxes(plan, [mb])
    m = first.mailboxes[0]
    # the rest of the mailbox went on; the big one is skipped, with the server's words
    assert (m.status, m.reason, m.copied, m.refused, m.missing, m.verified) == ("failed", "skipped", 6, 1, 1, False)
    assert "Mail size is larger than the maximum size" in m.error and "approve-skipped" in m.error
    assert "1 skipped (refused by the target)" in first.markdown()
    target = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))
    assert hashlib.sha256(big).hexdigest() not in sum(target.values(), Counter())
    gate = access_gate(webmail=[], canaries=[], unverified_mailboxes=first.unverified_count,
                       missing_messages=first.missing_messages, gates=plan.gates)
    assert _copy_rules(gate) == {"mailboxes not verified": False, "messages missing on the target": False}

    result = CliRunner().invoke(app, ["copy", "approve-skipped", "--plan", plan_path, "--mailbox", mb.address,
                                      "--operator", "Ada Rossi", "--reason", "allegato già consegnato a mano"])
    assert result.exit_code == 0, result.output
    assert "1 skipped message(s) approved by Ada Rossi" in result.output and "Mail size is larger" in result.output
    ledger = Ledger(plan.ledger)
    try:
        assert [(op, why, n) for op, why, n, _ in ledger.approvals(mb.address)] == \
            [("Ada Rossi", "allegato già consegnato a mano", 1)]
    finally:
        ledger.close()

    try:
        second = copy_mailboxes(plan, [mb])  # still refused (tried again), now approved
    finally:
        box.set_max_message_size("target", mb.address, None)
    m2 = second.mailboxes[0]
    assert (m2.status, m2.verified, m2.missing, m2.approved) == ("verified", True, 0, 1), m2.as_row()
    assert "approved by Ada Rossi: allegato già consegnato a mano" in second.markdown()
    gate = access_gate(webmail=[], canaries=[], unverified_mailboxes=second.unverified_count,
                       missing_messages=second.missing_messages, gates=plan.gates)
    assert _copy_rules(gate) == {"mailboxes not verified": True, "messages missing on the target": True}, gate.markdown()

    # later reports still show it (the unchanged folder is not listed again, so it is not retried either)
    third = copy_mailboxes(plan, [mb])
    assert (third.mailboxes[0].verified, third.mailboxes[0].approved) == (True, 1), third.mailboxes[0].as_row()
    assert "approved by Ada Rossi" in third.markdown()
    # when the folder changes it is listed again: a target that now takes the message gets it after all
    box.deliver("source", mb.address, imap_view.message("nuova", "dopo"), internaldate=WHEN)
    fourth = copy_mailboxes(plan, [mb]).mailboxes[0]
    assert (fourth.verified, fourth.copied, fourth.approved) == (True, 2, 0), fourth.as_row()
    target = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))
    assert sum(target.values(), Counter())[hashlib.sha256(big).hexdigest()] == 1


def test_approve_skipped_needs_an_inventory_mailbox_and_says_so_in_one_line(sandbox_env, make_mailbox,
                                                                          tmp_path) -> None:
    mb = make_mailbox()
    plan_path = _plan_file(sandbox_env, tmp_path, mb)
    result = CliRunner().invoke(app, ["copy", "approve-skipped", "--plan", plan_path, "--mailbox",
                                      "nessuno@pec.fnofi.it", "--operator", "Ada Rossi", "--reason", "perché sì"])
    assert result.exit_code == 2 and "nessuno@pec.fnofi.it is not in the inventory" in result.output
    assert "Traceback" not in result.output


def test_the_quota_precheck_counts_only_what_will_be_appended(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    """After a source UIDVALIDITY reset every message is "to do" again but all are matched by SHA-256 on the
    target: a target with room for less than the folder must not be refused as over quota."""
    mb = make_mailbox()
    box = sandbox_env.sandbox
    for i in range(8):
        box.deliver("source", mb.address, imap_view.message(f"pratica {i}", f"testo {i} " * 3000), folder="Archivio",
                    internaldate=WHEN)
    plan = plan_for()
    assert copy_mailboxes(plan, [mb]).ok
    old, new = imap_view.recreate_folder(sandbox_env, "source", mb.address, "Archivio")
    assert new != old
    target = box.admin_session("target", mb.address)
    try:
        _, quotas = target.get_quota_root("INBOX")
        used_kib = next(int(q.usage) for q in quotas if str(q.resource).upper() == "STORAGE")
    finally:
        target.logout()
    assert used_kib > 150  # the folder is ~8 x 30 KB
    box.set_quota("target", mb.address, (used_kib + 60) * 1024)  # room for two more messages, not eight
    try:
        m = copy_mailboxes(plan, [mb]).mailboxes[0]
    finally:
        box.set_quota("target", mb.address, None)
    assert (m.status, m.copied, m.reason) == ("verified", 0, ""), m.as_row()
    target = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))
    assert sum(target["Archivio"].values()) == 8
