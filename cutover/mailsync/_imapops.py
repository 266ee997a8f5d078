"""Thin IMAP operations the engine needs, on an authenticated imapclient session (plain data in and out)."""

from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Iterator

from imapclient import IMAPClient
from imapclient.datetime_util import datetime_to_INTERNALDATE
from imapclient.exceptions import IMAPClientError
from imapclient.response_parser import parse_fetch_response

from cutover.errors import MailboxError, MessageTooLarge, QuotaExceeded, Throttled
from cutover.limits import is_throttle_answer
from cutover.mailsync._folders import Folder, from_list
from cutover.mailsync._folders import personal_prefix as _folders_prefix

FETCH_ITEMS = ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]  # PEEK: reading never sets \Seen
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.I)
_FETCH_UID = re.compile(rb"UID (\d+)")


class MessageRefused(MailboxError):
    """The target permanently refused one message (too large, a keyword it will not take, malformed, not
    copyable byte-exact): recorded as skipped with the server's words; the rest of the mailbox goes on."""

    reason = "skipped"
_NOT_APPENDABLE = {b"\\recent"}  # \Recent is set by the server only


@dataclass(frozen=True)
class Fetched:
    """One source message as fetched: exact bytes, flags, INTERNALDATE, and its SHA-256."""

    uid: int
    body: bytes
    flags: tuple[bytes, ...]
    internaldate: datetime | None
    sha256: str
    binary: bool = False  # body holds a NUL byte: only BINARY (literal8) carries it
    exact: bool = True  # False: the server cannot give its original bytes (a NUL next to encoded parts)


def _exact_bodies(client: IMAPClient, bodies: dict[int, bytes]) -> dict[int, tuple[bytes, bool, bool]]:
    """{uid: (original bytes, has NUL, exact)} for messages whose ``BODY[]`` may hide a NUL byte.

    Dovecot (and others) answer ``BODY[]`` with every NUL replaced by 0x80; ``BINARY[]`` (RFC 3516) carries the
    NUL but also content-transfer-decodes base64/QP parts, so it is the original only when it differs from
    ``BODY[]`` exactly in NUL -> 0x80. Only messages with a 0x80 byte can hide a NUL, and only a server that
    announces BINARY is asked (without it a NUL cannot be seen from here: the bytes are what BODY[] gives)."""
    suspects = sorted(uid for uid, body in bodies.items() if b"\x80" in body)
    out: dict[int, tuple[bytes, bool, bool]] = {}
    if not suspects or not client.has_capability("BINARY"):
        return out
    typ, raw = client._imap.uid("FETCH", ",".join(map(str, suspects)), "(BINARY.PEEK[])")
    client._checkok("fetch", typ, raw)
    for item in raw:
        if not isinstance(item, tuple) or len(item) < 2:
            continue
        match = _FETCH_UID.search(item[0])
        if match is None or int(match.group(1)) not in bodies:
            continue
        uid, binary = int(match.group(1)), item[1]
        if b"\x00" not in binary:
            continue
        body = bodies[uid]
        if binary.replace(b"\x00", b"\x80") == body:
            out[uid] = (binary, True, True)
        else:
            out[uid] = (body, True, False)
    return out


def quiet(client: IMAPClient) -> IMAPClient:
    """Stop imaplib's debug tracing on ``client``.

    imapclient sets ``debug = 5`` on its imaplib object and routes the trace to a DEBUG logger; imaplib then
    builds ``%r`` of every untagged response before the logger drops it, i.e. a repr of every message body
    fetched (megabytes per batch, with the GIL held). Nothing is lost: the engine never logs IMAP traffic.
    """
    imap = getattr(client, "_imap", None)
    if imap is not None:
        imap.debug = 0
    return client


def logout(client: IMAPClient) -> None:
    """LOGOUT, or drop the connection when LOGOUT fails; never raises (the session is done with either way)."""
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            pass


