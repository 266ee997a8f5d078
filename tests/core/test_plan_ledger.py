"""The plan's ledger: a path is the SQLite file, ``{url: <secret reference>}`` the PostgreSQL ledger every worker
shares; a bad URL or a server that is down is one clear line, never a traceback, never the password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cutover.errors import LedgerError, PlanError
from cutover.ledger import Ledger, open_ledger
from cutover.plan import load_plan

REPO = Path(__file__).resolve().parents[2]
REHEARSAL = REPO / "inventory" / "rehearsal" / "plan.yaml"
PASSWORD = "s3cret-Ledger-pw"


def _plan(tmp_path: Path, ledger, url: str | None = None) -> Path:
    data = yaml.safe_load(REHEARSAL.read_text())
    data["ledger"] = ledger
    (tmp_path / "mailboxes.csv").write_text((REHEARSAL.parent / "mailboxes.csv").read_text())
    data["inventory"] = "mailboxes.csv"
    if url is not None:
        secret = tmp_path / "ledger-url"
        secret.write_text(url + "\n")
        secret.chmod(0o600)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_path_is_the_sqlite_ledger_and_a_url_reference_the_postgresql_one(tmp_path) -> None:
    plain = load_plan(_plan(tmp_path, "state/l.sqlite"))
    assert plain.ledger == tmp_path / "state" / "l.sqlite" and plain.ledger_url is None
    assert type(open_ledger(plain)) is Ledger

    shared = load_plan(_plan(tmp_path, {"url": "file:ledger-url", "state_dir": "run"}))
    assert shared.ledger_url == "file:ledger-url" and shared.ledger.parent == tmp_path / "run"
    assert dict(shared.summary())["ledger"].startswith("PostgreSQL, url file:ledger-url")

    default = load_plan(_plan(tmp_path, {"url": "env:PEC_LEDGER_URL"}))
    assert default.ledger.parent == tmp_path / "state"


@pytest.mark.parametrize("ledger, words", [
    ({"url": "postgresql://pec:" + PASSWORD + "@db/ledger"}, "password pasted by mistake"),
    ({"url": "env:X", "host": "db"}, "unknown key(s) host"),
    ({"state_dir": "x"}, "a mapping needs url"),
])
def test_a_bad_ledger_form_is_refused_with_its_line_and_never_echoed(tmp_path, ledger, words) -> None:
    with pytest.raises(PlanError) as err:
        load_plan(_plan(tmp_path, ledger))
    assert words in str(err.value) and "ledger" in str(err.value) and PASSWORD not in str(err.value)


@pytest.mark.parametrize("url, words", [
    ("postgresql//pec:" + PASSWORD + "@127.0.0.1/ledger", "not a postgresql:// URL"),
    ("mysql://pec:" + PASSWORD + "@127.0.0.1/ledger", "not a postgresql:// URL"),
    ("postgresql://pec:" + PASSWORD + "@127.0.0.1:1/ledger", "cannot connect"),  # nobody listens on port 1
    ("postgresql://pec:" + PASSWORD + "@127.0.0.1:notaport/ledger", "not a valid URL"),
])
def test_a_bad_url_or_a_server_down_is_one_line_without_the_password(tmp_path, url, words) -> None:
    plan = load_plan(_plan(tmp_path, {"url": "file:ledger-url"}, url))
    with pytest.raises(LedgerError) as err:
        open_ledger(plan)
    message = str(err.value)
    assert words in message and PASSWORD not in message and "\n" not in message

    run = subprocess.run([str(Path(sys.executable).parent / "pec-cutover"), "copy", "--plan", str(plan.base_dir / "plan.yaml"),
                          "--dry-run"], capture_output=True, text=True, cwd=REPO, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode != 0 and words in output, output
    assert PASSWORD not in output and "Traceback" not in output


def test_a_wrong_password_is_named_without_being_shown(tmp_path, postgres_server) -> None:
    url = postgres_server.url("ledger").replace(postgres_server.password(), PASSWORD)
    with pytest.raises(LedgerError) as err:
        open_ledger(load_plan(_plan(tmp_path, {"url": "file:ledger-url"}, url)))
    assert "password authentication failed" in str(err.value) and PASSWORD not in str(err.value)
    assert postgres_server.password() not in str(err.value)


def test_doctor_and_the_evidence_bundle_read_a_postgresql_ledger(tmp_path, postgres_server) -> None:
    import csv

    from cutover import doctor, evidence
    from cutover.ledger import MessageRow

    url = postgres_server.create_database("evidence")
    plan = load_plan(_plan(tmp_path, {"url": "file:ledger-url"}, url))
    ledger = open_ledger(plan)
    ledger.record_done("a@x.it", "forward", [MessageRow("INBOX", 1, 7, 10, "a" * 64, "INBOX", 2, 9, "copied", False)],
                       "copied")
    ledger.add_event("a@x.it", "forward", "INBOX", "repair", "why")
    finding = doctor._ledger(plan)
    assert finding.ok and "1 messages recorded" in finding.detail and postgres_server.password() not in str(finding)

    assert evidence._export_ledger(plan, tmp_path / "bundle") == 1
    rows = list(csv.DictReader((tmp_path / "bundle" / "messages.csv").open()))
    assert [(r["address"], r["src_uid"], r["state"]) for r in rows] == [("a@x.it", "7", "copied")]
    assert "copied_at" in rows[0] and "verified_at" in rows[0]
    assert list(csv.DictReader((tmp_path / "bundle" / "events.csv").open()))[0]["kind"] == "repair"

    down = load_plan(_plan(tmp_path, {"url": "file:ledger-url"}, url.replace(f":{postgres_server.port}/", ":1/")))
    finding = doctor._ledger(down)
    assert not finding.ok and "cannot connect" in finding.detail and postgres_server.password() not in str(finding)
