"""``pec-cutover clients switch``: bad input is one line and exit 2, before Ansible runs."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cutover.cli import app

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example-production" / "plan.yaml"


def test_a_plan_without_clients_is_one_clear_line() -> None:
    result = CliRunner().invoke(app, ["clients", "switch", "--to", "target", "--dry-run", "--plan", str(EXAMPLE)])
    assert result.exit_code == 2
    assert result.output.strip() == "error: plan 'fnofi-production' has no clients section: no PEC client to switch"


def test_a_client_secret_that_is_no_reference_is_refused_with_its_line(tmp_path: Path) -> None:
    from cutover.sandbox import write_environment

    env = write_environment(tmp_path, base_port=24000, mailboxes=1, surroundings=True)
    env.plan.write_text(env.plan.read_text().replace('"file:.sandbox/secrets/clients/infocert-protocollo"', "s3cret!"))
    result = CliRunner().invoke(app, ["clients", "switch", "--to", "target", "--plan", str(env.plan)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "clients.accounts.protocollo.target.secret" in result.output and "s3cret!" not in result.output