@contextmanager
def corked(client: IMAPClient) -> Iterator[None]:
    """Commands sent inside go out together, in one write (one TLS record, one segment) when the block ends:
    for pipelined commands without literals only (a literal waits for the server's continuation)."""
    imap = client._imap
    if "send" in vars(imap):  # corked already (an outer block sends it all, in order)
        yield
        return
    parts: list[bytes] = []
    imap.send = parts.append  # the instance's own send, in front of the class's
    try:
        yield
    finally:
        del imap.send
    if parts:
        imap.send(b"".join(parts))


def hang_up(*clients: IMAPClient | None) -> None:
    """LOGOUT every session without waiting for the answers, then close it: no round trip at the end of a
    mailbox. The server acts on the LOGOUT as it reads it (everything before it was answered already: every
    APPEND and STORE completed); its ``BYE``/``OK`` tells nothing we need. Each session's place in its
    provider's cap is given back as it closes. Never raises."""
    for client in clients:
        if client is None:
            continue
        try:
            imap = client._imap
            imap.send(imap._new_tag() + b" LOGOUT\r\n")
        except Exception:
            pass
        try:
            client.shutdown()
        except Exception:
            pass


def list_folders(client: IMAPClient) -> list[Folder]:
    return from_list(client.list_folders())


def personal_prefix(client: IMAPClient) -> str:
    """The personal namespace prefix (``INBOX.`` on Courier-style servers), '' without NAMESPACE."""
    if not client.has_capability("NAMESPACE"):
        return ""
    return _folders_prefix(client.namespace())


def select(client: IMAPClient, folder: str) -> tuple[int, int]:
    """EXAMINE ``folder`` (read-only: nothing we do there changes flags); return (UIDVALIDITY, EXISTS)."""
    info = client.select_folder(folder, readonly=True)
    return int(info[b"UIDVALIDITY"]), int(info.get(b"EXISTS", 0))


@dataclass(frozen=True)
class Listing:
    """A folder as EXAMINE and ``FETCH 1:* RFC822.SIZE`` saw it: the state plus {uid: size}."""

    uidvalidity: int
    uidnext: int | None
    exists: int
    sizes: dict[int, int]

    @property
    def snapshot(self) -> list[int] | None:
        """(UIDVALIDITY, UIDNEXT, MESSAGES): equal later means the folder did not change (RFC 3501)."""
        return None if self.uidnext is None else [self.uidvalidity, self.uidnext, self.exists]


class Examining:
    """EXAMINE ``folder`` and each ``UID FETCH uid_set items`` of ``fetches``, all sent at once, the answers
    read by :meth:`read`: one round trip, not two or more (RFC 3501 5.5: the FETCH runs on the folder the EXAMINE
    opened; when the EXAMINE fails no folder is selected and the FETCH is refused too, never run elsewhere).
    Several may be sent on a session before the first is read (:func:`sizes_many`)."""

    def __init__(self, client: IMAPClient, folder: str, fetches: list[tuple[str, str]]) -> None:
        imap = client._imap
        self.client, self.folder = client, folder
        with corked(client):
            self._examine = imap._command("EXAMINE", client._normalise_folder(folder))
            state, imap.state = imap.state, "SELECTED"  # imaplib sends UID only in SELECTED: it will be, by then
            try:
                self._fetches = [imap._command("UID", "FETCH", uid_set, items) for uid_set, items in fetches]
            finally:
                imap.state = state

    def read(self) -> tuple[dict, list[dict[int, dict]]]:
        """(EXAMINE's answer as imapclient's ``select_folder`` gives it, [{uid: {item: value}}], every FETCH's items
        of a UID merged); every answer
        is read before a refusal is raised, so the session stays in step. A FETCH refused in an empty folder
        (``1:*`` where there is no message) is an empty answer."""
        client, imap = self.client, self.client._imap
        imap.untagged_responses = {}  # as imaplib's select(): what came before is not this folder's
        typ, said = _answer(imap, "EXAMINE", self._examine)
        info = client._process_select_response(imap.untagged_responses) if typ == "OK" else {}
        imap.state = "SELECTED" if typ == "OK" else "AUTH"
        imap.is_readonly = True  # as imaplib's select(readonly=True) leaves it: [READ-ONLY] is expected
        imap.untagged_responses.pop("FETCH", None)
        refused: str | None = None
        for tag in self._fetches:
            ftyp, fsaid = _answer(imap, "UID", tag)
            if ftyp != "OK" and refused is None:
                refused = f"fetch failed: {_words(fsaid)}"
        # A server may run pipelined FETCHes at once (Dovecot does): their answers interleave, so they are read
        # together and merged by UID, never told apart by which command they came before.
        raw = [d for d in imap.untagged_responses.pop("FETCH", []) if d is not None]
        if typ != "OK":
            raise IMAPClientError(f"select failed: {_words(said)}")
        if refused is not None and int(info.get(b"EXISTS", 0)):
            raise IMAPClientError(refused)
        return info, [parse_fetch_response(raw, client.normalise_times, True) if raw else {}]


