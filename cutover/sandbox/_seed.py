"""Seed sandbox mailboxes with PEC-shaped mail through IMAP APPEND (MULTIAPPEND when advertised).

Deterministic for a given ``rng_seed``. A mailbox seeded once is skipped next time (its report is kept in
``<state>/seeded/``) unless ``reset`` wipes it first, so seeding twice never duplicates.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Literal

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from cutover.errors import SandboxError
from cutover.plan import Plan
from cutover.sandbox._sandbox import Sandbox, _side_key
from cutover.sandbox.pec_messages import PecMessageFactory, Signer

# Folder share of the messages (the rest of the layout: an empty folder and intermediate parents).
FOLDER_SHARES: tuple[tuple[str, float], ...] = (
    ("INBOX", 0.40),
    ("Posta inviata", 0.15),
    ("Ricevute", 0.25),
    ("Archivio/2023/Società e Comunicazioni", 0.12),
    ("Archivio/2021/Pratiche/Consiglio/Verbali/Riservati", 0.08),
)
EMPTY_FOLDERS = ("Bozze",)
PARENT_FOLDERS = ("Archivio", "Archivio/2023", "Archivio/2021", "Archivio/2021/Pratiche",
                  "Archivio/2021/Pratiche/Consiglio", "Archivio/2021/Pratiche/Consiglio/Verbali")
BATCH_MESSAGES = 50
BATCH_BYTES = 8 * 1024 * 1024
_CORRESPONDENTS = ["protocollo@pec.ordine-esempio.it", "segreteria@pec.comune.roma.it", "inps@postacert.inps.gov.it",
                   "ufficio.legale@pec.studio-verdi.it", "agenziaentrate@pec.agenziaentrate.it"]


@dataclass(frozen=True)
class MailboxSeed:
    """What one mailbox received: messages per folder and total bytes (skipped: it was seeded before)."""

    address: str
    folders: dict[str, int]
    messages: int
    bytes: int
    skipped: bool = False


@dataclass(frozen=True)
class SeedReport:
    side: str
    mailboxes: list[MailboxSeed] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def messages(self) -> int:
        return sum(m.messages for m in self.mailboxes)

    @property
    def bytes(self) -> int:
        return sum(m.bytes for m in self.mailboxes)

    def get(self, address: str) -> MailboxSeed:
        return next(m for m in self.mailboxes if m.address == address)


@dataclass(frozen=True)
class _Planned:
    folder: str
    raw: bytes
    flags: tuple[str, ...]
    when: dt.datetime


def _flags(rng: random.Random, folder: str) -> tuple[str, ...]:
    if folder == "Posta inviata":
        return ("\\Seen",)
    roll = rng.random()
    if roll < 0.15:
        return ()  # unseen
    flags = ["\\Seen"]
    if roll > 0.85:
        flags.append("\\Answered")
    if rng.random() < 0.08:
        flags.append("\\Flagged")
    return tuple(flags)


def _folder_counts(total: int) -> dict[str, int]:
    counts = {name: int(total * share) for name, share in FOLDER_SHARES}
    counts["INBOX"] += total - sum(counts.values())
    return counts


def plan_messages(factory: PecMessageFactory, address: str, total: int, big: int,
                  big_size: tuple[int, int]) -> list[_Planned]:
    """The messages of one mailbox, in append order; ``big`` of them carry a multi-MB attachment."""
    rng = factory.rng
    counts = _folder_counts(total)
    big_slots = set(rng.sample(range(total), min(big, total))) if total else set()
    out: list[_Planned] = []
    index = 0
    for folder, count in counts.items():
        for _ in range(count):
            when = factory.random_date()
            size = rng.randint(*big_size) if index in big_slots else rng.randint(4_000, 60_000)
            attachments = [factory.attachment(size)] if (index in big_slots or rng.random() < 0.7) else []
            other = rng.choice(_CORRESPONDENTS)
            if folder == "Ricevute":
                kind = rng.choice(("accettazione", "avvenuta-consegna", "avvenuta-consegna", "mancata-consegna"))
                if index in big_slots:
                    kind = "avvenuta-consegna"  # an accettazione carries no original, so no attachment
                raw = factory.receipt(kind, sender=address, recipients=[other], when=when, attachments=attachments)
            elif folder == "Posta inviata":
                raw = factory.posta_certificata(sender=address, recipients=[other], when=when, attachments=attachments)
            else:
                raw = factory.posta_certificata(sender=other, recipients=[address], when=when, attachments=attachments)
            out.append(_Planned(folder, raw, _flags(rng, folder), when))
            index += 1
    return out


def _append_all(client: IMAPClient, folder: str, messages: list[_Planned]) -> None:
    multi = b"MULTIAPPEND" in client.capabilities()
    batch: list[_Planned] = []
    size = 0

    def flush() -> None:
        if not batch:
            return
        if multi:
            client.multiappend(folder, [{"msg": m.raw, "flags": m.flags, "date": m.when} for m in batch])
        else:
            for m in batch:
                client.append(folder, m.raw, flags=m.flags, msg_time=m.when)
        batch.clear()

    for m in messages:
        batch.append(m)
        size += len(m.raw)
        if len(batch) >= BATCH_MESSAGES or size >= BATCH_BYTES:
            flush()
            size = 0
    flush()


def _marker(sandbox: Sandbox, side: str, address: str) -> Path:
    return sandbox.state_dir / "seeded" / side / f"{address}.json"


def _seed_mailbox(sandbox: Sandbox, side: Literal["source", "target"], address: str, total: int, big: int,
                  big_size: tuple[int, int], rng_seed: int, reset: bool) -> MailboxSeed:
    marker = _marker(sandbox, side, address)
    if reset:
        sandbox.dovecots["aruba" if side == "source" else "infocert"].delete_mail(sandbox.login_name(side, address))
        marker.unlink(missing_ok=True)
    elif marker.exists():
        data = json.loads(marker.read_text())
        return MailboxSeed(**{**data, "skipped": True})
    ca = sandbox.ca.signer_pair()
    factory = PecMessageFactory(Signer.load(ca.cert, ca.key), random.Random(f"{rng_seed}:{address}"),
                                domain=sandbox.plan.domain)
    planned = plan_messages(factory, address, total, big, big_size)
    client = sandbox.admin_session(side, address)
    try:
        for folder in (*PARENT_FOLDERS, *(f for f, _ in FOLDER_SHARES), *EMPTY_FOLDERS):
            if folder != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            if folder in ("Posta inviata", "Ricevute") or folder in EMPTY_FOLDERS:
                client.subscribe_folder(folder)
        for folder, _ in FOLDER_SHARES:
            _append_all(client, folder, [m for m in planned if m.folder == folder])
    except IMAPClientError as exc:
        raise SandboxError(f"seeding {address} on sandbox {side} failed: {exc}; read "
                           f"{sandbox.dovecots['aruba' if side == 'source' else 'infocert'].paths.log}") from None
    finally:
        try:
            client.logout()
        except (IMAPClientError, OSError):
            pass
    folders = {f: sum(1 for m in planned if m.folder == f) for f, _ in FOLDER_SHARES}
    folders.update({f: 0 for f in EMPTY_FOLDERS})
    result = MailboxSeed(address, folders, len(planned), sum(len(m.raw) for m in planned))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({k: v for k, v in asdict(result).items() if k != "skipped"}, ensure_ascii=False))
    return result


def seed(plan: Plan, mailboxes: Iterable[object], messages_per_mailbox: int, *, big_attachments: int = 2,
         big_size: tuple[int, int] = (3_000_000, 5_000_000), rng_seed: int = 2026, side: str = "source",
         reset: bool = False, workers: int = 8, sandbox: Sandbox | None = None) -> SeedReport:
    """Fill each mailbox (inventory ``Mailbox`` or address string) on one side of a running sandbox.

    ``big_attachments`` messages per mailbox carry an attachment of ``big_size`` bytes. Mailboxes are
    seeded in parallel, one IMAP connection each.
    """
    import time

    box = sandbox or Sandbox(plan)
    key = _side_key(side)
    addresses = [m if isinstance(m, str) else m.address for m in mailboxes]  # type: ignore[attr-defined]
    box.ca.ensure()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda a: _seed_mailbox(box, key, a, messages_per_mailbox, big_attachments,
                                                        big_size, rng_seed, reset), addresses))
    return SeedReport(key, results, time.monotonic() - started)
