"""The sandbox's WAN proxy (cutover.sandbox._wan) as its own process in front of a real TCP echo server:
it adds the round-trip time it is told, cuts a connection after exactly N bytes, and takes new settings
for new connections without a restart. (Lower bounds on time only: the delay cannot make a run faster.)"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cutover.inventory import load_inventory
from cutover.sandbox._process import port_open, wait_until
from cutover.sandbox._wan import LinkSettings, Route, WanConfig, WanLink


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def echo_port():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        with conn, contextlib.suppress(ConnectionError):  # the proxy cutting the link resets this side too
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def proxy(tmp_path: Path, echo_port: int):
    listen = _free_port()
    link = WanLink(tmp_path / "wan" / "link.json", [Route("echo", listen, echo_port)], LinkSettings())
    link.write_config()
    proc = subprocess.Popen([sys.executable, "-m", "cutover.sandbox._wan", str(link.config_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert wait_until(lambda: port_open(listen), timeout=20), proc.communicate(timeout=5)[0]
    yield listen, link
    proc.terminate()
    proc.wait(timeout=10)


def _round_trip(port: int, payload: bytes = b"x") -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += s.recv(65536)
        return time.monotonic() - started


def test_the_proxy_adds_the_round_trip_time_it_is_told(proxy):
    port, link = proxy
    assert _round_trip(port, b"ping") >= 0  # direct enough: the route works
    link.set(rtt_ms=300)
    assert _round_trip(port, b"ping") >= 0.3  # one request and its answer: one RTT
    assert WanConfig.read(link.config_file).link.rtt_ms == 300


def test_the_proxy_cuts_a_connection_after_exactly_n_bytes(proxy):
    port, link = proxy
    link.set(cut_after_bytes=1000, cut_side="down")
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"a" * 5000)
        with pytest.raises((ConnectionError, EOFError)):
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    raise EOFError
                got += chunk
    assert got == b"a" * 1000
    # cut only the next connection: the one after it is whole again
    link.set(cut_after_bytes=10, cut_side="both", cut_connections=1)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"b" * 100)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionError:
            pass
        assert len(got) <= 10
    assert _round_trip(port, b"c" * 5000) >= 0
    link.set(cut_after_bytes=None)
    assert _round_trip(port, b"d" * 200_000) >= 0


def test_the_sandbox_puts_the_wan_in_front_of_both_imap_servers(sandbox_starter, tmp_path: Path):
    (tmp_path / "env").mkdir()
    env, plan, box = sandbox_starter(tmp_path / "env", 1, services=["aruba", "infocert", "wan"],
                                     edit_plan=lambda text: text.replace(
                                         "sandbox:\n", "sandbox:\n  wan: {rtt_ms: 250}\n"))
    try:
        assert box.wan is not None and "wan" in [s.name for s in box.status() if s.running]
        for side, name in (("source", "aruba"), ("target", "infocert")):
            assert box.dovecots[name].port == plan.provider(side).imap.port + 1  # Dovecot behind the proxy
        from cutover.imap import session

        mb = load_inventory(plan).mailboxes[0]
        box.ensure_users([mb])
        for side in ("source", "target"):
            with session(plan, side, mb) as client:  # through the plan's ports: the proxy
                started = time.monotonic()
                client.noop()
                assert time.monotonic() - started >= 0.25
        box.wan.set(rtt_ms=0)
        with session(plan, "source", mb) as client:
            client.noop()
    finally:
        box.down()