def _answer(imap, name: str, tag: bytes) -> tuple[str, list]:
    """A pipelined command's tagged answer; BAD as an answer, not an exception (the session stays in step)."""
    try:
        return imap._command_complete(name, tag)
    except imap.abort:
        raise
    except imap.error as exc:
        return "BAD", [str(exc).encode()]


SIZES = [("1:*", "(RFC822.SIZE)")]


def listing_of(info: dict, datas: list[dict[int, dict]]) -> Listing:
    data = datas[0] if datas else {}
    uidvalidity, exists = int(info[b"UIDVALIDITY"]), int(info.get(b"EXISTS", 0))
    uidnext = int(info[b"UIDNEXT"]) if info.get(b"UIDNEXT") is not None else None
    if not exists:
        return Listing(uidvalidity, uidnext, 0, {})
    return Listing(uidvalidity, uidnext, exists,
                   {int(uid): int(v[b"RFC822.SIZE"]) for uid, v in data.items() if b"RFC822.SIZE" in v})


def sizes(client: IMAPClient, folder: str) -> Listing:
    """EXAMINE ``folder`` and read {uid: RFC822.SIZE} (metadata only, cheap even for a large folder), in one
    round trip."""
    return listing_of(*Examining(client, folder, SIZES).read())


def sizes_many(client: IMAPClient, folders: list[str]) -> dict[str, Listing]:
    """:func:`sizes` of every folder, all sent before the first answer is read: one round trip for all. Every
    answer is read before a refusal is raised."""
    return Listings(client, folders).read()[0]


class Listings:
    """:func:`sizes` of every one of ``folders`` and, with ``quota``, the INBOX quota root's free storage
    (GETQUOTAROOT, when the server offers QUOTA), all sent now; :meth:`read` reads them. Sent on both sessions
    before either is read, a mailbox's listings cost one round trip."""

    def __init__(self, client: IMAPClient, folders: list[str], *, quota: bool = False) -> None:
        self.client = client
        ask_quota = quota and client.has_capability("QUOTA")  # asked before corking: it may need an answer
        with corked(client):
            self._sent = [Examining(client, folder, SIZES) for folder in folders]
            self._quota = client._imap._command("GETQUOTAROOT", client._normalise_folder("INBOX")) if ask_quota else None

    def read(self) -> tuple[dict[str, Listing], int | None]:
        """({folder: listing}, free bytes on the quota or None); every answer is read before a refusal is raised."""
        out: dict[str, Listing] = {}
        failed: Exception | None = None
        for one in self._sent:
            try:
                out[one.folder] = listing_of(*one.read())
            except IMAPClientError as exc:
                failed = failed or exc
        free: int | None = None
        if self._quota is not None:
            imap = self.client._imap
            for name in ("QUOTA", "QUOTAROOT"):
                imap.untagged_responses.pop(name, None)
            typ, _ = _answer(imap, "GETQUOTAROOT", self._quota)
            quotas = imap.untagged_responses.pop("QUOTA", [])
            imap.untagged_responses.pop("QUOTAROOT", None)
            free = _storage_free(quotas) if typ == "OK" else None  # refused: the APPEND answer will tell
        if failed is not None:
            raise failed
        return out, free


_QUOTA_LIST = re.compile(rb"\(([^()]*)\)\s*$")


