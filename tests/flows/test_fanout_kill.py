"""A distributed prestage on two real workers, one SIGKILLed mid-copy (worker and its flow run: a machine lost).

Real parts only: the sandbox's Dovecots and PostgreSQL (the shared ledger and the Prefect server's database), a
``prefect server start`` on it, a process work pool with the copy-chunk deployment and two ``prefect worker start``
processes. The prestage flow runs as the operator would start it; the kill comes when a mailbox of a chunk is seen
half-copied in the ledger. The dead worker's chunk must be run again by the other worker and every mailbox end
with the same SHA-256 multiset per folder on the target as on the source: 0 lost, 0 duplicated.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from cutover.inventory import load_inventory
from cutover.ledger import open_ledger
from cutover.mailsync._lock import _advisory_key
from cutover.plan import load_plan
from cutover.sandbox import seed
from cutover.sandbox._process import session_members
from cutover.sandbox._distributed import DistributedDay, distributed_plan_text, write_ledger_secret

MAILBOXES = 6
MESSAGES = 40
REPO = Path(__file__).resolve().parents[2]

_PARENT = """
import json, sys
from flows.prestage import prestage
print("RESULT " + json.dumps(prestage(plan_path=sys.argv[1])), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def per_folder(box, side: str, address: str) -> dict[str, Counter]:
    client = box.admin_session(side, address)
    try:
        out: dict[str, Counter] = {}
        for flags, _d, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            client.select_folder(name, readonly=True)
            uids = client.search("ALL")
            found: Counter = Counter()
            for start in range(0, len(uids), 200):
                for data in client.fetch(uids[start:start + 200], ["BODY.PEEK[]"]).values():
                    found[hashlib.sha256(data[b"BODY[]"]).hexdigest()] += 1
            if found:
                out[name] = found
        return out
    finally:
        client.logout()


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _half_copied_holder(ledger, addresses: list[str], total: int) -> tuple[str, int] | None:
    """(address, pid of the process holding its mailbox lock) of a mailbox seen part-way through its copy."""
    for address in addresses:
        done = ledger._read("SELECT COUNT(*) FROM messages WHERE address = ? AND direction = 'forward'",
                            (address,))[0][0]
        if not 0 < done < total:
            continue
        key = _advisory_key(address, "forward")
        rows = ledger._read("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                            "classid = ?::bigint::oid AND objid = ?::bigint::oid AND objsubid = 1",
                            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF))
        if not rows:
            continue
        app = ledger._read("SELECT application_name FROM pg_stat_activity WHERE pid = ?", (rows[0][0],))
        if app and " pid " in app[0][0]:
            return address, int(app[0][0].rsplit(" pid ", 1)[1])
    return None


def test_a_worker_killed_mid_copy_its_chunk_runs_again_elsewhere_0_lost_0_duplicated(sandbox_starter, tmp_path):
    (tmp_path / "env").mkdir()
    env, plan, box = sandbox_starter(tmp_path / "env", MAILBOXES, edit_plan=lambda text: distributed_plan_text(
        text, postgres_port=free_port(), chunk_mailboxes=2, stale_after_s=10.0, pending_after_s=60.0, poll_s=0.5).replace(
        "batch_messages: 100", "batch_messages: 4"))
    day = DistributedDay(box, env.plan, tmp_path / "prefect-home", free_port())
    parent = None
    try:
        write_ledger_secret(box)
        plan = load_plan(env.plan)
        assert plan.ledger_url and plan.copy_settings.fan_out is not None
        inventory = load_inventory(plan)
        box.ensure_users(inventory.mailboxes)
        seed(plan, inventory.mailboxes, MESSAGES, big_attachments=0, sandbox=box)
        stack = day.start()
        ledger = open_ledger(plan)
        addresses = [m.address for m in inventory.mailboxes]

        parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(env.plan)], cwd=REPO, env=stack.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killed = None
        deadline = time.monotonic() + 300
        while killed is None:
            assert parent.poll() is None, f"the prestage ended before any kill: {parent.stdout.read()[-2000:]}"
            assert time.monotonic() < deadline, "no mailbox was ever seen half-copied"
            seen = _half_copied_holder(ledger, addresses, MESSAGES)
            if seen:
                address, run_pid = seen
                worker_pid = _parent_pid(run_pid)
                name = next((n for n, p in day.worker_pids.items() if p == worker_pid), None)
                if name is not None:  # the flow run process of one of our workers: a machine lost, so the worker
                    # and everything it started (its session) die at once
                    for pid in session_members(worker_pid) | {worker_pid, run_pid}:
                        os.kill(pid, signal.SIGKILL)
                    killed = (name, address)
            time.sleep(0.02)

        out, _ = parent.communicate(timeout=600)
        (tmp_path / "parent.log").write_text(out)
        assert parent.returncode == 0, out[-3000:]
        result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        survivor = next(n for n in day.workers if n != killed[0])
        assert result["verified"] == MAILBOXES, result
        assert sum(result["workers"].values()) == MAILBOXES and result["workers"].get(survivor, 0) >= 2, result

        # the dead worker's chunks: their runs crashed (marked by Prefect, or by the parent when their lease stayed
        # free), each chunk run again to completion
        runs = stack._api("POST", "/flow_runs/filter", {"flow_runs": {"name": {"like_": "prestage chunk"}}})
        states = [(r["name"], (r.get("state") or {}).get("type")) for r in runs]
        crashed = {name for name, state in states if state == "CRASHED"}
        assert crashed and crashed <= {name for name, state in states if state == "COMPLETED"}, states
        assert {name for name, state in states if state == "COMPLETED"} == {f"prestage chunk {i} of 3" for i in (1, 2, 3)}

        for address in addresses:  # 0 lost, 0 duplicated: SHA-256 multiset per folder, both sides
            assert per_folder(box, "target", address) == per_folder(box, "source", address), address
        assert ledger.message_count(killed[1], state="pending") == 0
        ledger.close()
    finally:
        if parent is not None and parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
        day.stop()
        box.down()
