"""``pec-cutover server|prefect|operator``: the day's Prefect server, locked, and the clients that talk to it."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from cutover.cli._common import DEFAULT_PLAN, handle_errors
from cutover.errors import SandboxError, SecretError
from cutover.operators import new_secret
from cutover.plan import load_plan
from cutover.prefect_server import BIN, client_environment, server_environment

app = typer.Typer(help="The day's long-running Prefect server, locked by basic auth.", no_args_is_help=True)
operator_app = typer.Typer(help="The plan's named operators (who may decide at a gate or roll back).",
                           no_args_is_help=True)
plan_opt = typer.Option(DEFAULT_PLAN, "--plan", "-p", help="plan YAML")


@app.command("start")
def start(plan: Path = plan_opt, host: str = typer.Option(None, help="address to bind (default: the plan's, 127.0.0.1)"),
          port: int = typer.Option(None, help="port (default: the plan's, 4200)"),
          no_auth: bool = typer.Option(False, "--no-auth", help="allow an unlocked server, on a loopback address only")) -> None:
    """`prefect server start` with basic auth (the plan's prefect.auth) and CSRF protection on; stays in the foreground."""
    with handle_errors():
        argv, env = server_environment(load_plan(plan), host=host, port=port, allow_no_auth=no_auth)
        Console(stderr=True).print(f"starting the Prefect server on {argv[argv.index('--host') + 1]}:"
                                   f"{argv[argv.index('--port') + 1]} (auth {'on' if 'PREFECT_SERVER_API_AUTH_STRING' in env else 'OFF'}, CSRF on)")
    os.execve(argv[0], argv, env)


@app.command("secret")
def secret(path: Path = typer.Argument(..., help="file to create (mode 600)"),
           user: str = typer.Option("pec-cutover", help="the basic-auth user name")) -> None:
    """Create a basic-auth string 'user:password' in a new mode-600 file, for the plan's prefect.auth: file:PATH."""
    with handle_errors():
        _write_new(path, f"{user}:{new_secret()}")
    Console().print(f"wrote {path} (mode 600); in the plan: prefect: {{auth: \"file:{path}\"}}")


@operator_app.command("new")
def operator_new(name: str = typer.Option(..., help="the operator's full name, as the plan will list it"),
                 out: Path = typer.Option(..., help="file for the TOTP secret (created, mode 600)")) -> None:
    """Create an operator's TOTP secret (base32, for their authenticator app) in a new mode-600 file."""
    with handle_errors():
        _write_new(out, new_secret())
    Console().print(f"wrote {out} (mode 600): the operator imports it into an authenticator app (TOTP, 30 s, "
                    f"6 digits). In the plan:\noperators:\n  - {{name: \"{name}\", totp_secret: \"file:{out}\"}}")


def prefect(ctx: typer.Context, plan: Path = plan_opt) -> None:
    """Run `prefect ARGS...` with the plan's auth string in its environment (workers, deploy, deployment run)."""
    with handle_errors():
        env = client_environment(load_plan(plan))
    argv = [str(BIN / "prefect"), *ctx.args]
    os.execve(argv[0], argv, env)


def _write_new(path: Path, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SecretError(f"{path} exists already: never overwritten (remove it first if it must change)") from None
    except OSError as exc:
        raise SandboxError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
