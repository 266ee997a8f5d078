"""A provider that turns a session away with ``* BYE`` at the greeting (issue 10, part 2): throttled, never
"unreachable" and never "bad credentials"; the copy backs off and finishes, or reports the server's words.

Dovecot cannot be made to do this to a *new* connection: when its login processes are full it sends
``* BYE Connection queue full`` to the oldest client still logging in and keeps new ones waiting in the kernel's
queue, and ``mail_max_userip_connections`` answers the LOGIN (``NO [LIMIT]``, see test_throttling.py). So the test
puts a small TCP front (:class:`GreetingGate`, ~40 lines, below) before the sandbox's real target Dovecot: it
answers the first N connections itself, over TLS with that Dovecot's own certificate, with Dovecot's wording
``* BYE Connection queue full`` and closes them; every later connection is passed through to the real Dovecot
byte for byte (TLS end to end), so what the copy writes and verifies is on the real server.
"""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from checks.imap import canary_login
from checks.readiness import mailbox_readiness
from cutover.errors import Throttled
from cutover.imap import connect
from cutover.mailsync import copy_mailboxes

BYE = b"* BYE Connection queue full\r\n"


class GreetingGate:
    """127.0.0.1:``port`` in front of a real IMAPS server: the first ``refuse`` connections (None: all) get
    ``* BYE`` at the greeting over TLS with ``cert``/``key``; the others are piped to ``upstream_port``."""

    def __init__(self, upstream_port: int, cert: str, key: str, refuse: int | None) -> None:
        self.upstream_port, self.refuse, self.refused = upstream_port, refuse, 0
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, key)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
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
        with self._lock:
            turn_away = self.refuse is None or self.refused < self.refuse
            self.refused += turn_away
        if turn_away:
            try:
                with self._tls.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(BYE)
            except OSError:
                conn.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def gate(sandbox_env):
    """``open(refuse) -> (gate, plan)``: a GreetingGate before the target Dovecot, and the session plan with the
    target's IMAP port moved to it."""
    box, opened = sandbox_env.sandbox, []

    def open_(plan, refuse: int | None):
        dovecot = box.dovecots["infocert"]
        g = GreetingGate(plan.target.imap.port, str(dovecot.cert), str(dovecot.key), refuse)
        opened.append(g)
        target = plan.target.model_copy(update={"imap": plan.target.imap.model_copy(update={"port": g.port})})
        return g, plan.model_copy(update={"target": target})

    yield open_
    for g in opened:
        g.close()


def test_bye_at_greeting_is_throttled_for_login_readiness_canary_and_copy(sandbox_env, make_mailbox, plan_for,
                                                                         gate) -> None:
    mb = make_mailbox(messages=3)
    g, plan = gate(plan_for(throttle_backoff_s=0.05, throttle_retries=2), refuse=None)

    with pytest.raises(Throttled) as exc:
        connect(plan, "target", mb)
    assert "the server said: * BYE Connection queue full" in str(exc.value) and "2FA" not in str(exc.value)

    verdict = mailbox_readiness(plan, mb)
    assert (verdict.status, verdict.side) == ("throttled", "target"), verdict.row()
    result = canary_login(plan, mb)
    assert (result.ok, result.reason) == (False, "throttled") and "2FA" not in result.detail, result

    m = copy_mailboxes(plan, [mb]).mailboxes[0]
    assert (m.status, m.reason) == ("failed", "throttled"), m.as_row()
    assert "Connection queue full" in m.error and "after 3 attempts" in m.error and "2FA" not in m.error, m.error
    assert g.refused >= 5  # login, readiness, canary and the copy's three attempts all met the BYE


def test_the_copy_backs_off_through_bye_at_greeting_and_finishes(imap_view, sandbox_env, make_mailbox, plan_for,
                                                                 gate) -> None:
    mb = make_mailbox(messages=8)
    g, plan = gate(plan_for(throttle_backoff_s=0.2, throttle_retries=6), refuse=2)
    waits: list[tuple[float, str]] = []
    m = copy_mailboxes(plan, [mb], on_progress=lambda e: e.waiting_s and waits.append((e.waiting_s, e.detail))
                       ).mailboxes[0]
    assert m.verified and m.copied == 8, m.as_row()
    assert g.refused == 2 and waits and "Connection queue full" in waits[0][1], (g.refused, waits)
    # what was copied is on the real Dovecot behind the gate
    assert imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address)) == \
        imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address))
