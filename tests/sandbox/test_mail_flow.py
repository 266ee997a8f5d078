"""Mail that follows the MX (issue 11, point 6) on the sandbox's real servers: BIND serves the MX, unbound caches
it for its TTL, the sender asks unbound before every message and delivers by SMTP to the sandbox MTA of whichever
provider the answer names, which delivers by LMTP into that provider's Dovecot. Nothing is mocked; the MX change is
the product's own (``switch_mx`` through Ansible), the copy is the product's copy engine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from cutover.dnschange import switch_mx
from cutover.inventory import load_inventory
from cutover.mailsync import copy_mailboxes
from cutover.plan import load_plan
from cutover.sandbox import Sandbox, write_environment
from cutover.sandbox._sender import MailStream, MxSender, find_copies, load_mx_listeners, pec_stream_messages, prove
from cutover.sandbox.pec_messages import Signer

_BASE = int(os.environ.get("PEC_TEST_SANDBOX_BASE_PORT") or os.environ.get("PEC_TEST_BASE_PORT") or "20000")
SERVICES = ["aruba", "infocert", "ns1", "ns2", "resolver", "mta"]


@pytest.fixture(scope="module")
def flow_env(sandbox_tools) -> Iterator[tuple]:
    base, lock = sandbox_tools.allocate_base_port(_BASE + 600)
    directory = Path(tempfile.mkdtemp(prefix="pec-test-mailflow-"))
    directory.chmod(0o711)  # the mail user walks into it
    environment = write_environment(directory, base_port=base, mailboxes=3, surroundings=True)
    plan = load_plan(environment.plan)
    box = Sandbox(plan)
    try:
        box.up(SERVICES)
        inventory = load_inventory(plan)
        box.ensure_users(inventory.mailboxes)
        yield plan, box, inventory
    finally:
        box.down(SERVICES)
        os.close(lock)
        shutil.rmtree(directory, ignore_errors=True)


def _until(condition, what: str, bound_s: float = 180) -> None:
    """Wait for a condition (a bound against hanging on a broken stream, not a speed requirement)."""
    deadline = time.monotonic() + bound_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def _make(box: Sandbox, tag: str):
    pair = box.ca.signer_pair()
    return pec_stream_messages(Signer.load(pair.cert, pair.key), seed=tag, tag=tag)


def test_the_sandbox_maps_each_mx_host_to_its_provider_mta(flow_env) -> None:
    plan, box, _ = flow_env
    listeners = load_mx_listeners(box.mx_listeners_file)
    assert {h: (l.provider, l.port) for h, l in listeners.items()} == {
        "mx.pec.aruba.it.": ("aruba", plan.sandbox.mta_ports[0]),
        "mx.cert.legalmail.it.": ("infocert", plan.sandbox.mta_ports[1])}


def test_a_stream_follows_the_mx_switch_and_every_message_is_found_exactly_once(flow_env) -> None:
    plan, box, inventory = flow_env
    members = [m.address for m in inventory.mailboxes]
    sender = MxSender(plan, load_mx_listeners(box.mx_listeners_file))
    assert sender.resolve_mx()[0] == [(10, "mx.pec.aruba.it.")]
    stream = MailStream(sender, _make(box, "switch"), members, interval_s=0.2).start()
    try:
        _until(lambda: sum(d.provider == "aruba" for d in stream.deliveries) >= 5, "5 messages at aruba")
        switch_mx(plan, "target")  # the product's own switch, through Ansible
        switched_at = len(stream.deliveries)
        _until(lambda: sum(d.provider == "infocert" for d in stream.deliveries) >= 5, "5 messages at infocert")
    finally:
        deliveries = stream.stop()
    assert all(d.accepted for d in deliveries), [d.error for d in deliveries if not d.accepted]
    providers = [d.provider for d in deliveries]
    first_infocert = providers.index("infocert")
    # One move, never back: once the resolver named InfoCert, every later message went there.
    assert set(providers[:first_infocert]) == {"aruba"} and set(providers[first_infocert:]) == {"infocert"}
    # What reached Aruba after the switch came from the resolver's cache: the TTL it answered counts down.
    late = [d.ttl for d in deliveries[switched_at:first_infocert]]
    assert late == sorted(late, reverse=True) and all(t >= 0 for t in late), late
    assert deliveries[first_infocert].mx == "mx.cert.legalmail.it."

    at_aruba = [d for d in deliveries if d.provider == "aruba"]
    at_infocert = [d for d in deliveries if d.provider == "infocert"]
    assert prove(box, "source", at_aruba).ok and prove(box, "target", at_infocert).ok
    # InfoCert mailboxes are named by user ID: its MTA delivered to the member's mailbox by the alias map.
    copies = find_copies(box, "target", [at_infocert[0].recipient], {at_infocert[0].message_id})
    assert [folder for folder, _ in copies[at_infocert[0].message_id]] == ["INBOX"]

    # The forward copy brings what reached Aruba over: now every message is on InfoCert exactly once, intact.
    report = copy_mailboxes(plan, inventory.mailboxes, direction="forward")
    assert report.ok, report
    proof = prove(box, "target", deliveries)
    assert proof.ok and proof.line() == (f"mail flow: sent {len(deliveries)}, on infocert exactly once "
                                         f"{len(deliveries)}, lost 0, duplicated 0"), proof.details


def test_the_proof_names_a_duplicate_a_lost_and_an_altered_message(flow_env) -> None:
    plan, box, inventory = flow_env
    member = inventory.mailboxes[0].address
    sender = MxSender(plan, load_mx_listeners(box.mx_listeners_file))
    make = _make(box, "proof")
    raws = [make(n, member) for n in range(3)]
    deliveries = [sender.send(member, raw) for raw in raws]
    side = "source" if deliveries[0].provider == "aruba" else "target"
    assert prove(box, side, deliveries).ok
    box.deliver(side, member, raws[0], folder="Archivio")  # a second copy elsewhere
    box.deliver(side, member, raws[2].replace(b"Subject: POSTA", b"Subject: posta"), folder="Archivio")
    client = box.admin_session(side, member)
    try:  # the second message deleted
        client.select_folder("INBOX")
        client.delete_messages(client.search(["HEADER", "Message-ID", deliveries[1].message_id]))
        client.expunge()
    finally:
        client.logout()
    proof = prove(box, side, deliveries)
    assert (proof.exactly_once, proof.lost, list(proof.duplicated), proof.altered) == (
        0, [deliveries[1].message_id], [deliveries[0].message_id, deliveries[2].message_id], [deliveries[2].message_id])
    assert "lost 1, duplicated 2, altered 1" in proof.line()
    assert any(d.startswith(f"DUPLICATED {deliveries[0].message_id}") and "Archivio" in d for d in proof.details)
