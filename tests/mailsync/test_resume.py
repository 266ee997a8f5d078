"""Kill -9 in the middle of a copy, run again: no duplicate, nothing missing (checked by SHA-256 over IMAP)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

_RUNNER = """
import sys
from cutover.inventory import Mailbox
from cutover.ledger import Ledger
from cutover.mailsync import sync_mailbox
from cutover.plan import load_plan
from cutover.secrets import SecretRef
plan = load_plan(sys.argv[1])
mb = Mailbox(sys.argv[2], SecretRef("file", sys.argv[3]), SecretRef("file", sys.argv[4]))
report = sync_mailbox(plan, mb, Ledger(plan.ledger))
print(report.status, report.copied, report.skipped, report.missing)
sys.exit(0 if report.verified else 1)
"""


def _plan_file(sandbox_env, tmp_path: Path) -> Path:
    """The session plan with this test's ledger and small batches (so a kill lands mid-copy)."""
    data = yaml.safe_load(sandbox_env.plan_path.read_text())
    data["ledger"] = str(tmp_path / "ledger.sqlite")
    data["copy"] = {**data.get("copy", {}), "batch_messages": 3, "mailboxes_in_parallel": 1}
    path = sandbox_env.plan_path.parent / f"plan-kill-{tmp_path.name}.yaml"  # relative paths keep resolving
    path.write_text(yaml.safe_dump(data))
    return path


def _copied_rows(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    try:
        with sqlite3.connect(ledger, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigkill_mid_copy_then_rerun_has_no_duplicate_and_no_loss(sandbox_env, make_mailbox, imap_view, tmp_path) -> None:
    mb = make_mailbox(messages=150, big=2)
    plan_path = _plan_file(sandbox_env, tmp_path)
    ledger = tmp_path / "ledger.sqlite"
    argv = [sys.executable, "-c", _RUNNER, str(plan_path), mb.address, mb.source_secret.target, mb.target_secret.target]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    try:
        # Kill each run as soon as the ledger shows it made progress of its own (new rows since it started), three
        # times: every kill lands mid-copy whatever the machine's speed, as long as one batch is not the whole copy.
        kills_at = []
        for _ in range(3):
            start_rows = _copied_rows(ledger)
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 120
            while _copied_rows(ledger) <= start_rows and proc.poll() is None:
                assert time.monotonic() < deadline, "the copy made no progress"
                time.sleep(0.005)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills_at.append(_copied_rows(ledger))
            proc.wait()
        assert kills_at and all(rows < 150 for rows in kills_at), f"no kill landed mid-copy (rows at kills: {kills_at})"

        final = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stdout + final.stderr
    finally:
        plan_path.unlink(missing_ok=True)

    source = {k: v for k, v in imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address)).items() if v}
    target = {k: v for k, v in imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address)).items() if v}
    assert target == source  # every digest with the same multiplicity: no duplicate, nothing missing
    assert sum(sum(c.values()) for c in target.values()) == 150
