"""Servers unlike Dovecot (issue 10, part 3), each against the sandbox's real Dovecots with capabilities switched
off (``Sandbox.set_imap_capability``) or namespaces set (``Sandbox.set_namespace``); every outcome is read back
from the servers: SHA-256 multisets per folder, bytes, folder names."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter

import pytest

from cutover.mailsync import copy_mailboxes

WHEN = dt.datetime(2026, 2, 2, 10, 0, tzinfo=dt.timezone.utc)


def _caps(sandbox_env, side: str, address: str) -> list[str]:
    client = sandbox_env.sandbox.admin_session(side, address)
    try:
        return [c.decode() for c in client.capabilities()]
    finally:
        client.logout()


@pytest.fixture
def capabilities_without(sandbox_env, make_mailbox):
    """``drop(side, *names)``: that Dovecot announces its capabilities less ``names`` (restored afterwards)."""
    box = sandbox_env.sandbox
    probe = make_mailbox()
    touched: list[str] = []

    def drop(side: str, *names: str) -> None:
        caps = _caps(sandbox_env, side, probe.address)
        box.set_imap_capability(side, [c for c in caps if c.upper() not in {n.upper() for n in names}])
        touched.append(side)
        now = _caps(sandbox_env, side, probe.address)
        assert not {n.upper() for n in names} & {c.upper() for c in now}

    yield drop
    for side in dict.fromkeys(touched):
        box.set_imap_capability(side, None)


@pytest.fixture
def namespace(sandbox_env):
    """``set(side, prefix, separator)``: a personal namespace like Courier's (restored afterwards)."""
    box = sandbox_env.sandbox
    touched: list[str] = []

    def set_(side: str, prefix: str, separator: str) -> None:
        box.set_namespace(side, prefix, separator)
        touched.append(side)

    yield set_
    for side in dict.fromkeys(touched):
        box.set_namespace(side, "", "/")


def _same(imap_view, sandbox_env, address: str, rename=lambda name: name) -> None:
    source = imap_view.digests(imap_view.snapshot(sandbox_env, "source", address))
    target = imap_view.digests(imap_view.snapshot(sandbox_env, "target", address))
    assert {rename(k): v for k, v in source.items() if v} == {k: v for k, v in target.items() if v}


def test_without_uidplus_a_copy_verifies_in_the_same_run(imap_view, sandbox_env, make_mailbox, plan_for,
                                                         capabilities_without) -> None:
    mb = make_mailbox(messages=12)
    capabilities_without("target", "UIDPLUS")
    report = copy_mailboxes(plan_for(), [mb])
    m = report.mailboxes[0]
    # verified in this run: the appended messages were found among the new target UIDs by SHA-256
    assert (m.status, m.verified, m.copied, m.missing, m.duplicates) == ("verified", True, 12, 0, 0), m.as_row()
    _same(imap_view, sandbox_env, mb.address)
    again = copy_mailboxes(plan_for(), [mb]).mailboxes[0]
    assert again.verified and again.copied == 0, again.as_row()
    _same(imap_view, sandbox_env, mb.address)


def test_without_multiappend_and_literal_plus_every_message_goes_once(imap_view, sandbox_env, make_mailbox, plan_for,
                                                                     capabilities_without) -> None:
    mb = make_mailbox(messages=10, big=1)
    capabilities_without("target", "MULTIAPPEND", "LITERAL+")
    m = copy_mailboxes(plan_for(batch_messages=4), [mb]).mailboxes[0]
    assert m.verified and m.copied == 10, m.as_row()
    _same(imap_view, sandbox_env, mb.address)


