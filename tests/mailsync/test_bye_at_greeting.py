"""A provider that turns a session away at the greeting or at the LOGIN (issue 10, part 2): throttled, never
"unreachable" and never "bad credentials" (no 2FA hint); the copy backs off and finishes, or reports the server's words.

Dovecot cannot be made to do this to a *new* connection: when its login processes are full it sends
``* BYE Connection queue full`` to the oldest client still logging in and keeps new ones waiting in the kernel's
queue, and ``mail_max_userip_connections`` answers the LOGIN (``NO [LIMIT]``, see test_throttling.py); it never
answers ``* BYE`` to a LOGIN, ``NO [UNAVAILABLE]``, ``NO [INUSE]`` or ``NO [THROTTLED]`` for a limit. So the tests
put a small IMAP front (:class:`ImapFront`, below) before the sandbox's real target Dovecot. It speaks TLS with that
Dovecot's own certificate and relays each session to the real Dovecot over a verified TLS session of its own;
``at="greeting"``: the first N connections get the answer (``* BYE ...``) instead of the greeting and are closed;
``at="login"``: the first N LOGIN/AUTHENTICATE commands (across connections) get the answer instead of reaching
Dovecot (``* BYE ...`` then close, or ``<tag> NO [...] ...`` with the session left open), every later byte of that
session is relayed as it is. What the copy writes and verifies is on the real server behind the front.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading

import pytest

from checks.imap import canary_login
from checks.readiness import mailbox_readiness
from cutover.errors import Throttled
from cutover.imap import connect
from cutover.mailsync import copy_mailboxes

BYE = "* BYE Connection queue full"


class ImapFront:
    """127.0.0.1:``port`` in front of a real IMAPS server (``upstream_host``:``upstream_port``, verified with
    ``upstream_ca``): the first ``refuse`` connections (``at="greeting"``) or LOGIN/AUTHENTICATE commands
    (``at="login"``) get ``answer`` (None: all of them); ``refused`` counts them. TLS with ``cert``/``key``."""

    def __init__(self, upstream_host: str, upstream_port: int, upstream_ca: str | None, cert: str, key: str, *,
                 refuse: int | None, answer: str = BYE, at: str = "greeting", plain_greeting: bool = False) -> None:
        assert at in ("greeting", "login")
        self.upstream_host, self.upstream_port, self.at = upstream_host, upstream_port, at
        # plain_greeting: the greeting relayed without its [CAPABILITY ...] (as Gmail's or Exchange's: "* OK ready")
        self.plain_greeting = plain_greeting
        self.commands: list[bytes] = []  # the name of every command clients sent (relayed ones), in order
        self.refuse, self.refused, self.answer = refuse, 0, answer.encode()
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, key)
        self._up_tls = ssl.create_default_context(cafile=upstream_ca)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._tls), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def stop_refusing(self) -> None:
        with self._lock:
            self.refuse = self.refused

    def _take(self) -> bool:
        with self._lock:
            turn_away = self.refuse is None or self.refused < self.refuse
            self.refused += turn_away
        return turn_away

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.at == "greeting" and self._take():
                writer.write(self.answer + b"\r\n")
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port,
                                                                 ssl=self._up_tls)
            if self.plain_greeting:
                greeting = await up_reader.readline()
                writer.write(re.sub(rb"\[CAPABILITY [^]]*\] ?", b"", greeting))
            down = asyncio.ensure_future(self._pipe(up_reader, writer))
            try:
                await self._commands(reader, up_writer, writer)
            finally:
                down.cancel()
                up_writer.close()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _commands(self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter,
                        client: asyncio.StreamWriter) -> None:
        """The client's side: watched line by line until a LOGIN/AUTHENTICATE goes through, then relayed as is."""
        watching = self.at == "login"
        prefix = None  # imaplib's tags: 4 letters (the session's own) then a number
        while True:
            data = await (reader.readline() if watching else reader.read(65536))
            if not data:
                return
            for line in data.split(b"\r\n"):
                found = re.match(rb"([A-Z]{4})\d+ (?:UID )?([A-Za-z]+)", line)
                if found and prefix in (None, found.group(1)):
                    prefix = found.group(1)
                    self.commands.append(found.group(2).upper())
            if watching:
                tag, _, rest = data.partition(b" ")
                if rest.split(b" ", 1)[0].strip().upper() in (b"LOGIN", b"AUTHENTICATE"):
                    if self._take():
                        bye = self.answer.startswith(b"* BYE")
                        client.write((b"" if bye else tag + b" ") + self.answer + b"\r\n")
                        await client.drain()
                        if bye:
                            return
                        continue
                    watching = False
            upstream.write(data)
            await upstream.drain()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()


@pytest.fixture
def gate(sandbox_env):
    """``open(plan, refuse, answer=BYE, at="greeting") -> (front, plan)``: an ImapFront before the target
    Dovecot, and the plan with the target's IMAP port moved to it."""
    box, opened = sandbox_env.sandbox, []

    def open_(plan, refuse: int | None, answer: str = BYE, at: str = "greeting", plain_greeting: bool = False):
        dovecot = box.dovecots["infocert"]
        imap = plan.target.imap
        g = ImapFront(imap.host, imap.port, str(plan.target.ca_bundle) if plan.target.ca_bundle else None,
                      str(dovecot.cert), str(dovecot.key), refuse=refuse, answer=answer, at=at,
                      plain_greeting=plain_greeting)
        opened.append(g)
        target = plan.target.model_copy(update={"imap": imap.model_copy(update={"port": g.port})})
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