def _storage_free(quotas: list) -> int | None:
    """Free bytes from untagged QUOTA answers (``"root" (STORAGE usage limit ...)``, RFC 2087: units of 1024
    octets); the smallest over the roots, None without a STORAGE resource."""
    free: int | None = None
    for said in quotas:
        found = _QUOTA_LIST.search(said) if isinstance(said, bytes) else None
        if found is None:
            continue
        words = found.group(1).split()
        for i in range(0, len(words) - 2, 3):
            if words[i].upper() == b"STORAGE" and words[i + 1].isdigit() and words[i + 2].isdigit():
                left = max(0, (int(words[i + 2]) - int(words[i + 1])) * 1024)
                free = left if free is None else min(free, left)
    return free


def uid_sets(uids: list[int], per_set: int = 1000) -> list[str]:
    """``uids`` as IMAP UID sets of at most ``per_set`` UIDs each, runs written ``a:b``."""
    out: list[str] = []
    ordered = sorted(set(uids))
    for i in range(0, len(ordered), per_set):
        part, runs = ordered[i:i + per_set], []
        first = last = part[0]
        for uid in part[1:]:
            if uid == last + 1:
                last = uid
                continue
            runs.append(f"{first}:{last}" if last > first else str(first))
            first = last = uid
        runs.append(f"{first}:{last}" if last > first else str(first))
        out.append(",".join(runs))
    return out


def examine_flags_and_dates(client: IMAPClient, folder: str, uids: list[int]) -> Examining:
    """EXAMINE ``folder`` and FETCH FLAGS and INTERNALDATE of ``uids``, sent now; :func:`flags_and_dates_of`
    reads the answer (send on both sessions first: one round trip for both)."""
    return Examining(client, folder, flag_fetches(uids))


def flag_fetches(uids: list[int]) -> list[tuple[str, str]]:
    """The FETCHes of FLAGS and INTERNALDATE of ``uids`` (for :class:`Examining`)."""
    return [(uid_set, "(FLAGS INTERNALDATE)") for uid_set in uid_sets(uids)] if uids else []


def flags_and_dates_of(sent: Examining, uids: list[int]) -> tuple[int, dict[int, tuple[frozenset, object]]]:
    """(UIDVALIDITY, {uid: (flags without \\Recent, INTERNALDATE)}) from :func:`examine_flags_and_dates`."""
    info, datas = sent.read()
    return int(info[b"UIDVALIDITY"]), flags_and_dates_in(datas, uids)


def flags_and_dates_in(datas: list[dict[int, dict]], uids) -> dict[int, tuple[frozenset, object]]:
    """{uid: (flags without \\Recent, INTERNALDATE)} of ``uids`` found in FETCH answers (:func:`flag_fetches`)."""
    wanted = set(uids)
    return {int(uid): _flags_and_date(item) for data in datas for uid, item in data.items()
            if int(uid) in wanted and b"FLAGS" in item}


def _flags_and_date(item: dict) -> tuple[frozenset, object]:
    flags = frozenset(f if isinstance(f, bytes) else str(f).encode() for f in item.get(b"FLAGS", ()))
    return frozenset(f for f in flags if f.lower() not in _NOT_APPENDABLE), item.get(b"INTERNALDATE")


def _words(data: list) -> str:
    return b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")


