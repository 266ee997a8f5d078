"""Plan loading: the committed rehearsal plan is valid; every kind of bad input gets a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cutover.cli import app
from cutover.errors import PlanError
from cutover.plan import load_plan, parse_plan
from cutover.sandbox import write_environment

REPO = Path(__file__).resolve().parents[2]
REHEARSAL = REPO / "inventory" / "rehearsal" / "plan.yaml"


def _data() -> dict:
    return yaml.safe_load(REHEARSAL.read_text())


def _write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "mailboxes.csv").write_text((REHEARSAL.parent / "mailboxes.csv").read_text())
    return path


def test_rehearsal_plan_loads_with_paths_resolved_and_window_localised():
    plan = load_plan(REHEARSAL)
    assert plan.domain == "pec.fnofi.it"
    assert plan.window.start.tzinfo is not None
    assert plan.window.start.utcoffset().total_seconds() == 3600  # Europe/Rome in winter
    assert plan.ledger.is_absolute() and plan.ledger.parts[-3:] == (".sandbox", "state", "ledger.sqlite")
    assert plan.inventory == REHEARSAL.parent / "mailboxes.csv"
    assert plan.source.mx_set == {(10, "mx.pec.aruba.it.")}
    assert plan.copy_settings.mailboxes_in_parallel == 4


def test_missing_file():
    with pytest.raises(PlanError, match="file not found"):
        load_plan("/nonexistent/plan.yaml")


def test_invalid_yaml_names_line(tmp_path):
    path = _write(tmp_path, "name: x\ndomain: [unclosed\n")
    with pytest.raises(PlanError) as exc:
        load_plan(path)
    assert str(path) in str(exc.value) and "line 3" in str(exc.value) and "not valid YAML" in str(exc.value)


def test_top_level_not_a_mapping(tmp_path):
    with pytest.raises(PlanError, match="expected a mapping"):
        load_plan(_write(tmp_path, "- a\n- b\n"))


def test_missing_field_named_with_line(tmp_path):
    data = _data()
    del data["target"]["imap"]
    with pytest.raises(PlanError) as exc:
        load_plan(_write(tmp_path, data))
    text = str(exc.value)
    assert "target.imap: required field is missing" in text
    assert "line " in text


def test_wrong_type_points_at_its_line(tmp_path):
    data = _data()
    data["source"]["imap"]["port"] = "nine-nine-three"
    path = _write(tmp_path, data)
    lines = path.read_text().splitlines()
    port_line = next(i for i, l in enumerate(lines, 1) if "nine-nine-three" in l)
    with pytest.raises(PlanError) as exc:
        load_plan(path)
    assert f"line {port_line}: source.imap.port" in str(exc.value)


def test_unknown_field_is_refused(tmp_path):
    data = _data()
    data["dns"]["ttls"] = {"normal": 1}
    with pytest.raises(PlanError, match=r"dns.ttls: unknown field"):
        load_plan(_write(tmp_path, data))


def test_window_end_before_start(tmp_path):
    data = _data()
    data["window"] = {"start": "2026-12-01T08:00:00", "end": "2026-12-01T06:00:00"}
    with pytest.raises(PlanError, match="window: .*is not after start"):
        load_plan(_write(tmp_path, data))


def test_naive_window_read_in_plan_timezone_and_aware_kept(tmp_path):
    data = _data()
    data["timezone"] = "UTC"
    data["window"] = {"start": "2026-12-01T06:00:00", "end": "2026-12-01T08:00:00+01:00"}
    plan = load_plan(_write(tmp_path, data))
    assert plan.window.start.utcoffset().total_seconds() == 0
    assert plan.window.end.utcoffset().total_seconds() == 3600


def test_sandbox_window_is_built_from_today_and_always_contains_now(tmp_path):
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from cutover import freeze

    plan = load_plan(REHEARSAL)  # the committed rehearsal plan: today-1d … today+2d, midnight in Europe/Rome
    today = datetime.now(ZoneInfo("Europe/Rome")).date()
    assert plan.window.start.date() == today - timedelta(days=1) and plan.window.end.date() == today + timedelta(days=2)
    assert (plan.window.start.hour, plan.window.start.minute, plan.window.end.hour) == (0, 0, 0)
    assert freeze.check_window(plan).inside
    generated = load_plan(write_environment(tmp_path / "env", base_port=20000).plan)
    assert generated.window == plan.window


def test_a_window_relative_to_today_is_refused_outside_a_sandbox_plan(tmp_path):
    data = _data()
    del data["sandbox"]
    with pytest.raises(PlanError, match=r"line \d+: window.start: 'today-1d' is a window relative to today, for "
                                        "sandbox plans only"):
        load_plan(_write(tmp_path, data))


def test_a_window_that_has_ended_refuses_the_cutover(tmp_path):
    from cutover import freeze
    from cutover.errors import FreezeError

    data = _data()
    data["window"] = {"start": "2026-01-01T06:00:00", "end": "2026-01-01T10:00:00"}
    plan = load_plan(_write(tmp_path, data))
    assert not freeze.check_window(plan).inside
    with pytest.raises(FreezeError, match="refusing to start: outside the window 2026-01-01T06:00:00"):
        freeze.require_window(plan)


def test_unknown_timezone(tmp_path):
    data = _data()
    data["timezone"] = "Europe/Atlantis"
    with pytest.raises(PlanError, match="unknown timezone 'Europe/Atlantis'"):
        load_plan(_write(tmp_path, data))


def test_bad_secret_scheme_in_tsig(tmp_path):
    data = _data()
    data["dns"]["tsig"]["secret"] = "vault:abc"
    with pytest.raises(PlanError, match=r"dns.tsig.secret: unknown secret scheme 'vault'"):
        load_plan(_write(tmp_path, data))


def test_master_auth_needs_user_and_secret(tmp_path):
    data = _data()
    data["target"]["auth"] = {"mode": "master"}
    with pytest.raises(PlanError, match="mode: master needs master_user and master_secret"):
        load_plan(_write(tmp_path, data))


def test_webmail_must_be_https(tmp_path):
    data = _data()
    data["target"]["webmail"][0]["url"] = "http://127.0.0.1/"
    with pytest.raises(PlanError, match="must start with https://"):
        load_plan(_write(tmp_path, data))


def test_cutover_ttl_above_normal(tmp_path):
    data = _data()
    data["dns"]["ttl"] = {"normal": 60, "cutover": 300}
    with pytest.raises(PlanError, match="cutover TTL must not be higher"):
        load_plan(_write(tmp_path, data))


def test_several_problems_reported_together(tmp_path):
    data = _data()
    del data["domain"]
    data["source"]["imap"]["port"] = 0
    with pytest.raises(PlanError) as exc:
        load_plan(_write(tmp_path, data))
    assert len(exc.value.problems) == 2


def test_parse_plan_paths_relative_to_file(tmp_path):
    text = REHEARSAL.read_text()
    plan = parse_plan(text, tmp_path / "sub" / "plan.yaml")
    assert plan.inventory == (tmp_path / "sub" / "mailboxes.csv").resolve()


def test_cli_plan_check_ok_and_error_without_traceback(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["plan", "check", str(REHEARSAL)])
    assert ok.exit_code == 0, ok.output
    assert "plan OK" in ok.output and "pec.fnofi.it" in ok.output
    data = _data()
    data["source"]["imap"]["port"] = 70000
    bad = runner.invoke(app, ["plan", "check", str(_write(tmp_path, data))])
    assert bad.exit_code == 2
    assert "source.imap.port" in bad.output and "Traceback" not in bad.output
