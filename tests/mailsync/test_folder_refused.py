"""A folder name the target refuses (issue 10, part 3): reported, never merged into another folder.

The sandbox's target Dovecot keeps this test's member in Maildir++ storage (a per-user ``mail`` location in its
passwd-file, no server restart): Maildir++ stores the hierarchy with '.', so without an escape character the
server refuses a '.' inside a folder name (``NO [CANNOT] Character not allowed in mailbox name: '.'``), as
Courier-like servers do, while the source (``LAYOUT=fs``) holds such folders. Everything is read back from both
servers.
"""

from __future__ import annotations

from cutover.mailsync import copy_mailboxes

REFUSED = "Pratiche n.12"


def _maildirplusplus(sandbox_env, address: str) -> None:
    box = sandbox_env.sandbox
    user = box.login_name("target", address).lower()
    box.dovecots["infocert"].users.upsert(user, None, userdb_mail="maildir:~/Maildir")


def test_a_folder_name_the_target_refuses_is_reported_and_never_merged(imap_view, sandbox_env, make_mailbox,
                                                                       plan_for) -> None:
    mb = make_mailbox()
    box = sandbox_env.sandbox
    placed = {"INBOX": 2, REFUSED: 3, "Archivio": 1}
    for folder, n in placed.items():
        for i in range(n):
            box.deliver("source", mb.address, imap_view.message(f"{folder} {i}", f"in {folder}, numero {i}"),
                        folder=folder)
    _maildirplusplus(sandbox_env, mb.address)
    probe = box.admin_session("target", mb.address)
    try:  # the server itself refuses the name (not our mapping): the premise of the test
        try:
            probe.create_folder(REFUSED)
            raise AssertionError(f"the target accepted {REFUSED!r}")
        except Exception as exc:  # noqa: BLE001 - imapclient's generic error
            assert "Character not allowed" in str(exc), exc
    finally:
        probe.logout()
    source = imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address))
    refused_digests = set(source[REFUSED])
    assert len(refused_digests) == 3

    report = copy_mailboxes(plan_for(), [mb])
    m = report.mailboxes[0]
    assert (m.status, m.reason, m.verified) == ("failed", "folder-refused", False), m.as_row()
    assert m.missing == 3 and report.missing_messages == 3 and report.unverified_count == 1, m.as_row()
    assert REFUSED in m.error and "Character not allowed in mailbox name" in m.error and "folder_map" in m.error
    target = {k: v for k, v in imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address)).items() if v}
    # the other folders are copied whole, and the refused folder's messages are nowhere on the target
    assert target == {"INBOX": source["INBOX"], "Archivio": source["Archivio"]}, target
    assert not refused_digests & {sha for c in target.values() for sha in c}

    # the operator maps the folder to a name the target takes: the next run copies it, nothing twice
    fixed = copy_mailboxes(plan_for(folder_map={REFUSED: "Pratiche n_12"}), [mb]).mailboxes[0]
    assert fixed.verified and fixed.copied == 3 and fixed.missing == 0, fixed.as_row()
    target = {k: v for k, v in imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address)).items() if v}
    assert target == {"INBOX": source["INBOX"], "Archivio": source["Archivio"], "Pratiche n_12": source[REFUSED]}


def test_a_folder_the_source_refuses_on_a_rollback_is_reported_too(imap_view, sandbox_env, make_mailbox,
                                                                   plan_for) -> None:
    """The rollback writes to the source: mail that reached the target after the switch, in a folder whose name
    the source refuses, is reported there and not put in another source folder."""
    mb = make_mailbox()
    box = sandbox_env.sandbox
    box.deliver("source", mb.address, imap_view.message("prima", "prima dello switch"))
    assert copy_mailboxes(plan_for(), [mb]).mailboxes[0].verified
    # After the switch the member files mail on the target in a folder with a '.'; the source is the strict side
    # here (this member's aruba mail in Maildir++: it holds only INBOX, which both layouts keep in ~/Maildir).
    box.dovecots["aruba"].users.upsert(box.login_name("source", mb.address).lower(), None,
                                       userdb_mail="maildir:~/Maildir")
    box.deliver("target", mb.address, imap_view.message("dopo", "arrivata dopo lo switch"), folder="Fatture 2026.11")
    box.deliver("target", mb.address, imap_view.message("dopo 2", "anche questa"), folder="INBOX")
    newer = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))["Fatture 2026.11"]

    m = copy_mailboxes(plan_for(), [mb], direction="reverse").mailboxes[0]
    assert (m.status, m.reason, m.missing, m.copied) == ("failed", "folder-refused", 1, 1), m.as_row()
    assert "Fatture 2026.11" in m.error and "Character not allowed in mailbox name" in m.error, m.error
    source = {k: v for k, v in imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address)).items() if v}
    assert set(source) == {"INBOX"} and sum(source["INBOX"].values()) == 2, source
    assert not set(newer) & set(source["INBOX"])