def plan_batches(uids: Iterable[int], size_of: dict[int, int], max_messages: int, max_bytes: int) -> list[list[int]]:
    """Group UIDs into batches of at most ``max_messages`` and ``max_bytes`` (a larger message goes alone)."""
    batches: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for uid in uids:
        size = size_of.get(uid, 0)
        if current and (len(current) >= max_messages or current_bytes + size > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(uid)
        current_bytes += size
    if current:
        batches.append(current)
    return batches


def fetch_messages(client: IMAPClient, uids: list[int]) -> list[Fetched]:
    """Fetch exact bytes, flags and INTERNALDATE of ``uids`` in the selected folder (vanished UIDs are absent)."""
    return _fetched(client, client.fetch(uids, FETCH_ITEMS), uids)


def examine_and_fetch(client: IMAPClient, folder: str, uids: list[int]) -> tuple[int, list[Fetched]]:
    """EXAMINE ``folder`` and :func:`fetch_messages` of ``uids`` there, in one round trip: (UIDVALIDITY, messages).
    The caller checks the UIDVALIDITY before using anything fetched."""
    info, datas = Examining(client, folder, [(s, "(" + " ".join(FETCH_ITEMS) + ")") for s in uid_sets(uids)]).read()
    return int(info[b"UIDVALIDITY"]), _fetched(client, datas[0], uids)


def examine_and_digest(client: IMAPClient, folder: str, uid: int) -> tuple[int, str | None]:
    """EXAMINE ``folder`` and the SHA-256 of message ``uid`` there (None: not there), in one round trip."""
    info, datas = Examining(client, folder, [(str(uid), "(BODY.PEEK[])")]).read()
    item = datas[0].get(uid)
    if item is None or b"BODY[]" not in item:
        return int(info[b"UIDVALIDITY"]), None
    exact = _exact_bodies(client, {uid: item[b"BODY[]"]})
    return int(info[b"UIDVALIDITY"]), hashlib.sha256(exact.get(uid, (item[b"BODY[]"],))[0]).hexdigest()


def digests_in(client: IMAPClient, data: dict, uids: list[int]) -> dict[int, str]:
    """{uid: SHA-256} of the ``BODY[]`` of ``uids`` in a FETCH answer (the original bytes, see
    :func:`_exact_bodies`; the folder they are in must be the one selected)."""
    bodies = {u: data[u][b"BODY[]"] for u in uids if u in data and b"BODY[]" in data[u]}
    exact = _exact_bodies(client, bodies)
    return {u: hashlib.sha256(exact.get(u, (body,))[0]).hexdigest() for u, body in bodies.items()}


def _fetched(client: IMAPClient, data: dict, uids: list[int]) -> list[Fetched]:
    exact = _exact_bodies(client, {u: v[b"BODY[]"] for u, v in data.items() if b"BODY[]" in v})
    out = []
    for uid in uids:
        item = data.get(uid)
        if item is None or b"BODY[]" not in item:
            continue
        body, binary, is_exact = exact.get(uid, (item[b"BODY[]"], False, True))
        out.append(Fetched(uid, body, tuple(item.get(b"FLAGS", ())), item.get(b"INTERNALDATE"),
                           hashlib.sha256(body).hexdigest(), binary, is_exact))
    return out


def flags_and_dates(client: IMAPClient, uids: list[int], chunk: int = 1000) -> dict[int, tuple[frozenset, object]]:
    """{uid: (flags without \\Recent, INTERNALDATE)} of ``uids`` in the selected folder (metadata only)."""
    out: dict[int, tuple[frozenset, object]] = {}
    for i in range(0, len(uids), chunk):
        for uid, item in client.fetch(uids[i:i + chunk], ["FLAGS", "INTERNALDATE"]).items():
            out[uid] = _flags_and_date(item)
    return out


def digests(client: IMAPClient, uids: list[int], size_of: dict[int, int], max_messages: int,
            max_bytes: int) -> Iterator[tuple[int, str]]:
    """(uid, SHA-256) of messages in the selected folder, fetched batch by batch (memory bounded)."""
    for batch in plan_batches(uids, size_of, max_messages, max_bytes):
        data = client.fetch(batch, ["BODY.PEEK[]"])
        exact = _exact_bodies(client, {u: v[b"BODY[]"] for u, v in data.items() if b"BODY[]" in v})
        for uid in batch:
            item = data.get(uid)
            if item is not None and b"BODY[]" in item:
                yield uid, hashlib.sha256(exact.get(uid, (item[b"BODY[]"],))[0]).hexdigest()
        del data, exact


def _append_head(msg: Fetched) -> bytes:
    flags = [f if isinstance(f, bytes) else str(f).encode() for f in msg.flags]
    flags = [f for f in flags if f.lower() not in _NOT_APPENDABLE]
    head = b"(" + b" ".join(flags) + b")"
    if msg.internaldate is not None:
        head += b' "' + datetime_to_INTERNALDATE(msg.internaldate).encode("ascii") + b'"'
    return head


def _send_append(client: IMAPClient, folder: str, group: list[Fetched]) -> tuple[str, list[bytes]]:
    """One APPEND (MULTIAPPEND when ``group`` has several messages) on the raw connection; (typ, data).

    Sent by hand because neither imaplib nor imapclient sends ``literal8`` (``~{n}``, RFC 3516) and imapclient
    turns a synchronizing literal the server refuses (a tagged NO instead of "+", as Dovecot answers a message
    over its size limit) into a lost connection. Here that refusal is the command's answer: the session stays."""
    imap = client._imap
    plus = client.has_capability("LITERAL+")
    tag = imap._new_tag()
    name = client._normalise_folder(folder)
    line = tag + b" APPEND " + (name if isinstance(name, bytes) else name.encode())
    for m in group:
        size = str(len(m.body)).encode()
        line += b" " + _append_head(m) + b" " + (b"~" if m.binary else b"") + b"{" + size + (b"+" if plus else b"") + b"}"
        imap.send(line + b"\r\n")
        if not plus:
            while imap._get_response():  # untagged answers until "+" (None) or the tagged refusal
                if imap.tagged_commands.get(tag):
                    return _complete(imap, tag)
        imap.send(m.body)
        line = b""
    imap.send(b"\r\n")
    return _complete(imap, tag)


def _complete(imap, tag: bytes) -> tuple[str, list[bytes]]:
    try:
        return imap._command_complete("APPEND", tag)
    except imap.abort:
        raise
    except imap.error as exc:  # imaplib raises on BAD: for an APPEND that is the server refusing the message
        return "BAD", [str(exc).encode("utf-8", "replace")]


def append_messages(client: IMAPClient, folder: str, messages: list[Fetched], *, multiappend: bool,
                    address: str, server: str,
                    appended: list[tuple[int | None, int | None]] | None = None) -> tuple[int | None, list[int] | None]:
    """APPEND ``messages`` to ``folder`` with flags and INTERNALDATE, byte-exact (``literal8`` for a message
    with a NUL byte: the caller sends such a message only to a server that announces BINARY).

    One MULTIAPPEND command (RFC 3502, all or nothing) when ``multiappend``, else one APPEND per message.
    Returns (target UIDVALIDITY, target UIDs in order) from APPENDUID, or (None, None) without UIDPLUS.
    A refusal raises :class:`MessageRefused` (or MessageTooLarge/QuotaExceeded/Throttled, see
    :func:`classify_append_failure`).

    ``appended`` (when given) receives (UIDVALIDITY, UID) -- (None, None) without APPENDUID -- for each
    message as soon as the target has confirmed it, in order: when a later APPEND fails (one APPEND per
    message), the caller knows the first ``len(appended)`` messages are on the target and must not go again.
    """
    groups = [messages] if multiappend else [[m] for m in messages]
    uidvalidity: int | None = None
    uids: list[int] | None = []
    for group in groups:
        typ, data = _send_append(client, folder, group)
        text = b" ".join(d for d in data if isinstance(d, bytes))
        if typ != "OK":
            raise classify_append_failure(text, address=address, server=server, folder=folder,
                                          largest=max(len(m.body) for m in group), bad=typ == "BAD")
        match = _APPENDUID.search(text)
        if match is None:
            if appended is not None:
                appended += [(None, None)] * len(group)
            uids = None
            continue
        got = expand_uid_set(match.group(2).decode())
        if len(got) != len(group):
            if appended is not None:
                appended += [(None, None)] * len(group)  # on the target, UIDs unknown: stay pending
            raise MailboxError(address, f"APPENDUID for {folder!r} names {len(got)} messages, {len(group)} were sent",
                               server=server)
        if appended is not None:
            appended += [(int(match.group(1)), u) for u in got]
        if uids is None:
            continue
        uidvalidity = int(match.group(1))
        uids += got
    return uidvalidity, uids


def expand_uid_set(text: str) -> list[int]:
    """'5:7,9' -> [5, 6, 7, 9] (order kept: APPENDUID lists UIDs in the order the messages were sent)."""
    out: list[int] = []
    for part in text.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            step = 1 if b >= a else -1
            out += list(range(a, b + step, step))
        elif part:
            out.append(int(part))
    return out


# A refusal means "this message is too large" only with the TOOBIG response code (RFC 4469) or words about the
# size of a message; [LIMIT] alone (RFC 5530) is any limit (a rate, a number of commands or messages) and is
# not one: it must not send a batch down the one-by-one path as if a message could never go.
_TOO_LARGE = re.compile(
    r"\[TOOBIG\]"
    r"|\btoo\s+(?:large|big)\b"
    r"|\b(?:message|mail|e-?mail|literal)\s+(?:size\b|(?:is\s+)?(?:too\s+)?(?:larger|bigger|large|big)\b)"
    r"|\b(?:maximum|max)\.?\s+(?:message\s+|mail\s+|literal\s+)?size\b"
    r"|\bsize\s+(?:limit|exceed)",
    re.I)


def classify_append_failure(text: bytes, *, address: str, server: str, folder: str, largest: int,
                            bad: bool = False) -> MailboxError:
    """What a refused APPEND means: the quota is full (stops the mailbox), the server says "slow down" (retried
    later), or this message cannot go (too large, a keyword it will not take, malformed: skipped)."""
    said = text.decode("utf-8", "replace")[:200]
    low = said.lower()
    if "overquota" in low or "quota" in low:
        return QuotaExceeded(address, f"target refused APPEND to {folder!r}: {said}", server=server)
    if _TOO_LARGE.search(said):
        return MessageTooLarge(address, f"target refused a {largest} byte message in {folder!r}: {said}", server=server)
    # [LIMIT] alone is any limit (RFC 5530); only words of pace or connections make it "slow down"
    if not bad and is_throttle_answer(re.sub(r"\[LIMIT\]", "", said, flags=re.I)):
        return Throttled(address, f"target refused APPEND to {folder!r}: {said}", server=server)
    if _NOT_THE_MESSAGE.search(said):
        return MailboxError(address, f"target refused APPEND to {folder!r}: {said}", server=server)
    return MessageRefused(address, f"target refused a message in {folder!r}: {said}", server=server)


# Refusals about the folder or the server, not about the message: every message would get the same answer.
_NOT_THE_MESSAGE = re.compile(r"\[(?:TRYCREATE|SERVERBUG|NONEXISTENT|NOPERM|UNAVAILABLE|INUSE|EXPUNGEISSUED)\]", re.I)


def quota_free(client: IMAPClient) -> int | None:
    """Free storage in bytes on the INBOX quota root, or None when the server offers no QUOTA."""
    return Listings(client, [], quota=True).read()[1]


def create_folders(client: IMAPClient, names: list[str]) -> dict[str, Listing]:
    """CREATE every one of ``names`` and list each new folder (EXAMINE, FETCH), all sent at once: one round
    trip for all. Returns the listing of each folder the server created; a refusal is left to the caller
    (:func:`create_folder` asks again, one by one, and says why)."""
    imap = client._imap
    with corked(client):
        sent = [(name, imap._command("CREATE", client._normalise_folder(name))) for name in names]
        listing = [Examining(client, name, SIZES) for name in names]
    made = {name for name, tag in sent if _answer(imap, "CREATE", tag)[0] == "OK"}
    out: dict[str, Listing] = {}
    for one in listing:
        try:
            found = listing_of(*one.read())
        except IMAPClientError:
            continue
        if one.folder in made:
            out[one.folder] = found
    return out


def create_folder(client: IMAPClient, name: str, *, known_absent: bool = False) -> None:
    """CREATE ``name`` unless it exists (parents are created by the server as needed).

    ``known_absent``: the caller's LIST did not show it, so CREATE is sent at once; a refusal is still
    checked against the folder's existence (a parent created implicitly since, or a race)."""
    if not known_absent and client.folder_exists(name):
        return
    for attempt in (1, 2):
        try:
            client.create_folder(name)
            return
        except Exception:  # imapclient's generic error: ALREADYEXISTS (a race) or a transient server error
            if client.folder_exists(name):
                return
            if attempt == 2:
                raise
