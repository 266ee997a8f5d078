"""Issue 16 (5) and (6) on the sandbox: the evidence bundle after a real readiness, pre-stage and GO cutover
(exported from the reports, Prefect's API and the ledger, verified, messages sampled on the target, a tampered
file detected, no secret inside); ``doctor`` on a good and a broken set-up."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from cutover import evidence, freeze
from cutover.cli import app
from cutover.doctor import diagnose
from flows.cutover_day import cutover
from flows.prestage import prestage
from flows.readiness import readiness


def test_evidence_export_verify_sample_and_tamper(day_factory, tmp_path: Path) -> None:
    day = day_factory(mailboxes=2, messages=6)
    plan_path = str(day.plan_path)
    readiness(plan_path=plan_path)
    prestage(plan_path=plan_path)
    result = cutover(plan_path=plan_path, operator="Test Ops")
    assert result["verdict"] == "GO", result
    complete = next(day.plan.reports_dir.glob("cutover-report-*.md")).read_text()  # hypercare: TTL kept low
    assert "kept at 1 s until" in complete and "dns ttl --restore" in complete

    out = tmp_path / "bundle"
    runner = CliRunner()
    exported = runner.invoke(app, ["evidence", "export", "--plan", plan_path, "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    runs = list(csv.DictReader((out / "runs" / "index.csv").open()))
    assert {r["flow"] for r in runs} == {"readiness", "prestage", "cutover"}, runs   # only this plan's runs
    cutover_run = next(r for r in runs if r["flow"] == "cutover")
    assert any(f.startswith(f"runs/cutover-{cutover_run['run id']}/") and f.endswith("cutover-report.md") for f in files)
    assert any("gate-access" in f for f in files) and any("gate-dns" in f for f in files)   # gate decisions
    assert any(f.startswith("reports/readiness-") and f.endswith(".csv") for f in files)
    # The per-mailbox tables (readiness, pre-stage): one row per member, as the UI showed them.
    for flow, table_key in (("readiness", "readiness-mailboxes"), ("prestage", "-mailboxes")):
        run = next(r for r in runs if r["flow"] == flow)
        table = next(f for f in files if f.startswith(f"runs/{flow}-{run['run id']}/") and table_key in f
                     and f.endswith(".json"))
        rows_shown = json.loads((out / table).read_text())["data"]
        assert {m.address for m in day.inventory} <= {v for row in rows_shown for v in row.values()}, (table, rows_shown)
    assert any(f.startswith(f"runs/cutover-{cutover_run['run id']}/") and "final-delta-mailboxes" in f for f in files)
    rows = list(csv.DictReader((out / "ledger" / "messages.csv").open()))
    forward = [r for r in rows if r["direction"] == "forward"]
    assert len(forward) == sum(sum(day.digests("source", m.address).values()) for m in day.inventory)
    assert all(r["sha256"] and r["tgt_uid"] and r["copied_at"] and r["verified_at"] for r in forward)
    journal = [json.loads(line) for line in (out / "dns" / "dns-journal.jsonl").read_text().splitlines()]
    assert {e["action"] for e in journal} >= {"set_ttl", "measure_ttl", "restore_due"}
    manifest = (out / evidence.MANIFEST).read_text().splitlines()
    assert len(manifest) == len(files) - 1   # every file but the manifest itself
    assert subprocess.run(["sha256sum", "--quiet", "-c", evidence.MANIFEST], cwd=out).returncode == 0  # no tool needed

    verified = runner.invoke(app, ["evidence", "verify", str(out), "--plan", plan_path, "--sample", "10"])
    assert verified.exit_code == 0, verified.output
    assert f"evidence: {len(files) - 1} files, manifest verified, 10 messages sampled on the target" in verified.output

    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in set(day.secrets):
        assert secret.encode() not in blob, "a secret is in the evidence bundle"

    report = next(out.glob("reports/cutover-report-*.md"))
    report.write_text(report.read_text().replace("GO:", "NO-GO:"))          # somebody edits history
    (out / "runs" / "note.txt").write_text("added later")
    tampered = runner.invoke(app, ["evidence", "verify", str(out)])
    assert tampered.exit_code == 1
    assert f"{report.relative_to(out).as_posix()}: SHA-256 differs" in tampered.output
    assert "runs/note.txt: not in the manifest" in tampered.output


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "pec-cutover"), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_doctor_on_a_good_and_a_broken_setup(day_factory, tmp_path: Path) -> None:
    day = day_factory(mailboxes=1, messages=2)
    repo = Path(__file__).resolve().parents[2]
    good_env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PEC_CUTOVER_HOME": str(repo)}
    good = {f.what: f for f in diagnose(day.plan_path, good_env)}
    assert all(f.ok for f in good.values()), good
    assert good["Prefect server (PREFECT_API_URL)"].detail.startswith("healthy")
    assert good["ledger"].value == str(day.plan.ledger) and good["freeze marker"].detail == "free"
    shown = _cli("doctor", "--plan", str(day.plan_path), env=good_env)
    assert shown.returncode == 0 and "this shell is set up for the day" in shown.stdout, shown.stdout + shown.stderr

    # Broken: the server is not running, the ledger is garbage, a dead run left its marker, HOME is wrong.
    day.plan.ledger.parent.mkdir(parents=True, exist_ok=True)
    day.plan.ledger.write_bytes(b"not a database")
    freeze.marker_path(day.plan).write_text(json.dumps({"kind": "cutover", "run_id": "dead-run", "started_at": "x",
                                                        "host": os.uname().nodename, "pid": 2 ** 22 + 7}))
    bad_env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", "PEC_CUTOVER_HOME": str(tmp_path)}
    bad = {f.what: f for f in diagnose(day.plan_path, bad_env, timeout=1)}
    assert not bad["Prefect server (PREFECT_API_URL)"].ok and "unreachable" in bad["Prefect server (PREFECT_API_URL)"].detail
    assert not bad["ledger"].ok and "not a readable ledger" in bad["ledger"].detail
    assert not bad["freeze marker"].ok and "STALE" in bad["freeze marker"].detail and "dead-run" in bad["freeze marker"].detail
    assert not bad["PEC_CUTOVER_HOME"].ok
    shown = _cli("doctor", "--plan", str(day.plan_path), env=bad_env)
    assert shown.returncode == 1 and "4 problem(s)" in shown.stdout and "Traceback" not in shown.stderr
    missing = _cli("doctor", "--plan", str(tmp_path / "nope.yaml"), env=bad_env)
    assert missing.returncode == 1 and "file not found" in missing.stdout and "Traceback" not in missing.stderr