def test_a_refused_synchronizing_literal_skips_that_message_only(imap_view, sandbox_env, make_mailbox, plan_for,
                                                                 capabilities_without) -> None:
    """Without LITERAL+ the target answers the size of a too-large message with a tagged NO before "+": that is
    a refusal of that message (recorded as skipped with the server's words), never a lost connection."""
    mb = make_mailbox()
    box = sandbox_env.sandbox
    raw = [imap_view.message(f"m{i}", ("grande " * 4000) if i == 1 else f"corpo {i}") for i in range(4)]
    for r in raw:
        box.deliver("source", mb.address, r, internaldate=WHEN)
    capabilities_without("target", "LITERAL+")
    box.set_max_message_size("target", mb.address, 10_000)
    try:
        m = copy_mailboxes(plan_for(batch_messages=10), [mb]).mailboxes[0]
    finally:
        box.set_max_message_size("target", mb.address, None)
    assert (m.status, m.reason, m.copied, m.refused, m.missing) == ("failed", "skipped", 3, 1, 1), m.as_row()
    assert "Mail size is larger" in m.error and "unreachable" not in m.error
    inbox = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))["INBOX"]
    assert inbox == Counter(hashlib.sha256(r).hexdigest() for i, r in enumerate(raw) if i != 1)


def _nul_message(subject: str) -> bytes:
    # a NUL in an 8-bit part: Dovecot's BODY[] answers it as 0x80, BINARY[] as it is
    return (f"From: mittente@pec.esempio.it\r\nTo: destinatario@pec.fnofi.it\r\nSubject: {subject}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            ).encode() + b"prima\x00dopo \xc3\xa8 fine\r\n"


def _binary_digests(sandbox_env, side: str, address: str) -> Counter:
    client = sandbox_env.sandbox.admin_session(side, address)
    try:
        client.select_folder("INBOX", readonly=True)
        typ, raw = client._imap.uid("FETCH", "1:*", "(BINARY.PEEK[])")
        return Counter(hashlib.sha256(item[1]).hexdigest() for item in raw if isinstance(item, tuple))
    finally:
        client.logout()


def test_a_nul_byte_is_copied_byte_exact_where_both_announce_binary(imap_view, sandbox_env, make_mailbox,
                                                                   plan_for) -> None:
    mb = make_mailbox(messages=3)
    raw = _nul_message("con NUL")
    sandbox_env.sandbox.deliver("source", mb.address, raw, internaldate=WHEN)
    assert hashlib.sha256(raw).hexdigest() in _binary_digests(sandbox_env, "source", mb.address)
    m = copy_mailboxes(plan_for(), [mb]).mailboxes[0]
    assert m.verified and m.copied == 4, m.as_row()
    # the original bytes (with the NUL) are on the target, not the 0x80 that BODY[] shows
    assert hashlib.sha256(raw).hexdigest() in _binary_digests(sandbox_env, "target", mb.address)
    _same(imap_view, sandbox_env, mb.address)


def test_a_nul_byte_to_a_target_without_binary_is_skipped_never_verified(imap_view, sandbox_env, make_mailbox,
                                                                       plan_for, capabilities_without) -> None:
    mb = make_mailbox(messages=3)
    sandbox_env.sandbox.deliver("source", mb.address, _nul_message("con NUL"), internaldate=WHEN)
    capabilities_without("target", "BINARY")
    m = copy_mailboxes(plan_for(), [mb]).mailboxes[0]
    assert (m.status, m.reason, m.verified, m.copied, m.refused) == ("failed", "skipped", False, 3, 1), m.as_row()
    assert "not copyable byte-exact" in m.error and "BINARY" in m.error
    inbox = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))["INBOX"]
    assert sum(inbox.values()) == 3  # the NUL message was not appended altered


@pytest.mark.parametrize("side", ["target", "source"])
def test_courier_style_namespace_on_either_side_both_directions(imap_view, sandbox_env, make_mailbox, plan_for,
                                                                namespace, side) -> None:
    mb = make_mailbox(messages=15)  # seeded with nested folders ("/" on the default namespace)
    source_before = imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address))
    namespace(side, "INBOX.", ".")

    def courier(name: str) -> str:
        return name if name == "INBOX" else "INBOX." + name.replace("/", ".")

    src_names = set(imap_view.snapshot(sandbox_env, "source", mb.address))
    m = copy_mailboxes(plan_for(), [mb]).mailboxes[0]
    assert m.verified and m.copied == 15, m.as_row()
    target = {k: v for k, v in imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address)).items() if v}
    expected = {(courier(k) if side == "target" else k): v for k, v in source_before.items() if v}
    assert target == expected, (src_names, sorted(target))

    # the rollback creates a folder on the source side, in that side's namespace
    folder = courier("Arrivi dopo") if side == "target" else "Arrivi dopo"
    sandbox_env.sandbox.deliver("target", mb.address, imap_view.message("nuova", "dopo lo switch"), folder=folder)
    back = copy_mailboxes(plan_for(), [mb], direction="reverse").mailboxes[0]
    assert back.verified and back.copied == 1, back.as_row()
    names = set(imap_view.snapshot(sandbox_env, "source", mb.address))
    assert (courier("Arrivi dopo") if side == "source" else "Arrivi dopo") in names, names


