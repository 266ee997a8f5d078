"""Mail that follows the MX, in the sandbox: a sending MTA, a steady stream of PEC messages, and the proof.

:class:`MxSender` asks the sandbox's resolver (unbound, a plan ``dns.resolvers`` entry) for the domain's MX before
every delivery and keeps no answer itself: a switch is followed exactly when the resolver's cache lets it, i.e.
once the TTL it answered with has passed. Each MX host name is mapped to that provider's sandbox MTA listener
(``mx.pec.aruba.it.`` -> the aruba MTA, ``mx.cert.legalmail.it.`` -> the infocert MTA; the sandbox writes the
mapping, :attr:`Sandbox.mx_listeners_file`), which delivers by LMTP into that provider's Dovecot. A refused or
failed delivery is retried a bounded number of times, asking the resolver again, as a sending MTA's queue would.

:class:`MailStream` sends one PEC-shaped message (``PecMessageFactory.posta_certificata``) every ``interval_s`` to
the members in turn, from a thread, and records each delivery (Message-ID, SHA-256 of the bytes sent, MX, provider,
queue id, TTL). :func:`prove` reads every folder of the recipients on one side over IMAP and says, by Message-ID and
SHA-256, which messages are there exactly once, missing, duplicated or altered. Delivery prepends trace fields
(Return-Path, Delivered-To, Received) and nothing else: a stored message is intact when it ends with exactly the
bytes sent and what precedes them is header fields.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import re
import smtplib
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import dns.exception
import dns.resolver

from cutover.errors import SandboxError
from cutover.plan import DnsServer, Plan

SENDER_DOMAIN = "pec.mittente-esempio.it"  # an outside PEC provider's domain: the stream's senders
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^>]+)>", re.IGNORECASE | re.MULTILINE)
_QUEUED = re.compile(r"queued as (\S+)")
_HEADER_LINE = re.compile(rb"^(?:[!-9;-~]+:[^\r\n]*|[ \t][^\r\n]*)\r?\n")


@dataclass(frozen=True)
class MxListener:
    """Where the sandbox serves one MX host name: the provider and its MTA port on 127.0.0.1."""

    host: str
    provider: str
    port: int


def load_mx_listeners(path: Path) -> dict[str, MxListener]:
    """The mapping the sandbox wrote (``{MX host: {"provider", "port"}}``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SandboxError(f"cannot read the sandbox's MX listeners {path} ({type(exc).__name__}); start the sandbox "
                           "with its MTA (plan sandbox.mta_ports)") from None
    return {host.lower(): MxListener(host.lower(), v["provider"], int(v["port"])) for host, v in data.items()}


@dataclass(frozen=True)
class Delivery:
    """One message handed to the MX (or not): what was sent, where, and what the receiving MTA said."""

    message_id: str
    recipient: str
    sha256: str
    size: int
    sent_at: str
    provider: str = ""  # empty: no MX accepted it
    mx: str = ""
    ttl: int | None = None
    queue_id: str = ""
    attempts: int = 0
    error: str = ""

    @property
    def accepted(self) -> bool:
        return bool(self.provider)


class MxSender:
    """Delivers messages for ``plan.domain`` by its MX as ``resolver`` answers it now (no cache of its own)."""

    def __init__(self, plan: Plan, listeners: dict[str, MxListener], *, resolver: DnsServer | None = None,
                 attempts: int = 5, retry_s: float = 1.0, timeout_s: float = 30.0) -> None:
        if resolver is None and not plan.dns.resolvers:
            raise SandboxError("the plan names no dns.resolvers: the sender resolves the MX through one")
        server = resolver or plan.dns.resolvers[0]
        self.domain = plan.domain
        self.listeners = listeners
        self.attempts, self.retry_s, self.timeout_s = attempts, retry_s, timeout_s
        self._resolver = dns.resolver.Resolver(configure=False)
        self._resolver.nameservers = [server.host]
        self._resolver.port = server.port
        self._resolver.cache = None  # every delivery asks the resolver: its cache, and the TTL, decide
        self._resolver.lifetime = max(2.0, plan.dns.timeout_s * 3)

    def resolve_mx(self) -> tuple[list[tuple[int, str]], int]:
        """(preference, host) sorted, and the TTL the resolver answered with."""
        answer = self._resolver.resolve(self.domain, "MX")
        records = sorted((r.preference, r.exchange.to_text().lower()) for r in answer)
        return records, int(answer.rrset.ttl)

    def send(self, recipient: str, raw: bytes, *, envelope_from: str = f"posta-certificata@{SENDER_DOMAIN}") -> Delivery:
        """Deliver one message to the MX the resolver names now (lowest preference first), retrying a refusal."""
        found = _MESSAGE_ID.search(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n")
        base = dict(message_id=found.group(1).decode() if found else "", recipient=recipient,
                    sha256=hashlib.sha256(raw).hexdigest(), size=len(raw),
                    sent_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"))
        error = ""
        for attempt in range(1, self.attempts + 1):
            try:
                records, ttl = self.resolve_mx()
            except dns.exception.DNSException as exc:
                error = f"MX of {self.domain} not resolved: {type(exc).__name__}"
            else:
                for _pref, host in records:
                    listener = self.listeners.get(host)
                    if listener is None:
                        error = f"MX host {host} has no sandbox listener"
                        continue
                    try:
                        queue_id = self._deliver(listener, envelope_from, recipient, raw)
                    except (OSError, smtplib.SMTPException) as exc:
                        error = f"{host} ({listener.provider}): {type(exc).__name__}: {exc}"
                        continue
                    return Delivery(**base, provider=listener.provider, mx=host, ttl=ttl, queue_id=queue_id,
                                    attempts=attempt)
            if attempt < self.attempts:
                time.sleep(self.retry_s)
        return Delivery(**base, attempts=self.attempts, error=error)

    def _deliver(self, listener: MxListener, envelope_from: str, recipient: str, raw: bytes) -> str:
        with smtplib.SMTP("127.0.0.1", listener.port, local_hostname=f"mx.{SENDER_DOMAIN}",
                          timeout=self.timeout_s) as smtp:
            smtp.ehlo()
            code, text = smtp.mail(envelope_from)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, text, envelope_from)
            code, text = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({recipient: (code, text)})
            code, text = smtp.data(raw)
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
        queued = _QUEUED.search(text.decode("utf-8", "replace"))
        return queued.group(1) if queued else ""


class MailStream:
    """One PEC message every ``interval_s`` to ``recipients`` in turn, from a thread, until :meth:`stop`."""

    def __init__(self, sender: MxSender, make_message: Callable[[int, str], bytes], recipients: Sequence[str], *,
                 interval_s: float = 0.5, log: Path | None = None) -> None:
        if not recipients:
            raise SandboxError("a mail stream needs at least one recipient")
        self.sender, self.make_message, self.recipients = sender, make_message, list(recipients)
        self.interval_s, self.log = interval_s, log
        self.deliveries: list[Delivery] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> "MailStream":
        self._thread = threading.Thread(target=self._run, name="mail-stream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Delivery]:
        """Stop after the delivery under way; every delivery, in order."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.sender.timeout_s * self.sender.attempts + 10)
        with self._lock:
            return list(self.deliveries)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            started = time.monotonic()
            recipient = self.recipients[n % len(self.recipients)]
            delivery = self.sender.send(recipient, self.make_message(n, recipient))
            with self._lock:
                self.deliveries.append(delivery)
            if self.log is not None:
                self.log.parent.mkdir(parents=True, exist_ok=True)
                with self.log.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(asdict(delivery)) + "\n")
            n += 1
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def __enter__(self) -> "MailStream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def pec_stream_messages(signer, *, seed: str = "mail-stream", domain: str = SENDER_DOMAIN,
                        tag: str = "stream") -> Callable[[int, str], bytes]:
    """``make(n, recipient)``: the n-th PEC message of a stream (deterministic bytes but for the date: now)."""
    from cutover.sandbox.pec_messages import PecMessageFactory

    factory = PecMessageFactory(signer, random.Random(seed), domain=domain)
    lock = threading.Lock()

    def make(n: int, recipient: str) -> bytes:
        with lock:
            return factory.posta_certificata(sender=f"mittente{n % 7}@{domain}", recipients=[recipient],
                                             subject=f"{factory.subject()} ({tag} {n})",
                                             when=dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    return make


@dataclass
class FlowProof:
    """Every message of a stream looked up by Message-ID on one side: found once (intact), lost, duplicated."""

    provider: str
    sent: int
    exactly_once: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)
    altered: list[str] = field(default_factory=list)
    not_accepted: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exactly_once == self.sent and not (self.lost or self.duplicated or self.altered)

    def line(self) -> str:
        text = (f"mail flow: sent {self.sent}, on {self.provider} exactly once {self.exactly_once}, "
                f"lost {len(self.lost)}, duplicated {len(self.duplicated)}")
        if self.altered:
            text += f", altered {len(self.altered)}"
        if self.not_accepted:
            text += f" ({len(self.not_accepted)} never accepted by any MX)"
        return text


def _intact(stored: bytes, sha256: str, size: int) -> bool:
    """The stored message ends with exactly the bytes sent, after trace header fields only."""
    if len(stored) < size or hashlib.sha256(stored[len(stored) - size:]).hexdigest() != sha256:
        return False
    prefix = stored[:len(stored) - size]
    while prefix:
        match = _HEADER_LINE.match(prefix)
        if match is None:
            return False
        prefix = prefix[match.end():]
    return True


def find_copies(sandbox, side: str, recipients: Iterable[str], wanted: set[str]) -> dict[str, list[tuple[str, bytes]]]:
    """{Message-ID: [(folder, stored bytes)]} of the wanted messages in every folder of the recipients on a side."""
    found: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for address in sorted(set(recipients)):
        client = sandbox.admin_session(side, address)
        try:
            for flags, _delim, folder in client.list_folders():
                if b"\\Noselect" in flags or b"\\NoSelect" in flags:
                    continue
                client.select_folder(folder, readonly=True)
                uids = client.search("ALL")
                for start in range(0, len(uids), 200):
                    heads = client.fetch(uids[start:start + 200], ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
                    ours = []
                    for uid, data in heads.items():
                        m = _MESSAGE_ID.search(data.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]", b""))
                        if m and m.group(1).decode() in wanted:
                            ours.append((uid, m.group(1).decode()))
                    if ours:
                        bodies = client.fetch([u for u, _ in ours], ["BODY.PEEK[]"])
                        for uid, message_id in ours:
                            found[message_id].append((folder, bodies[uid][b"BODY[]"]))
        finally:
            client.logout()
    return found


def prove(sandbox, side: str, deliveries: Sequence[Delivery]) -> FlowProof:
    """Look every delivered message up on ``side`` (aruba/source or infocert/target) by Message-ID and SHA-256."""
    provider = "aruba" if side in ("source", "aruba") else "infocert"
    accepted = [d for d in deliveries if d.accepted]
    proof = FlowProof(provider=provider, sent=len(deliveries),
                      not_accepted=[d.message_id for d in deliveries if not d.accepted])
    copies = find_copies(sandbox, side, [d.recipient for d in accepted], {d.message_id for d in accepted})
    counts = Counter(d.message_id for d in accepted)
    for d in accepted:
        here = copies.get(d.message_id, [])
        if counts[d.message_id] > 1:
            proof.details.append(f"{d.message_id}: the stream sent this Message-ID {counts[d.message_id]} times")
        if not here:
            proof.lost.append(d.message_id)
            proof.details.append(f"LOST {d.message_id} to {d.recipient}: sent {d.sent_at}, accepted by {d.provider} "
                                 f"({d.mx}, queue id {d.queue_id}), not on {provider}")
        elif len(here) > 1:
            proof.duplicated[d.message_id] = len(here)
            proof.details.append(f"DUPLICATED {d.message_id} to {d.recipient}: {len(here)} copies on {provider} in "
                                 f"{', '.join(f for f, _ in here)}; sent {d.sent_at}, first accepted by {d.provider} "
                                 f"(queue id {d.queue_id})")
        if here and not all(_intact(raw, d.sha256, d.size) for _, raw in here):
            proof.altered.append(d.message_id)
            proof.details.append(f"ALTERED {d.message_id} to {d.recipient}: a copy on {provider} is not the bytes "
                                 f"sent (SHA-256 {d.sha256[:16]}...) after its trace fields")
        if len(here) == 1 and _intact(here[0][1], d.sha256, d.size):
            proof.exactly_once += 1
    return proof


def summarise(deliveries: Sequence[Delivery]) -> str:
    """How the stream was spread: messages accepted per provider, in order of first delivery."""
    per = Counter(d.provider or "nobody" for d in deliveries)
    return ", ".join(f"{n} accepted by {p}" for p, n in per.items())


__all__ = ["MxListener", "load_mx_listeners", "Delivery", "MxSender", "MailStream", "pec_stream_messages",
           "FlowProof", "find_copies", "prove", "summarise", "SENDER_DOMAIN"]