# What providers answer a LOGIN when they are full or want a client to slow down (RFC 5530 codes, and plain
# words: "too many ... connections"); none of them is the member's password.
LOGIN_REFUSALS = [
    "* BYE Too many open connections",
    "* BYE Server busy",
    "NO [UNAVAILABLE] Service temporarily unavailable, try later",
    "NO [INUSE] Mailbox in use by another session",
    "NO [THROTTLED] Request is throttled",
    "NO Too many concurrent connections for this account",
]


@pytest.mark.parametrize("answer", LOGIN_REFUSALS)
@pytest.mark.parametrize("auth", ["login", "master"])
def test_a_refused_login_is_throttled_then_the_copy_backs_off_and_finishes(imap_view, sandbox_env, make_mailbox,
                                                                          plan_for, gate, answer, auth) -> None:
    """``login``: the member's LOGIN; ``master``: SASL AUTHENTICATE PLAIN as the master user (issue 10, part 1)."""
    mb = make_mailbox(messages=8)
    words = answer.removeprefix("* BYE ").removeprefix("NO ")
    g, plan = gate(plan_for(throttle_backoff_s=0.05, throttle_retries=2,
                            master_side="target" if auth == "master" else None), refuse=None, answer=answer,
                   at="login")

    with pytest.raises(Throttled) as exc:
        connect(plan, "target", mb)
    assert words in str(exc.value) and "2FA" not in str(exc.value), exc.value
    verdict = mailbox_readiness(plan, mb)
    assert (verdict.status, verdict.side) == ("throttled", "target"), verdict.row()
    assert "2FA" not in verdict.action and "password" not in verdict.action, verdict.action
    result = canary_login(plan, mb)
    assert (result.ok, result.reason) == (False, "throttled") and "2FA" not in result.detail, result
    m = copy_mailboxes(plan, [mb]).mailboxes[0]
    assert (m.status, m.reason) == ("failed", "throttled"), m.as_row()
    assert words in m.error and "after 3 attempts" in m.error and "2FA" not in m.error, m.error
    assert g.refused >= 6  # login, readiness, canary and the copy's three attempts all met the refusal
    assert not any(imap_view.snapshot(sandbox_env, "target", mb.address).values())  # nothing appended

    # The provider refuses two more logins, then lets the sessions in: the copy waits, retries, copies and verifies.
    g.refuse = g.refused + 2
    waits: list[tuple[float, str]] = []
    m = copy_mailboxes(plan_for(throttle_backoff_s=0.2, throttle_retries=6,
                                master_side="target" if auth == "master" else None).model_copy(
        update={"target": plan.target}), [mb],
        on_progress=lambda e: e.waiting_s and waits.append((e.waiting_s, e.detail))).mailboxes[0]
    assert m.verified and m.copied == 8, m.as_row()
    assert g.refused == g.refuse and waits and words in waits[0][1], (g.refused, waits)
    assert mailbox_readiness(plan, mb).status == "ready"
    assert canary_login(plan, mb).ok
    # On the real Dovecot behind the front: every message once (nothing lost, nothing doubled).
    target = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))
    source = imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address))
    held = [n for folder in target.values() for n in folder.values()]
    assert target == source and sum(held) == 8 and set(held) == {1}, target


@pytest.mark.parametrize("plain_greeting", [False, True])
def test_capabilities_from_the_greeting_or_asked_and_an_unchanged_delta_asks_little(
        imap_view, sandbox_env, make_mailbox, plan_for, gate, plain_greeting) -> None:
    """The copy takes the capabilities a greeting announces (Dovecot's ``* OK [CAPABILITY ...]``) instead of asking
    CAPABILITY, and asks when the greeting has none (``* OK ready``, as Gmail or Exchange greet): the copy is the
    same either way. A delta of a mailbox nothing changed in sends, after the LOGIN, only NAMESPACE, LIST and one
    STATUS per folder (pipelined: one round trip), then LOGOUT: no EXAMINE, no FETCH, nothing appended."""
    mb = make_mailbox(messages=6)
    g, plan = gate(plan_for(), refuse=0, plain_greeting=plain_greeting)
    first = copy_mailboxes(plan, [mb]).mailboxes[0]
    assert first.verified and first.copied == 6, first.as_row()
    assert imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address)) == \
        imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address))
    asked = g.commands.count(b"CAPABILITY")
    assert (asked > 0) == plain_greeting, (plain_greeting, g.commands)

    g.commands.clear()
    again = copy_mailboxes(plan, [mb]).mailboxes[0]
    assert again.verified and again.copied == 0, again.as_row()
    sent = [c for c in g.commands if c != b"CAPABILITY"]
    assert sent[:3] == [b"LOGIN", b"NAMESPACE", b"LIST"] and sent[-1] == b"LOGOUT", g.commands
    assert set(sent[3:-1]) == {b"STATUS"} and len(sent[3:-1]) == first.folders, g.commands
