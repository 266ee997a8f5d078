"""The long-running Prefect server of the day, locked: what ``pec-cutover server start`` and every client run with.

The server gets Prefect's basic authentication (``PREFECT_SERVER_API_AUTH_STRING``) and CSRF protection; each
client (the CLI, ``prefect worker start``, ``pec-cutover serve``) gets the same string as
``PREFECT_API_AUTH_STRING``. The string is a secret reference in the plan (``prefect.auth``), resolved here and
only ever placed in a child process's environment, never on a command line, in a log or in Prefect's database.
Nothing here imports Prefect.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from cutover.errors import ServerLockError
from cutover.plan import Plan

BIN = Path(sys.executable).parent


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_string(plan: Plan) -> str | None:
    """The plan's basic-auth string ``user:password`` (resolved), or None when the plan sets none."""
    if plan.prefect.auth is None:
        return None
    value = plan.secret(plan.prefect.auth).reveal()
    if ":" not in value or value.startswith(":") or len(value) < 12:
        raise ServerLockError(f"prefect.auth ({plan.prefect.auth}) must hold 'user:password' with a long password "
                              "(at least 12 characters in all); generate one with `pec-cutover server secret FILE`")
    return value


def server_environment(plan: Plan, *, host: str | None = None, port: int | None = None,
                       allow_no_auth: bool = False) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of ``prefect server start`` for the day. Refuses to start unlocked, and refuses a
    non-loopback address without auth whatever ``allow_no_auth`` says."""
    host = host or plan.prefect.host
    port = port or plan.prefect.port
    auth = auth_string(plan)
    if auth is None and not is_loopback(host):
        raise ServerLockError(f"refusing to listen on {host} without authentication: set prefect.auth in the plan "
                              "(a secret reference), or bind to 127.0.0.1 and reach it through a TLS reverse proxy")
    if auth is None and not allow_no_auth:
        raise ServerLockError("the plan sets no prefect.auth: anyone who reaches the server could start a cutover or "
                              "answer a gate. Set prefect.auth (a secret reference to 'user:password'), or pass "
                              "--no-auth for a server on 127.0.0.1 that only you can reach")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_API_AUTH")}
    env.update({"PREFECT_SERVER_API_HOST": host, "PREFECT_SERVER_API_PORT": str(port),
                "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
    if auth is not None:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth
        env["PREFECT_API_AUTH_STRING"] = auth  # the server's own services talk to its API too
    argv = [str(BIN / "prefect"), "server", "start", "--host", host, "--port", str(port)]
    return argv, env


def client_environment(plan: Plan, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus the plan's auth string for a Prefect client."""
    env = dict(os.environ if base is None else base)
    auth = auth_string(plan)
    if auth is not None:
        env["PREFECT_API_AUTH_STRING"] = auth
    return env
