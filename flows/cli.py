"""``pec-cutover run|gate|history|serve``: the flows from the command line (plug-in; see cutover/cli)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from cutover.cli._common import DEFAULT_PLAN, handle_errors
from cutover.errors import CutoverError, OperatorError, SecretError
from cutover.inventory import load_inventory
from cutover.operators import find, identify
from cutover.plan import load_plan
from cutover.rollback_deadline import require_rollback_allowed
from cutover.prefect_server import client_environment


def register(app: typer.Typer) -> None:
    """Add the flow commands to the main CLI."""
    run_app = typer.Typer(help="Run a flow now (recorded in Prefect's run history).", no_args_is_help=True)
    gate_app = typer.Typer(help="Decide at a paused gate.", no_args_is_help=True)
    app.add_typer(run_app, name="run")
    app.add_typer(gate_app, name="gate")

    plan_opt = typer.Option(DEFAULT_PLAN, "--plan", "-p", help="plan YAML")
    code_opt = typer.Option("", "--code", envvar="PEC_CUTOVER_OPERATOR_CODE",
                            help="your one-time code (authenticator app), when the plan names operators")

    @run_app.command("readiness")
    def run_readiness(plan: Path = plan_opt) -> None:
        """Log in to every mailbox on both providers; table + CSV of who must act."""
        _client(plan)
        from flows.readiness import readiness
        _run(plan, lambda: readiness(plan_path=str(plan)))

    @run_app.command("prestage")
    def run_prestage(plan: Path = plan_opt, mailbox: Optional[list[str]] = typer.Option(None, "--mailbox", "-m")) -> None:
        """Bulk copy (incremental) of all or the named mailboxes."""
        _client(plan)
        from flows.prestage import prestage
        _run(plan, lambda: prestage(plan_path=str(plan), mailboxes=mailbox or None))

    @run_app.command("cutover")
    def run_cutover(plan: Path = plan_opt,
                    override_window: Optional[str] = typer.Option(None, help="REASON to start outside the window"),
                    operator: str = typer.Option("ops", help="who runs it")) -> None:
        """The cutover day: freeze, DNS switch, gates, final delta, accessibility, complete or roll back."""
        _client(plan)
        from flows.cutover_day import cutover
        _run(plan, lambda: cutover(plan_path=str(plan), override_window=override_window, operator=operator))

    @run_app.command("rollback")
    def run_rollback(plan: Path = plan_opt, reason: str = typer.Option(..., help="why (goes into the report)"),
                     operator: str = typer.Option("ops", help="who rolls back (one of the plan's operators)"),
                     code: str = code_opt,
                     override: Optional[str] = typer.Option(
                         None, metavar="REASON", help="roll back after the rollback deadline (plan rollback_until, "
                         "else the MX switch + 7 days) anyway, e.g. after the source confirmed the domain is active")) -> None:
        """MX back to the source, DNS verified, mail that reached the target copied back."""
        with handle_errors():
            loaded = load_plan(plan)
            identify(loaded, operator, code)  # refused here, in one line, before any run starts
            require_rollback_allowed(loaded, override_reason=override)
        _client(plan)
        from flows.rollback import rollback
        _run(plan, lambda: rollback(plan_path=str(plan), reason=reason, operator=operator, operator_code=code,
                                    override=override))

    @gate_app.command("decide")
    def gate_decide(run_id: str, rollback: bool = typer.Option(False, "--rollback"), cont: bool = typer.Option(False, "--continue"),
                    retry: bool = typer.Option(False, "--retry"), operator: str = typer.Option(..., help="your name"),
                    reason: str = typer.Option(..., help="why"), code: str = code_opt, plan: Path = plan_opt) -> None:
        """Resume a cutover paused at a gate: --rollback, --continue or --retry (the checks)."""
        _client(plan)  # before Prefect is imported: it reads its settings (the auth string) at import
        from prefect.exceptions import ObjectNotFound
        from pydantic import ValidationError

        chosen = [name for name, on in (("rollback", rollback), ("continue", cont), ("retry", retry)) if on]
        if len(chosen) != 1:
            Console(stderr=True).print("[red]error:[/red] give exactly one of --rollback, --continue, --retry")
            raise typer.Exit(2)
        from flows.history import decide_gate
        err = Console(stderr=True, soft_wrap=True)
        try:
            outcome = decide_gate(run_id, chosen[0], operator, reason, code,
                                  before_sending=lambda: _check_operator(plan, operator, code))
        except CutoverError as exc:  # an unknown operator or a wrong code: nothing was sent
            err.print(f"[red]error:[/red] decision not sent: {exc}")
            raise typer.Exit(2) from None
        except ValidationError as exc:  # the form's rules, checked before anything is sent
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            err.print(f"[red]error:[/red] decision not sent: {fields}")
            raise typer.Exit(2) from None
        except ValueError as exc:
            err.print(f"[red]error:[/red] cannot resume {run_id}: {exc}")
            raise typer.Exit(2) from None
        except ObjectNotFound:
            err.print(f"[red]error:[/red] no run with id {run_id} (see `pec-cutover history`)")
            raise typer.Exit(2) from None
        except Exception as exc:  # the API refused: not paused, input rejected by the server
            err.print(f"[red]error:[/red] Prefect refused to resume {run_id}: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else 'is it paused at a gate?'}")
            raise typer.Exit(2) from None
        if outcome.startswith("refused"):
            after = "it stopped without acting" if "stale" in outcome else "it is paused again"
            err.print(f"[red]error:[/red] run {run_id} {outcome}; {after}")
            raise typer.Exit(2)
        Console().print(f"run {run_id} resumed with: {chosen[0]} ({operator}: {reason}): {outcome}")

    @app.command("history")
    def history(limit: int = typer.Option(20, help="how many runs"), plan: Path = plan_opt,
                as_json: bool = typer.Option(False, "--json", help="one JSON document, for scripts")) -> None:
        """Recent runs with state, duration and gate decisions (from Prefect's API). Run ids are never cut;
        `gate decide` takes any unique prefix of one."""
        _client(plan)
        from flows.history import recent_runs
        runs = recent_runs(limit)
        if as_json:
            print(json.dumps([dataclasses.asdict(r) for r in runs], indent=2, ensure_ascii=False))
            return
        console = Console()
        if console.width < 120:
            # Narrow or piped: one block per run, every field whole (a table would fold the ids).
            for r in runs:
                console.print(f"[bold]{r.id}[/bold]  {r.flow}  {r.state}", soft_wrap=True)
                console.print(f"  {r.name}", soft_wrap=True, markup=False)
                console.print(f"  started {r.started or '-'}" +
                              (f", {r.seconds:.1f} s" if r.seconds is not None else ""), soft_wrap=True)
                for gate in r.gates:
                    console.print(f"  gate: {gate}", soft_wrap=True, markup=False)
            return
        table = Table(title="pec-cutover runs")
        table.add_column("run id", no_wrap=True, min_width=36)
        for col in ("started", "flow", "state", "seconds", "gates"):
            table.add_column(col)
        for r in runs:
            table.add_row(r.id, r.started, r.flow, r.state, f"{r.seconds:.1f}" if r.seconds is not None else "",
                          "\n".join(r.gates))
        console.print(table)

    @app.command("schedule")
    def schedule(plan: Path = plan_opt) -> None:
        """Schedule the cutover deployment once, at the plan's window start (after `prefect deploy --all`)."""
        _client(plan)
        from flows.deployments import schedule_cutover
        with handle_errors():
            load_inventory(load_plan(plan))
            run = schedule_cutover(str(plan))
            window = load_plan(plan).window
            Console().print(f"cutover scheduled at {window.start.isoformat()} (window ends {window.end.isoformat()}): "
                            f"run {run}")

    @app.command("serve")
    def serve(plan: Path = plan_opt) -> None:
        """Serve the four flows as deployments (needs PREFECT_API_URL of a running `prefect server start`)."""
        _client(plan)
        from flows.deployments import serve_all
        with handle_errors():
            serve_all(str(plan))


def _client(plan: Path) -> None:
    """Before Prefect is imported: the plan's server auth string for this process's Prefect client."""
    if not plan.exists():
        return  # the command reports the missing plan itself
    with handle_errors():
        os.environ.update(client_environment(load_plan(plan), base={}))


def _check_operator(plan: Path, operator: str, code: str) -> None:
    """Refuse an unknown operator before anything is sent; check the code too where this shell can read the
    operator's secret (else the flow checks it and pauses again on a wrong code)."""
    loaded = load_plan(plan)
    if not loaded.operators:
        return
    find(loaded, operator)
    try:
        identify(loaded, operator, code)
    except SecretError:
        if not code.strip().isdigit():
            raise OperatorError(f"operator {operator}: give your one-time code with --code") from None


def _run(plan: Path, call) -> None:
    console = Console()
    with handle_errors(console):
        # Bad input gets one clear line here, before Prefect starts and records a failed run.
        load_inventory(load_plan(plan))
        try:
            result = call()
        except CutoverError:
            raise
        except Exception as exc:  # a failed flow run: its report is in the run history
            console.print(f"[red]run failed:[/red] {type(exc).__name__}: {exc}")
            raise typer.Exit(1) from None
    console.print(result)
