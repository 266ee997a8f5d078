"""The sandbox's WAN: a userspace TCP proxy (asyncio) in front of both IMAP servers.

There is no netem qdisc on these machines, so latency, bandwidth and faults come from here. The proxy listens on
the plan's IMAP ports and forwards to the Dovecots, which then listen behind it (plan port + 1). Per connection
and per direction it adds half the round-trip time to every chunk (so a request and its answer pay ``rtt_ms``),
optionally paces each direction to ``bandwidth_kbps``, and optionally cuts the connection (both sides, RST) once
it has carried ``cut_after_bytes`` bytes (both directions counted; ``cut_side`` limits the count to what the
client sends, ``up``, or receives, ``down``).

The link's settings live in a JSON file the proxy reads again for every new connection (``WanLink.set``):
a test or the bench changes the RTT or arms a cut without restarting anything; open connections keep theirs.
Run as ``python -m cutover.sandbox._wan ROUTES.json`` by the sandbox (service ``wan``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BEHIND_OFFSET = 1  # a Dovecot behind the WAN listens on its plan port + 1


@dataclass(frozen=True)
class LinkSettings:
    """What the link does to every new connection."""

    rtt_ms: float = 0.0
    bandwidth_kbps: float | None = None  # per connection and direction, kilobits per second
    cut_after_bytes: int | None = None  # drop the connection once it carried this many bytes
    cut_side: str = "both"  # which bytes count toward the cut: both, up (client -> server), down
    cut_connections: int | None = None  # cut only the next N connections (None: every one)
    cut_routes: tuple[str, ...] | None = None  # cut only connections to these routes ("aruba", "infocert")


@dataclass(frozen=True)
class Route:
    name: str
    listen_port: int
    upstream_port: int


@dataclass
class WanConfig:
    routes: list[Route]
    link: LinkSettings = field(default_factory=LinkSettings)

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"routes": [asdict(r) for r in self.routes], "link": asdict(self.link)}, indent=1))
        os.replace(tmp, path)  # the proxy never reads half a file

    @classmethod
    def read(cls, path: Path) -> "WanConfig":
        data = json.loads(path.read_text())
        link = dict(data.get("link") or {})
        if link.get("cut_routes") is not None:
            link["cut_routes"] = tuple(link["cut_routes"])
        return cls([Route(**r) for r in data["routes"]], LinkSettings(**link))


class WanLink:
    """The sandbox's handle on its WAN: where its settings file is, and how to change the link."""

    def __init__(self, config_file: Path, routes: list[Route], link: LinkSettings) -> None:
        self.config_file = config_file
        self.routes = routes
        self.initial = link

    def write_config(self) -> None:
        """The settings file at start: the routes and the plan's link (a link changed by ``set`` is kept)."""
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        link = self.initial
        if self.config_file.exists():
            try:
                link = WanConfig.read(self.config_file).link
            except (OSError, ValueError, TypeError, KeyError):
                pass
        WanConfig(self.routes, link).write(self.config_file)

    @property
    def link(self) -> LinkSettings:
        try:
            return WanConfig.read(self.config_file).link
        except (OSError, ValueError, TypeError, KeyError):
            return self.initial

    def set(self, **changes) -> LinkSettings:
        """Change the link for new connections (e.g. ``rtt_ms=20``, ``cut_after_bytes=40_000_000``,
        ``cut_after_bytes=None`` to heal it); returns the settings now in force."""
        link = LinkSettings(**{**asdict(self.link), **changes})
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        WanConfig(self.routes, link).write(self.config_file)
        return link


    def forget(self) -> None:
        """Remove the settings file: the next sandbox start is direct again (unless the plan asks for a WAN)."""
        self.config_file.unlink(missing_ok=True)


def config_path(state_dir: Path) -> Path:
    return Path(state_dir) / "wan" / "link.json"


def _routes(plan) -> list[Route]:
    return [Route(name, p, p + BEHIND_OFFSET) for name, p in (("aruba", plan.source.imap.port),
                                                            ("infocert", plan.target.imap.port))]


def link_for(plan, state_dir: Path) -> WanLink | None:
    """The WAN of a sandbox: the plan's ``sandbox.wan``, or the one ``sandbox up --rtt-ms`` asked for (its
    settings file is there); None when there is none (the Dovecots listen on the plan's ports)."""
    path = config_path(state_dir)
    wanted = plan.sandbox.wan if plan.sandbox is not None else None
    if wanted is None and not path.exists():
        return None
    link = LinkSettings() if wanted is None else LinkSettings(
        rtt_ms=wanted.rtt_ms, bandwidth_kbps=wanted.bandwidth_kbps, cut_after_bytes=wanted.cut_after_bytes)
    return WanLink(path, _routes(plan), link)


