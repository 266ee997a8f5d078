"""The sandbox's PostgreSQL: started and stopped with the sandbox (sandbox.postgres_port), its own cluster under the
sandbox directory, run as the postgres user on 127.0.0.1 only, with the ledger and prefect databases."""

from __future__ import annotations

from pathlib import Path

import psycopg

from cutover.sandbox._process import port_in_use, port_open


def _owner(pid: int) -> int:
    return Path(f"/proc/{pid}").stat().st_uid


def test_postgres_comes_up_and_goes_down_with_the_sandbox(sandbox_starter, tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "env").mkdir()
    env, plan, box = sandbox_starter(tmp_path / "env", 1, services=["postgres"],
                                     edit_plan=lambda text: text + f"  postgres_port: {port}\n")
    try:
        assert "postgres" in box.services
        [status] = box.status(["postgres"])
        assert status.detail == "up", status
        pg = box.postgres
        assert pg.data.parent == Path(plan.sandbox.state_dir) / "postgres" and (pg.data / "PG_VERSION").exists()
        assert _owner(pg.pid()) != 0  # PostgreSQL refuses root: the postgres user runs it
        with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
            names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            assert {"ledger", "prefect"} <= names
            assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
            version = conn.execute("SHOW server_version_num").fetchone()[0]
            assert int(version) >= 140009  # what the Prefect server needs
        with psycopg.connect(pg.url("prefect"), autocommit=True) as conn:
            assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").fetchone() == (1,)
        assert (pg.password_file.stat().st_mode & 0o077) == 0

        box.up(["postgres"])  # running: left alone (same process)
        assert box.postgres.pid() == pg.pid()
    finally:
        box.down()
    assert not port_open(port) and not port_in_use(port) and box.postgres.pid() is None
