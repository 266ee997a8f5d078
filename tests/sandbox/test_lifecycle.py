"""up is idempotent, status tells the truth, down leaves none of our processes behind."""

from __future__ import annotations

from pathlib import Path

from cutover.sandbox import SERVICE_NAMES
from cutover.sandbox._process import port_open


def _our_processes(state_dir: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state_dir) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_up_twice_status_and_down(tmp_path_factory, sandbox_starter) -> None:
    env, plan, box = sandbox_starter(tmp_path_factory.mktemp("lifecycle"), 2)
    try:
        first = {s.name: s.pid for s in box.status()}
        assert set(first) == set(SERVICE_NAMES) and all(first.values())
        again = box.up()  # already running and healthy: left alone
        assert {s.name: s.pid for s in again} == first
        assert all(s.running for s in again)

        restarted = box.restart_service("webmail")
        assert restarted.running and restarted.pid != first["webmail"]
        stopped = box.stop_service("resolver")
        assert not stopped.running and not port_open(stopped.port)
        assert box.start_service("resolver").running
    finally:
        box.down()
    statuses = box.status()
    assert not any(s.running or s.pid for s in statuses)
    assert not any(port_open(s.port) for s in statuses)
    assert _our_processes(box.state_dir) == []
    assert box.down()  # down twice is harmless
