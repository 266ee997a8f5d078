"""SMTP submission logins. The sandbox has no SMTP listener, so these run against a small real SMTP server
(TLS with the sandbox CA's certificates, AUTH PLAIN) started by the test on 127.0.0.1, and a closed port."""

from __future__ import annotations

import base64
import socket
import socketserver
import ssl
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from checks.smtp import smtp_logins
from cutover.plan import Endpoint


class _Submission(socketserver.StreamRequestHandler):
    """Just enough ESMTP for a login: EHLO (AUTH PLAIN), AUTH PLAIN <token>, QUIT. Nothing is accepted for delivery."""

    def handle(self) -> None:
        self.wfile.write(b"220 sandbox submission ready\r\n")
        while line := self.rfile.readline():
            verb, _, arg = line.decode().strip().partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                self.wfile.write(b"250-sandbox\r\n250 AUTH PLAIN\r\n")
            elif verb == "AUTH":
                _mech, _, token = arg.partition(" ")
                _authz, user, password = base64.b64decode(token).decode().split("\0")
                ok = self.server.passwords.get(user) == password  # type: ignore[attr-defined]
                self.server.logins.append((user, ok))  # type: ignore[attr-defined]
                self.wfile.write(b"235 2.7.0 accepted\r\n" if ok else b"535 5.7.8 authentication failed\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"502 not here\r\n")


class _TlsServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, context: ssl.SSLContext, passwords: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), _Submission)
        self.context = context
        self.passwords = passwords
        self.logins: list[tuple[str, bool]] = []

    def get_request(self):
        conn, addr = super().get_request()
        conn.settimeout(5)
        try:
            return self.context.wrap_socket(conn, server_side=True), addr
        except (ssl.SSLError, OSError):
            conn.close()
            raise


@contextmanager
def submission_server(cert: Path, key: Path, passwords: dict[str, str]) -> Iterator[_TlsServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = _TlsServer(context, passwords)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def with_smtp(plan, port: int):
    return plan.model_copy(update={"target": plan.target.model_copy(
        update={"smtp": Endpoint(host="127.0.0.1", port=port, tls="implicit"), "timeout_s": 3})})


def passwords(sandbox_env) -> dict[str, str]:
    return {m.address: m.password("target").reveal() for m in sandbox_env.inventory.canaries}


def test_no_smtp_in_the_plan_means_no_results(sandbox_env) -> None:
    assert sandbox_env.plan.target.smtp is None
    assert smtp_logins(sandbox_env.plan, sandbox_env.inventory) == []


def test_auth_over_tls_passes_and_sends_nothing(sandbox_env) -> None:
    good = sandbox_env.sandbox.ca.server_pair("good")
    with submission_server(good.cert, good.key, passwords(sandbox_env)) as server:
        results = smtp_logins(with_smtp(sandbox_env.plan, server.server_address[1]), sandbox_env.inventory)
    assert results and all(r.ok for r in results), [r.as_row() for r in results]
    assert sorted(server.logins) == sorted((m.address, True) for m in sandbox_env.inventory.canaries)


def test_wrong_password_is_an_auth_failure_and_not_shown(sandbox_env, tools) -> None:
    good = sandbox_env.sandbox.ca.server_pair("good")
    canaries = sandbox_env.inventory.canaries
    table = passwords(sandbox_env) | {canaries[0].address: "something-else"}
    with submission_server(good.cert, good.key, table) as server:
        results = smtp_logins(with_smtp(sandbox_env.plan, server.server_address[1]), sandbox_env.inventory)
    assert (results[0].ok, results[0].reason) == (False, "auth-failure")
    assert all(r.ok for r in results[1:])
    text = repr(results)
    assert not any(secret in text for secret in tools.secret_values(sandbox_env.plan))


def test_wrong_host_certificate_is_a_tls_failure(sandbox_env) -> None:
    bad = sandbox_env.sandbox.ca.server_pair("wrong-host")
    with submission_server(bad.cert, bad.key, passwords(sandbox_env)) as server:
        results = smtp_logins(with_smtp(sandbox_env.plan, server.server_address[1]), sandbox_env.inventory)
    assert results and all(r.reason == "tls-failure" for r in results)
    assert server.logins == []  # no credentials went to an untrusted server


def test_closed_port_is_refused(sandbox_env) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        results = smtp_logins(with_smtp(sandbox_env.plan, port), sandbox_env.inventory)
    assert results and all(r.reason == "refused" for r in results)
