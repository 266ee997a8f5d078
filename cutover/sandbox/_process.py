"""Starting, recognising and stopping the sandbox's daemons.

Each daemon runs in its foreground mode, detached from us (own session), with its pid recorded in
``<state>/run/<service>.pid``. A recorded pid is only trusted (and only ever signalled) while
``/proc/<pid>/cmdline`` still names the same program and the same config file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cutover.errors import SandboxError


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    return Path(f"/proc/{pid}").exists() and not _is_zombie(pid)


def pid_matches(pid: int, program: str, config: Path) -> bool:
    """True if ``pid`` is alive and is ``program`` started with ``config`` (so it is ours to signal)."""
    argv = _cmdline(pid)
    if not argv or _is_zombie(pid):
        return False
    # Daemons rewrite their process title (nginx: "nginx: master process ..."), so match on the joined line.
    line = " ".join(argv)
    return program in line and str(config) in line


def children_of(pid: int) -> set[int]:
    """Pids whose parent is ``pid`` (e.g. nginx workers of a master)."""
    out = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.add(int(proc.name))
    return out


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def spawn(argv: list[str], *, log_file: Path, pid_file: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> int:
    """Start ``argv`` detached (new session, stdin closed, output to ``log_file``); record and return its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, env=env, cwd=cwd)
        except OSError as exc:
            raise SandboxError(f"cannot start {argv[0]}: {exc.strerror}; is its Debian package installed? "
                               "(scripts/install-system.sh)") from None
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{proc.pid}\n")
    # We never wait() on detached daemons; Popen's object is dropped and the child reaped by init once
    # our process exits. While we live, reap it if it dies so /proc does not show a zombie as alive.
    _ADOPTED[proc.pid] = proc
    return proc.pid


_ADOPTED: dict[int, subprocess.Popen[bytes]] = {}


def reap(pid: int) -> None:
    proc = _ADOPTED.get(pid)
    if proc is not None and proc.poll() is not None:
        _ADOPTED.pop(pid, None)


def signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _task_states(pid: int) -> list[str]:
    """The state letter of every thread of ``pid`` (empty if it does not exist)."""
    states = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            states.append((task / "stat").read_text().rsplit(")", 1)[-1].split()[0])
        except (OSError, IndexError):
            continue
    return states


def has_exited(pid: int) -> bool:
    """True once no thread of ``pid`` runs any more (gone, or a zombie): its files and sockets are closed.

    Not ``pid_matches``: while a process exits its cmdline is empty before its sockets are closed, and a
    multi-threaded daemon's main thread can be a zombie while other threads still hold its sockets.
    """
    reap(pid)
    return not any(state not in ("Z", "X") for state in _task_states(pid))


def session_members(sid: int) -> set[int]:
    """Live processes in session ``sid`` (a daemon we spawned and everything it forked: workers, login processes)."""
    out = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 3 and int(fields[3]) == sid and not has_exited(int(proc.name)):
            out.add(int(proc.name))
    return out


def port_in_use(port: int) -> bool:
    """True while any socket listens on TCP ``port`` or is bound to UDP ``port`` (any address).

    Read from /proc/net rather than by connecting: a connect can time out on a loaded machine and
    make a port that is still held look free.
    """
    for table, listen_only in (("tcp", True), ("tcp6", True), ("udp", False), ("udp6", False)):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port and (not listen_only or fields[3] == "0A"):
                return True
    return False


def stop_pid(pid: int, program: str, config: Path, *, timeout: float = 10.0) -> bool:
    """SIGTERM ``pid`` if it is still ours and wait until it and the processes it forked have exited.

    Whatever of its session still runs after ``timeout`` is SIGKILLed. Returns True if ``pid`` was ours.
    """
    if not pid_matches(pid, program, config):
        return False
    signal_pid(pid, signal.SIGTERM)
    # The daemon was spawned as a session leader: its workers/children share its session id.
    if wait_until(lambda: has_exited(pid) and not session_members(pid), timeout=timeout):
        return True
    for member in session_members(pid) | ({pid} if not has_exited(pid) else set()):
        signal_pid(member, signal.SIGKILL)
    wait_until(lambda: has_exited(pid) and not session_members(pid), timeout=5.0)
    return True


def wait_until(predicate, *, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log file, for error messages (logs hold no secrets)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def established_connections(port: int) -> int:
    """TCP connections to 127.0.0.1:``port`` established now, as the kernel sees them (the client ends, of every
    process on this machine): what a provider's connection cap is measured against in the tests and benches."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[2].split(":")[1], 16) == port:
            count += 1
    return count


@contextmanager
def peak_connections(port: int, every_s: float = 0.002) -> Iterator[list[int]]:
    """Sample :func:`established_connections` on a thread while the block runs; ``peak[0]`` is the highest count."""
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], established_connections(port))
            time.sleep(every_s)

    sampler = threading.Thread(target=sample, name=f"peak-connections-{port}", daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()