def test_noselect_placeholders_are_not_copied_and_do_not_stop_a_copy(imap_view, sandbox_env, make_mailbox,
                                                                    plan_for) -> None:
    mb = make_mailbox()
    box = sandbox_env.sandbox
    box.deliver("source", mb.address, imap_view.message("a", "in profondità"), folder="Pratiche/2024/Gennaio")
    box.deliver("target", mb.address, imap_view.message("b", "già sul target"), folder="Pratiche/2023/Vecchie")
    src = box.admin_session("source", mb.address)
    try:
        flags = {name: fl for fl, _, name in src.list_folders()}
    finally:
        src.logout()
    assert b"\\Noselect" in flags.get("Pratiche", ()) or b"\\NoSelect" in flags.get("Pratiche", ()), flags
    m = copy_mailboxes(plan_for(), [mb]).mailboxes[0]
    assert m.verified and m.copied == 1, m.as_row()
    target = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))
    assert sum(target["Pratiche/2024/Gennaio"].values()) == 1


def test_a_child_of_inbox_goes_to_the_child_of_inbox_on_a_courier_target_and_back(imap_view, sandbox_env,
                                                                                   make_mailbox, plan_for,
                                                                                   namespace) -> None:
    """Source INBOX/Pratiche ("/" namespace) to a target with "INBOX." and ".": INBOX.Pratiche, never
    INBOX.INBOX.Pratiche; a rerun copies nothing; the rollback brings the target's new mail back into
    INBOX/Pratiche (no new top-level "Pratiche"); a forward run after it copies nothing twice."""
    mb = make_mailbox(messages=4)
    box = sandbox_env.sandbox
    for i in range(3):
        box.deliver("source", mb.address, imap_view.message(f"pratica {i}", "figlia di INBOX"), folder="INBOX/Pratiche")
    box.deliver("source", mb.address, imap_view.message("pratica 2024", "nipote"), folder="INBOX/Pratiche/2024")
    namespace("target", "INBOX.", ".")

    m = copy_mailboxes(plan_for(), [mb]).mailboxes[0]
    assert m.verified and m.copied == 8, m.as_row()
    target = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))
    assert sum(target["INBOX.Pratiche"].values()) == 3 and sum(target["INBOX.Pratiche.2024"].values()) == 1, target
    assert not [name for name in target if name.upper().startswith("INBOX.INBOX")], sorted(target)
    again = copy_mailboxes(plan_for(), [mb]).mailboxes[0]
    assert again.verified and again.copied == 0, again.as_row()

    box.deliver("target", mb.address, imap_view.message("dopo", "arrivata sul target"), folder="INBOX.Pratiche")
    back = copy_mailboxes(plan_for(), [mb], direction="reverse").mailboxes[0]
    assert back.verified and back.copied == 1, back.as_row()
    source = imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address))
    assert "Pratiche" not in source and sum(source["INBOX/Pratiche"].values()) == 4, sorted(source)
    assert set(source["INBOX/Pratiche"].values()) == {1}

    forward = copy_mailboxes(plan_for(), [mb]).mailboxes[0]
    assert forward.verified and forward.copied == 0, forward.as_row()
    target = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))
    assert target["INBOX.Pratiche"] == source["INBOX/Pratiche"] and set(target["INBOX.Pratiche"].values()) == {1}
    held = [n for folder in target.values() for n in folder.values()]
    assert sum(held) == 9 and set(held) == {1}, target
