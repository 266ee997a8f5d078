"""Readiness over an environment of its own (a target user is deleted): mailboxes broken on purpose are found,
classified, and listed in a CSV a person can act on, without a password in sight."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from checks.readiness import CSV_COLUMNS, STATUSES, readiness
from cutover.sandbox import seed

READY, WRONG_SOURCE, MISSING_TARGET, TINY_QUOTA, WRONG_TARGET = 0, 2, 3, 4, 5


@pytest.fixture(scope="module")
def broken(own_env):
    """Seed every source mailbox, then break four of them the way members and providers do."""
    box, boxes = own_env.sandbox, list(own_env.inventory)
    report = seed(own_env.plan, boxes, 6, big_attachments=0, sandbox=box)
    used = report.get(boxes[TINY_QUOTA].address).bytes
    box.set_password("source", boxes[WRONG_SOURCE].address, "changed-by-the-member")
    box.remove_user("target", boxes[MISSING_TARGET].address)
    box.set_quota("target", boxes[TINY_QUOTA].address, used // 4)
    box.set_password("target", boxes[WRONG_TARGET].address, "changed-on-infocert")
    yield {i: boxes[i].address for i in range(len(boxes))}
    box.set_quota("target", boxes[TINY_QUOTA].address, None)
    box.ensure_users(boxes)


@pytest.fixture(scope="module")
def plain(own_env, broken):
    """One readiness run with the plan as written, and its progress calls."""
    progress: list[tuple[int, int]] = []
    report = readiness(own_env.plan, own_env.inventory, on_progress=lambda d, t, _m: progress.append((d, t)))
    return report, progress


def statuses(report) -> dict[str, tuple[str, str]]:
    return {m.address: (m.status, m.side) for m in report.mailboxes}


def test_finds_each_mailbox_broken_on_purpose(broken, plain) -> None:
    report, progress = plain
    found = statuses(report)
    assert found[broken[READY]] == ("ready", "") and found[broken[1]] == ("ready", "")
    assert found[broken[WRONG_SOURCE]] == ("bad-credentials", "source")
    # Without an admin account the target cannot tell "missing" from "wrong password": said plainly.
    assert found[broken[MISSING_TARGET]] == ("bad-credentials", "target")
    assert "or the mailbox does not exist on infocert" in report.mailboxes[MISSING_TARGET].detail
    assert found[broken[TINY_QUOTA]] == ("over-quota", "target")
    assert found[broken[WRONG_TARGET]] == ("bad-credentials", "target")
    assert sorted(progress) == [(i, 6) for i in range(1, 7)]
    assert report.summary() == {"ready": 2, "bad-credentials": 3, "target-missing": 0, "over-quota": 1,
                                "unreachable": 0, "tls-failure": 0, "no-secret": 0, "throttled": 0, "total": 6}
    assert not report.ok
    source = report.mailboxes[WRONG_SOURCE]
    assert "2FA" in source.action and "aruba" in source.action
    quota = report.mailboxes[TINY_QUOTA]
    assert quota.source.used_kib > quota.target.limit_kib
    assert "ask infocert for at least" in quota.action


def test_an_admin_account_tells_a_missing_mailbox_from_a_wrong_password(own_env, broken, tools) -> None:
    plan = tools.with_target_auth(own_env.plan, **tools.admin_auth(own_env.sandbox))
    assert plan.target.auth.mode == "password"  # members still log in with their own passwords
    found = statuses(readiness(plan, own_env.inventory))
    assert found[broken[MISSING_TARGET]] == ("target-missing", "target")
    assert found[broken[WRONG_TARGET]] == ("bad-credentials", "target")
    assert found[broken[READY]] == ("ready", "")


def test_master_mode_on_the_target(own_env, broken, tools) -> None:
    plan = tools.with_target_auth(own_env.plan, mode="master", **tools.admin_auth(own_env.sandbox))
    found = statuses(readiness(plan, own_env.inventory))
    assert found[broken[MISSING_TARGET]] == ("target-missing", "target")
    assert found[broken[WRONG_TARGET]] == ("ready", "")  # the member's target password is not used

    wrong = tools.with_target_auth(plan, master_secret="env:PEC_TEST_NO_SUCH_VARIABLE_SET")
    import os
    os.environ["PEC_TEST_NO_SUCH_VARIABLE_SET"] = "not-the-admin-password"
    try:
        report = readiness(wrong, own_env.inventory)
    finally:
        del os.environ["PEC_TEST_NO_SUCH_VARIABLE_SET"]
    targets = [m for m in report.mailboxes if m.side == "target"]
    assert targets and all(m.status == "bad-credentials" and "master" in m.action for m in targets)


def test_csv_and_markdown_are_actionable_and_hold_no_secret(own_env, broken, plain, tools, tmp_path: Path) -> None:
    report, _ = plain
    path = report.write_csv(tmp_path / "out" / "readiness.csv")
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["address"] for r in rows] == [m.address for m in own_env.inventory]
    by = {r["address"]: r for r in rows}
    assert by[broken[WRONG_SOURCE]]["status"] == "bad-credentials" and by[broken[WRONG_SOURCE]]["side"] == "source"
    assert by[broken[TINY_QUOTA]]["target_limit_mb"] and by[broken[TINY_QUOTA]]["source_used_mb"]
    assert all(r["action"] for r in rows)
    markdown = report.markdown()
    assert "2/6 mailboxes ready" in markdown and broken[WRONG_SOURCE] in markdown and broken[READY] not in markdown
    everything = path.read_text() + markdown + repr(report) + repr(report.results())
    secrets = tools.secret_values(own_env.plan)
    assert len(secrets) >= 12
    assert not [s for s in secrets if s in everything]


def test_source_server_down_is_unreachable(own_env, broken, tools) -> None:
    try:
        own_env.sandbox.stop_service("aruba")
        report = readiness(own_env.plan, own_env.inventory)
    finally:
        tools.start_service(own_env.sandbox, "aruba")
    assert {m.status for m in report.mailboxes} == {"unreachable"}
    assert all(m.side == "source" and "refused" in m.detail for m in report.mailboxes)
    assert "reachable" in report.mailboxes[0].action


def test_untrusted_target_certificate_is_a_tls_failure(own_env, broken) -> None:
    plan = own_env.plan
    plan = plan.model_copy(update={"target": plan.target.model_copy(update={"ca_bundle": None})})
    report = readiness(plan, own_env.inventory)
    assert report.summary()["tls-failure"] == 5  # the sixth fails on the source first (wrong password)
    assert statuses(report)[broken[WRONG_SOURCE]] == ("bad-credentials", "source")


def test_cli_prints_a_table_writes_the_csv_and_fails(own_env, broken, tmp_path: Path) -> None:
    out = tmp_path / "members-to-contact.csv"
    cli = Path(sys.executable).with_name("pec-cutover")
    run = subprocess.run([str(cli), "check", "readiness", "--plan", str(own_env.environment.plan), "--csv", str(out)],
                         capture_output=True, text=True, timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 1, run.stderr
    assert "bad-credentials" in run.stdout and "over-quota" in run.stdout and "4 mailbox(es) not ready" in run.stdout
    assert out.exists() and len(out.read_text().splitlines()) == 7
    assert {s for s in STATUSES} >= {r["status"] for r in csv.DictReader(out.open())}


def test_missing_secret_file_is_the_operators_action_not_the_members(own_env, broken) -> None:
    """A secret file the operator forgot is no reason to tell a member to switch 2FA off, even with servers down."""
    mailbox = own_env.inventory.mailboxes[-1]
    secret_file = Path(mailbox.source_secret.target)
    kept = secret_file.read_bytes()
    secret_file.unlink()
    try:
        own_env.sandbox.stop_service("aruba")
        report = readiness(own_env.plan, own_env.inventory)
    finally:
        secret_file.write_bytes(kept)
        secret_file.chmod(0o600)
        own_env.sandbox.start_service("aruba")
    row = next(m for m in report.mailboxes if m.address == mailbox.address)
    assert (row.status, row.side) == ("no-secret", "source")
    assert "operator" in row.action and "2FA" not in row.action