def request(plan, state_dir: Path, link: LinkSettings) -> WanLink:
    """Ask for a WAN with ``link`` (``pec-cutover sandbox up --rtt-ms``): the next sandbox start puts the proxy in
    front of both IMAP servers, a running proxy takes it for its next connections."""
    wan = WanLink(config_path(state_dir), _routes(plan), link)
    wan.set(**asdict(link))
    return wan


# ----- the proxy process ------------------------------------------------------------------------------------
class _Settings:
    """The settings file, read again when it changed; also counts the connections a limited cut applies to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self.config = WanConfig.read(path)
        self._cuts_left: int | None = self.config.link.cut_connections

    def current(self, route: str) -> tuple[LinkSettings, bool]:
        """The link for a new connection to ``route`` and whether this connection is to be cut."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self.config = WanConfig.read(self.path)
                self._stamp = stamp
                self._cuts_left = self.config.link.cut_connections
        except (OSError, ValueError, TypeError, KeyError):
            pass  # keep the last good settings
        link = self.config.link
        cut = link.cut_after_bytes is not None and (link.cut_routes is None or route in link.cut_routes)
        if cut and self._cuts_left is not None:
            cut = self._cuts_left > 0
            self._cuts_left = max(0, self._cuts_left - 1)
        return link, cut


class _Budget:
    """Bytes a connection may still carry before it is cut (None: no cut), shared by both directions."""

    def __init__(self, limit: int | None, side: str) -> None:
        self.left = limit
        self.side = side

    def take(self, direction: str, n: int) -> int:
        """How many of ``n`` bytes may pass; 0 <= result <= n."""
        if self.left is None or self.side not in ("both", direction):
            return n
        allowed = min(n, self.left)
        self.left -= allowed
        return allowed

    @property
    def spent(self) -> bool:
        return self.left is not None and self.left <= 0


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str, link: LinkSettings,
                budget: _Budget, cut: asyncio.Event) -> None:
    """Carry one direction: each chunk is delivered half an RTT after it arrived, paced to the bandwidth."""
    one_way = link.rtt_ms / 2000.0
    rate = link.bandwidth_kbps * 1000 / 8 if link.bandwidth_kbps else None  # bytes/s
    queue: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def deliver() -> None:
        free_at = loop.time()  # when the "wire" is free again (bandwidth)
        while True:
            due, data = await queue.get()
            if data is None:
                return
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if rate:
                free_at = max(free_at, loop.time()) + len(data) / rate
                wait = free_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while not cut.is_set():
            data = await reader.read(65536)
            if not data:
                break
            allowed = budget.take(direction, len(data))
            if allowed:
                queue.put_nowait((loop.time() + one_way, data[:allowed]))
            if budget.spent:
                queue.put_nowait((loop.time() + one_way, None))
                await sender
                cut.set()  # the link drops: both sides see a reset
                return
        queue.put_nowait((loop.time() + one_way, None))
        await sender
        if not cut.is_set() and writer.can_write_eof():
            writer.write_eof()
    finally:
        if not sender.done():
            sender.cancel()


async def _connection(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, route: Route,
                      settings: _Settings) -> None:
    link, cut_this = settings.current(route.name)
    try:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", route.upstream_port)
    except OSError:
        client_w.transport.abort()
        return
    budget = _Budget(link.cut_after_bytes if cut_this else None, link.cut_side)
    cut = asyncio.Event()
    up = asyncio.create_task(_pump(client_r, server_w, "up", link, budget, cut))
    down = asyncio.create_task(_pump(server_r, client_w, "down", link, budget, cut))
    cutter = asyncio.create_task(cut.wait())
    try:
        pending = {up, down, cutter}
        while pending - {cutter}:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if cutter in done or any(t.exception() for t in done if t is not cutter and not t.cancelled()):
                break
    except Exception:
        pass
    finally:
        for task in (up, down, cutter):
            task.cancel()
        if cut.is_set():
            client_w.transport.abort()
            server_w.transport.abort()
        else:
            for w in (client_w, server_w):
                w.close()


async def serve(config_file: Path) -> None:
    settings = _Settings(config_file)
    servers = []
    for route in settings.config.routes:
        servers.append(await asyncio.start_server(
            lambda r, w, route=route: _connection(r, w, route, settings), "127.0.0.1", route.listen_port,
            reuse_address=True))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"wan proxy up at {time.strftime('%H:%M:%S')}: " + ", ".join(
        f"{r.name} 127.0.0.1:{r.listen_port} -> {r.upstream_port}" for r in settings.config.routes), flush=True)
    await stop.wait()
    for s in servers:
        s.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m cutover.sandbox._wan ROUTES.json", file=sys.stderr)
        return 2
    asyncio.run(serve(Path(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
