"""Fixtures for the copy engine: fresh mailboxes of our own on the session sandbox, a ledger per test.

Each test makes its own members (unique addresses, secrets under tmp_path) so nothing here changes the
seeded inventory mailboxes that other test packages rely on.
"""

from __future__ import annotations

import csv
import hashlib
import uuid
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest
import yaml

from cutover.inventory import Mailbox
from cutover.plan import Auth, Plan
from cutover.sandbox import ADMIN_USER, seed
from cutover.secrets import SecretRef


@pytest.fixture
def make_mailbox(sandbox_env, tmp_path: Path) -> Callable[..., Mailbox]:
    """``make(messages=0, big=0, rng_seed=7) -> Mailbox``: a new member on both Dovecots, seeded on the source."""
    box, plan = sandbox_env.sandbox, sandbox_env.plan

    def make(messages: int = 0, big: int = 0, rng_seed: int = 7, prefix: str = "ms") -> Mailbox:
        local = f"{prefix}{uuid.uuid4().hex[:10]}"
        secrets = tmp_path / "secrets"
        mb = Mailbox(f"{local}@{plan.domain}", SecretRef("file", str(secrets / "aruba" / local)),
                     SecretRef("file", str(secrets / "infocert" / local)))
        box.ensure_users([mb])
        if messages:
            seed(plan, [mb], messages, big_attachments=big, big_size=(1_500_000, 2_000_000), rng_seed=rng_seed,
                 sandbox=box)
        return mb

    return make


@pytest.fixture
def plan_for(sandbox_env, tmp_path: Path) -> Callable[..., Plan]:
    """``plan_for(**copy_settings)``: the session plan with a ledger of this test's own and adjusted copy settings."""

    def make(*, master_side: str | None = None, target_max_message_bytes: int | None = None,
             ledger_url: str | None = None, **copy) -> Plan:
        plan = sandbox_env.plan
        update: dict = {"ledger": tmp_path / "ledger.sqlite",
                        "copy_": plan.copy_settings.model_copy(update={"retry_backoff_s": 0.2, **copy})}
        if ledger_url:  # a PostgreSQL ledger: its URL (password inside) only in a mode-600 file the plan references
            secret = tmp_path / "ledger-url"
            secret.write_text(ledger_url + "\n")
            secret.chmod(0o600)
            update["ledger_url"] = f"file:{secret}"
        if master_side:
            secret = f"file:{sandbox_env.sandbox.state_dir / 'secrets' / 'sandbox-admin'}"
            provider = plan.provider(master_side)  # type: ignore[arg-type]
            update[master_side] = provider.model_copy(update={"auth": Auth(mode="master", master_user=ADMIN_USER,
                                                                           master_secret=secret)})
        if target_max_message_bytes:
            update["target"] = update.get("target", plan.target).model_copy(
                update={"max_message_bytes": target_max_message_bytes})
        return plan.model_copy(update=update)

    return make


def snapshot(sandbox_env, side: str, address: str) -> dict[str, Counter]:
    """Per folder, the multiset of (SHA-256, flags, INTERNALDATE) read over IMAP (BODY.PEEK: nothing changes).
    ``sandbox_env``: the session's sandbox environment, or a Sandbox of a test's own."""
    client = getattr(sandbox_env, "sandbox", sandbox_env).admin_session(side, address)
    client.normalise_times = False
    out: dict[str, Counter] = {}
    try:
        for flags, _, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            info = client.select_folder(name, readonly=True)
            items: Counter = Counter()
            if info.get(b"EXISTS"):
                uids = client.search("ALL")
                for data in client.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]).values():
                    flags_ = tuple(sorted(f for f in data[b"FLAGS"] if f != b"\\Recent"))
                    items[(hashlib.sha256(data[b"BODY[]"]).hexdigest(), flags_, data[b"INTERNALDATE"])] += 1
            out[name] = items
    finally:
        client.logout()
    return out


def digests(snap: dict[str, Counter]) -> dict[str, Counter]:
    """Only the SHA-256 multiset per folder."""
    out = {}
    for folder, items in snap.items():
        c: Counter = Counter()
        for (sha, _, _), n in items.items():
            c[sha] += n
        out[folder] = c
    return out


def message(subject: str, body: str, message_id: str | None = None) -> bytes:
    """A small RFC 5322 message with CRLF line ends."""
    mid = message_id or f"<{uuid.uuid4().hex}@pec.fnofi.it>"
    return (f"From: mittente@pec.esempio.it\r\nTo: destinatario@pec.fnofi.it\r\nSubject: {subject}\r\n"
            f"Message-ID: {mid}\r\nDate: Mon, 2 Feb 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


def recreate_folder(sandbox_env, side: str, address: str, folder: str) -> tuple[int, int]:
    """Recreate ``folder`` with the same messages under a new UIDVALIDITY (as a server restore would);
    returns (old, new) UIDVALIDITY."""
    import time

    client = sandbox_env.sandbox.admin_session(side, address)
    try:
        old = client.select_folder(folder)[b"UIDVALIDITY"]
        client.create_folder(f"{folder}-tmp")
        client.copy(client.search("ALL"), f"{folder}-tmp")
        client.close_folder()
        client.delete_folder(folder)
        time.sleep(1.1)  # Dovecot derives UIDVALIDITY from the clock
        client.rename_folder(f"{folder}-tmp", folder)
        new = client.select_folder(folder, readonly=True)[b"UIDVALIDITY"]
    finally:
        client.logout()
    return old, new


@pytest.fixture
def imap_view():
    """The helpers above, for tests (importlib mode: test modules do not import conftest)."""
    import types
    return types.SimpleNamespace(snapshot=snapshot, digests=digests, message=message, recreate_folder=recreate_folder)


def plan_file_with(sandbox_env, tmp_path: Path, mailboxes, tag: str) -> Path:
    """A plan file beside the session plan (so its relative paths resolve) with an inventory of ``mailboxes`` only
    and a ledger of the test's own: what the CLI and the flows read."""
    inv = tmp_path / "mailboxes.csv"
    with inv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["address", "source_secret", "target_secret", "canary", "notes"])
        for mb in mailboxes:
            w.writerow([mb.address, f"file:{mb.source_secret.target}", f"file:{mb.target_secret.target}", "no", ""])
    data = yaml.safe_load(sandbox_env.plan_path.read_text())
    data["ledger"] = str(tmp_path / "ledger.sqlite")
    data["inventory"] = str(inv)
    path = sandbox_env.plan_path.parent / f"plan-{tag}-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
