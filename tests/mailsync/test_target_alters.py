"""A target that alters messages on APPEND (issue 11, point 5): the mailbox stops at the first mismatch with
"target alters messages" and the first differing bytes, and is never appended to again (no copy per run).

Dovecot stores what it is given, so the test puts a small IMAP-level front (:class:`AlteringFront`, below) before
the sandbox's real target Dovecot: TLS with that Dovecot's own certificate towards the client, TLS verified with
the sandbox CA towards the Dovecot, every byte passed through except APPEND literals, which get one header line
in front (as a provider adding a trace header would). What is read back and counted is on the real server.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading

import pytest

from cutover.mailsync import copy_mailboxes

HEADER = b"X-Altered-By: front\r\n"
_LITERAL = re.compile(rb"(~?)\{(\d+)(\+?)\}\r\n$")
_DATE = re.compile(rb'"\s?\d{1,2}-[A-Za-z]{3}-\d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}"')


class AlteringFront:
    """127.0.0.1:``port`` before a real IMAPS server at ``upstream``: APPEND literals get :data:`HEADER`."""

    def __init__(self, upstream: tuple[str, int], cert: str, key: str, ca: str, mode: str = "header") -> None:
        self.upstream, self.mode = upstream, mode  # "header": add HEADER; "meta": drop a keyword, change the date
        self._server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_tls.load_cert_chain(cert, key)
        self._client_tls = ssl.create_default_context(cafile=ca)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.altered = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            client = self._server_tls.wrap_socket(conn, server_side=True)
            upstream = self._client_tls.wrap_socket(socket.create_connection(("127.0.0.1", self.upstream[1])),
                                                    server_hostname=self.upstream[0])
        except OSError:
            conn.close()
            return
        threading.Thread(target=self._down, args=(upstream, client), daemon=True).start()
        self._up(client, upstream)

    def _up(self, client: ssl.SSLSocket, upstream: ssl.SSLSocket) -> None:
        """Client -> server, line by line; a literal of an APPEND command goes with the header in front."""
        reader = client.makefile("rb")
        in_append = False
        try:
            while line := reader.readline():
                if not in_append and re.match(rb"^\S+ APPEND ", line, re.I):
                    in_append = True
                if in_append and self.mode == "meta":
                    line = line.replace(b" $Protocollato", b"").replace(b"$Protocollato ", b"")
                    line = _DATE.sub(b'"01-Jan-2020 00:00:00 +0000"', line)
                literal = _LITERAL.search(line)
                if literal is None:
                    upstream.sendall(line)
                    in_append = False  # the command ends with this line
                    continue
                size = int(literal.group(2))
                extra = len(HEADER) if in_append and self.mode == "header" else 0
                upstream.sendall(line[:literal.start()] + literal.group(1) + b"{%d%s}\r\n" % (size + extra,
                                                                                              literal.group(3)))
                body = reader.read(size)
                if in_append and self.mode == "header":
                    body = HEADER + body
                    self.altered += 1
                upstream.sendall(body)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.close()
                except OSError:
                    pass

    @staticmethod
    def _down(upstream: ssl.SSLSocket, client: ssl.SSLSocket) -> None:
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        finally:
            try:
                client.close()
            except OSError:
                pass


@pytest.fixture
def altering_target(sandbox_env):
    """``open(plan) -> (front, plan)``: an AlteringFront before the target Dovecot and the plan pointed at it."""
    box, opened = sandbox_env.sandbox, []

    def open_(plan, mode: str = "header"):
        dovecot = box.dovecots["infocert"]
        front = AlteringFront((plan.target.imap.host, plan.target.imap.port), str(dovecot.cert), str(dovecot.key),
                              str(box.ca_file), mode)
        opened.append(front)
        target = plan.target.model_copy(update={"imap": plan.target.imap.model_copy(update={"port": front.port})})
        return front, plan.model_copy(update={"target": target})

    yield open_
    for front in opened:
        front.close()


def _on_target(sandbox_env, imap_view, address: str) -> int:
    return sum(sum(c.values()) for c in imap_view.digests(imap_view.snapshot(sandbox_env, "target", address)).values())


def test_a_target_that_adds_a_header_on_append_stops_the_mailbox_at_the_first_message(sandbox_env, make_mailbox,
                                                                                     plan_for, imap_view,
                                                                                     altering_target):
    mb = make_mailbox(messages=6)
    front, plan = altering_target(plan_for())
    first = copy_mailboxes(plan, [mb]).mailboxes[0]
    assert (first.status, first.reason) == ("failed", "target-alters"), first.as_row()
    assert "target alters messages" in first.error
    assert "first difference at byte 0 (line 1)" in first.error and "X-Altered-By: front" in first.error, first.error
    assert _on_target(sandbox_env, imap_view, mb.address) == 1, "stopped at the first message"

    second = copy_mailboxes(plan, [mb]).mailboxes[0]  # never appended to again
    assert (second.status, second.reason) == ("failed", "target-alters") and second.copied == 0
    assert "found by an earlier run" in second.error
    assert _on_target(sandbox_env, imap_view, mb.address) == 1 and front.altered == 1


def _flags_and_dates(box, side: str, address: str) -> dict[bytes, tuple[set, object]]:
    """{Subject line: (flags without \\Recent, INTERNALDATE)} of INBOX."""
    client = box.admin_session(side, address)
    client.normalise_times = False
    try:
        client.select_folder("INBOX", readonly=True)
        out = {}
        for d in client.fetch(client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]", "FLAGS",
                                                      "INTERNALDATE"]).values():
            subject = d[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip()
            out[subject] = ({f for f in d[b"FLAGS"] if f != b"\\Recent"}, d[b"INTERNALDATE"])
        return out
    finally:
        client.logout()


def test_flags_and_dates_of_our_copies_are_verified_and_flags_repaired_never_on_the_members_own(
        sandbox_env, make_mailbox, plan_for, imap_view, altering_target):
    import datetime as dt

    from cutover.ledger import Ledger
    from cutover.switch_mark import take_switch_mark

    box = sandbox_env.sandbox
    mb = make_mailbox()
    when = dt.datetime(2026, 1, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    box.deliver("source", mb.address, imap_view.message("protocollata", "x"), flags=("\\Seen", "$Protocollato"),
                internaldate=when)
    box.deliver("target", mb.address, imap_view.message("del membro", "the member's own"), flags=("$Mio",))
    # The target drops a keyword and replaces the date given on APPEND (the bytes are kept).
    front, plan = altering_target(plan_for(), mode="meta")
    first = copy_mailboxes(plan, [mb]).mailboxes[0]
    assert (first.status, first.reason) == ("failed", "dates-differ"), first.as_row()
    assert first.flags_repaired == 1 and first.dates_differ == 1
    assert "2026-01-10T08:00:00+00:00 on the source, 2020-01-01T00:00:00+00:00 on the copy" in first.error
    target = _flags_and_dates(box, "target", mb.address)
    assert target[b"Subject: protocollata"][0] == {b"\\Seen", b"$Protocollato"}, "repaired by STORE"
    assert target[b"Subject: del membro"][0] == {b"$Mio"}, "the member's own message untouched"
    check = copy_mailboxes(plan_for(), [mb], verify_only=True).mailboxes[0]  # trusts nothing, changes nothing
    assert (check.status, check.reason, check.dates_differ) == ("failed", "dates-differ", 1), check.as_row()

    # After the switch the member owns the flags of older copies: a \\Flagged there stays, and is not reported.
    ledger = Ledger(plan_for().ledger)
    try:
        assert not take_switch_mark(plan_for(), [mb], to="target", by="test", ledger=ledger).failed
    finally:
        ledger.close()
    client = box.admin_session("target", mb.address)
    try:
        client.select_folder("INBOX")
        uid = next(u for u, d in client.fetch(client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items()
                   if b"protocollata" in d[b"BODY[HEADER.FIELDS (SUBJECT)]"])
        client.add_flags([uid], [b"\\Flagged"])
    finally:
        client.logout()
    box.deliver("source", mb.address, imap_view.message("tardiva", "late"), internaldate=when)
    late = copy_mailboxes(plan_for(), [mb]).mailboxes[0]
    assert late.status == "verified" and late.flags_repaired == 0, late.as_row()
    target = _flags_and_dates(box, "target", mb.address)
    assert b"\\Flagged" in target[b"Subject: protocollata"][0]
    assert target[b"Subject: tardiva"][1] == when
